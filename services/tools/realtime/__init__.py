"""OpenAI Realtime bridge: assistant sessions that run speech to speech upstream."""
