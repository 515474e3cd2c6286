import pytest

from shared.provider_config import ProviderSettings

ALL_KEYS = {"OPENAI_API_KEY": "sk-secret-1", "ASSEMBLYAI_API_KEY": "aai-secret-2",
            "UNREAL_SPEECH_API_KEY": "us-secret-3"}


def test_no_keys_means_local_engines_only():
    settings = ProviderSettings.load({})
    assert [settings.chain(c) for c in ("stt", "translate", "tts")] == [("local",)] * 3


def test_every_key_gives_the_budget_chain_with_openai_then_local():
    settings = ProviderSettings.load(ALL_KEYS)
    assert settings.chain("stt") == ("assemblyai", "openai:gpt-4o-mini-transcribe", "local")
    assert settings.chain("translate") == ("openai:gpt-4.1-nano", "openai:gpt-4.1-mini", "local")
    assert settings.chain("tts") == ("unrealspeech", "openai:gpt-4o-mini-tts", "local")


def test_openai_key_alone_skips_the_budget_vendors():
    settings = ProviderSettings.load({"OPENAI_API_KEY": "sk-x"})
    assert settings.chain("stt") == ("openai:gpt-4o-mini-transcribe", "local")
    assert settings.chain("tts") == ("openai:gpt-4o-mini-tts", "local")


def test_sdk_key_name_for_unreal_speech_is_accepted():
    assert ProviderSettings.load({"UNREALSPEECH_API_KEY": "k"}).chain("tts")[0] == "unrealspeech"


def test_keys_never_show_in_repr():
    text = repr(ProviderSettings.load(ALL_KEYS))
    assert not any(secret in text for secret in ALL_KEYS.values())


def test_file_then_environment(tmp_path):
    config = tmp_path / "parley.toml"
    config.write_text('[providers]\ntranslate_chain = ["local"]\ntimeout_s = 5\n'
                      'openai_base_url = "http://file/v1"\n')
    settings = ProviderSettings.load({"PARLEY_CONFIG": str(config), "OPENAI_BASE_URL": "http://env/v1"})
    assert settings.translate_chain == ("local",) and settings.timeout_s == 5.0
    assert settings.openai_base_url == "http://env/v1"


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown provider"):
        ProviderSettings.load({"PARLEY_TTS_CHAIN": "elevenlabs,local"})
    config = tmp_path / "bad.toml"
    config.write_text("[providers]\nspeed = 3\n")
    with pytest.raises(ValueError, match="unknown provider settings"):
        ProviderSettings.load({"PARLEY_CONFIG": str(config)})
    with pytest.raises(ValueError):
        ProviderSettings.load({"PARLEY_PROVIDER_TIMEOUT_S": "0"})
    with pytest.raises(ValueError, match="ASSEMBLYAI_API_KEY is not set"):
        ProviderSettings.load({"PARLEY_STT_CHAIN": "assemblyai,local"})
