// Parley SDK for browsers: one ES module, no dependencies, no build step.
// Speaks client protocol v1 (PROTOCOL.md) on /v1/stream: starts a session and resumes it
// after a dropped connection, streams the microphone, plays the spoken output and runs
// the functions an assistant calls. Served by the edge at /parley.js.
//
//   import { ParleyClient } from "/parley.js";
//   const client = new ParleyClient({ mode: "assistant", language: "en" });
//   client.on("response.text", (ev) => console.log(ev.text));
//   client.registerFunction("get_time", () => new Date().toISOString(), {type: "object", properties: {}});
//   await client.connect();
//   await client.startMicrophone();

const ACK_EVERY_MS = 1000;
const FRAME_MS = 40; // microphone frames: well under the protocol's 1 s limit
const PLAY_LEAD_S = 0.08; // start delay after an underrun, to absorb network jitter
const BACKOFF_MS = { base: 500, max: 10000 };
const MAX_ATTEMPTS = 15; // reconnects in a row without a session.started (~2 min)
const END_GRACE_MS = 2000; // how long end() waits for the edge to close the socket
const REMEMBERED_CALLS = 1000; // call ids kept to recognise a replayed tool.call
// Close codes after which another attempt cannot help: protocol violation, bad
// credentials, session gone (resume refused), no session.start in time.
const GIVE_UP_CODES = new Set([4400, 4401, 4404, 4408]);
const DRAINING = 4503;

/** Delay before reconnect attempt `n` (0-based): exponential, with jitter so clients spread. */
export function backoffMs(n) {
  const ceiling = Math.min(BACKOFF_MS.max, BACKOFF_MS.base * 2 ** n);
  return ceiling / 2 + (Math.random() * ceiling) / 2;
}

/** base64 PCM16LE → Int16Array (a stray odd byte is dropped). */
export function decodePcm16(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length & ~1);
  for (let i = 0; i < bytes.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Int16Array(bytes.buffer); // every browser platform is little-endian
}

/** The WebSocket URL: `url` (http(s) or ws(s), relative to this module) plus the token. */
function streamUrl(url, token) {
  const u = new URL(url ?? "v1/stream", import.meta.url);
  u.protocol = { "http:": "ws:", "https:": "wss:" }[u.protocol] ?? u.protocol;
  if (token) u.searchParams.set("token", token); // browsers cannot set WebSocket headers
  return u.href;
}

/** Plays PCM chunks back to back through Web Audio; each starts where the previous ends. */
class Player {
  constructor(ctx, stats) {
    this.ctx = ctx;
    this.stats = stats;
    this.next = 0; // context time at which the next chunk starts
    this.sources = new Map(); // AudioBufferSourceNode -> {responseId, end}
  }

  play(pcm, rate, responseId) {
    if (pcm.length === 0) return;
    const buf = this.ctx.createBuffer(1, pcm.length, rate); // the context resamples
    const out = buf.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) out[i] = pcm[i] / 0x8000;
    const src = this.ctx.createBufferSource();
    src.buffer = buf;
    src.connect(this.ctx.destination);
    this.next = Math.max(this.next, this.ctx.currentTime + PLAY_LEAD_S);
    src.start(this.next);
    this.next += buf.duration;
    this.sources.set(src, { responseId, end: this.next });
    this.stats.scheduledSamples += pcm.length;
    src.onended = () => {
      this.sources.delete(src);
      this.stats.playedSamples += pcm.length;
    };
  }

  /** Silences at once everything queued (or only the audio of `responseId`). */
  stop(responseId) {
    for (const [src, meta] of this.sources) {
      if (responseId !== undefined && meta.responseId !== responseId) continue;
      src.onended = null;
      src.stop();
      this.sources.delete(src);
    }
    this.next = Math.max(0, ...[...this.sources.values()].map((m) => m.end));
  }
}

/**
 * A Parley session that survives dropped connections.
 *
 * Events: `client.on(type, handler)` for every server event type (`transcript.final`,
 * `response.text`, `tool.call`, …), `"*"` for all of them, and these from the client
 * itself: `state` ({state: "connecting"|"open"|"reconnecting"|"closed", code}),
 * `session.lost` (resume refused: the session is gone) and `tool.executed`
 * ({call_id, name, arguments, output | error}). Durable events reach handlers once
 * each, in `seq` order, across resumes.
 */
export class ParleyClient {
  /**
   * @param {object} options
   * @param {string} [options.url] WebSocket or http(s) URL of /v1/stream; default: the edge serving this module
   * @param {string} [options.token] API key or JWT, sent as ?token=
   * @param {"translate"|"assistant"} [options.mode]
   * @param {string} [options.language] what the person speaks and wants to hear
   * @param {string} [options.targetLanguage] translate mode without a room
   * @param {string} [options.room]
   * @param {string} [options.instructions] assistant mode
   * @param {string} [options.voice]
   * @param {number} [options.inputSampleRate] microphone PCM rate sent to the edge
   * @param {number} [options.outputSampleRate] rate of audio.delta
   * @param {AudioContext} [options.audioContext] the caller's (create it in a click, so it may
   *   play); else the client makes one on first need and closes it when the session closes
   * @param {boolean} [options.playAudio] play audio.delta (default true)
   * @param {number} [options.maxAttempts] reconnects in a row before giving up
   */
  constructor(options = {}) {
    this.options = { mode: "translate", language: "en", inputSampleRate: 16000,
      outputSampleRate: 16000, playAudio: true, maxAttempts: MAX_ATTEMPTS, ...options };
    this.state = "closed";
    this.sessionId = null;
    this.lastSeq = 0; // highest durable seq received
    this.ackedSeq = 0;
    this.stats = { sentSamples: 0, receivedSamples: 0, scheduledSamples: 0, playedSamples: 0 };
    this._url = streamUrl(this.options.url, this.options.token);
    this._handlers = new Map(); // type -> Set of handlers
    this._tools = new Map(); // name -> {fn, spec}
    this._calls = new Map(); // call_id -> tool.result message, or null while running
    this._cancelled = new Set(); // response ids whose audio must not play
    this._responseId = null; // the reply in progress
    this._outbox = []; // messages written while not open; sent after session.started
    this._attempt = 0;
  }

  /** Subscribes `handler` to events of `type` ("*": all). Returns the unsubscribe function. */
  on(type, handler) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(handler);
    return () => this._handlers.get(type).delete(handler);
  }

  /** Opens the session; resolves with session.started, rejects if it closes first. */
  connect() {
    if (this._connecting) return this._connecting;
    // A client that closed starts a new session: nothing of the old one carries over.
    Object.assign(this, { sessionId: null, lastSeq: 0, ackedSeq: 0, _ended: false, _fatal: null,
      _startSent: false, _attempt: 0 });
    this._connecting = new Promise((resolve, reject) => (this._settle = { resolve, reject }));
    this._ackTimer = setInterval(() => this._ack(), ACK_EVERY_MS);
    this._open();
    return this._connecting;
  }

  /** Lets the assistant call `fn(arguments)` (sync or async; its return value is the output). */
  registerFunction(name, fn, schema = { type: "object", properties: {} }, { description = "", timeoutMs } = {}) {
    const spec = { name, description, parameters: schema };
    if (timeoutMs) spec.timeout_ms = timeoutMs;
    this._tools.set(name, { fn, spec });
    if (this._startSent) this._send({ type: "tool.register", ...spec }); // else in session.start
  }

  unregisterFunction(name) {
    if (this._tools.delete(name) && this._startSent) this._send({ type: "tool.unregister", name });
  }

  /** Ends the current utterance now (push-to-talk). */
  commit() {
    this._send({ type: "input_audio.commit" });
  }

  /** Barge-in: the edge stops the reply, and its audio stops here at once. */
  cancelResponse() {
    if (this._responseId) this._cancelled.add(this._responseId);
    this._player?.stop();
    this._send({ type: "response.cancel" });
  }

  /** Sends PCM16LE at inputSampleRate (≤ 1 s). Dropped while disconnected: live speech late is useless. */
  sendAudio(buffer) {
    if (!this._writable) return;
    this._ws.send(buffer);
    this.stats.sentSamples += buffer.byteLength / 2;
  }

  /** Captures the microphone (echo-cancelled) and streams it. */
  async startMicrophone() {
    if (this._mic) return;
    const mine = (this._mic = { release: () => {} });
    try {
      await this._openMicrophone(mine);
    } catch (err) {
      if (this._mic === mine) this._mic = null;
      throw err;
    }
    if (this._mic !== mine) mine.release(); // stopped while starting
  }

  async _openMicrophone(mine) {
    const ctx = this._audioContext();
    if (!navigator.mediaDevices?.getUserMedia || !ctx.audioWorklet) {
      throw new Error("the microphone needs a secure page (https, or http on localhost)");
    }
    this._worklet ??= ctx.audioWorklet.addModule(new URL("capture-worklet.js", import.meta.url));
    await Promise.all([ctx.resume(), this._worklet]);
    const stream = await navigator.mediaDevices.getUserMedia({
      // Echo cancellation keeps our own playback out of the microphone; noise suppression
      // and gain control only make recognition worse.
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false },
    });
    const source = ctx.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(ctx, "parley-capture", { numberOfInputs: 1, numberOfOutputs: 0,
      processorOptions: { targetRate: this.options.inputSampleRate, frameMs: FRAME_MS } });
    node.port.onmessage = (e) => this.sendAudio(e.data);
    source.connect(node);
    mine.release = () => {
      node.port.onmessage = null;
      source.disconnect();
      for (const track of stream.getTracks()) track.stop();
    };
  }

  stopMicrophone() {
    this._mic?.release();
    this._mic = null;
  }

  /** Ends the session (session.end); resolves once the connection is closed. */
  end() {
    if (this.state === "closed") return Promise.resolve();
    const closed = new Promise((resolve) => {
      const off = this.on("state", ({ state }) => state === "closed" && (off(), resolve()));
    });
    this._ended = true;
    if (!this._writable) {
      this._finish(1000);
    } else {
      const ws = this._ws;
      ws.send(JSON.stringify({ type: "session.end" }));
      setTimeout(() => ws.close(1000), END_GRACE_MS);
    }
    return closed;
  }

  /** Closes the socket as a network failure would, to exercise resume (tests, demos). */
  dropConnection() {
    this._ws?.close(4000, "dropped by the client");
  }

  // ---- connection ----------------------------------------------------------

  _open() {
    this._setState(this.sessionId ? "reconnecting" : "connecting");
    const ws = (this._ws = new WebSocket(this._url));
    ws.onopen = () => {
      ws.send(JSON.stringify(this.sessionId ? this._resumeMessage() : this._startMessage()));
      this._startSent = true;
    };
    ws.onmessage = (e) => ws === this._ws && this._receive(e.data);
    ws.onclose = (e) => ws === this._ws && this._closed(e.code, e.reason);
  }

  _startMessage() {
    const o = this.options;
    const msg = { type: "session.start", mode: o.mode, language: o.language,
      input_sample_rate: o.inputSampleRate, output_sample_rate: o.outputSampleRate };
    const optional = { target_language: o.targetLanguage, room: o.room, voice: o.voice, instructions: o.instructions };
    for (const [key, value] of Object.entries(optional)) if (value) msg[key] = value;
    if (this._tools.size) msg.tools = [...this._tools.values()].map((t) => t.spec);
    return msg;
  }

  _resumeMessage() {
    return { type: "session.resume", session_id: this.sessionId, resume_token: this._resumeToken, last_seq: this.lastSeq };
  }

  _closed(code, reason) {
    this._ws = null;
    if (this.state === "closed") return;
    if (this._ended || code === 1000 || GIVE_UP_CODES.has(code) || this._attempt >= this.options.maxAttempts) {
      if (code === 4404) this._emit({ type: "session.lost", code, reason });
      return this._finish(code);
    }
    const delay = code === DRAINING && this._attempt === 0 ? 0 : backoffMs(this._attempt);
    this._setState("reconnecting", code, Math.round(delay));
    this._attempt++;
    this._retryTimer = setTimeout(() => this._open(), delay);
  }

  _finish(code) {
    clearInterval(this._ackTimer);
    clearTimeout(this._retryTimer);
    this._ws?.close(1000);
    this._ws = null;
    this._connecting = null;
    this._outbox = [];
    this.stopMicrophone();
    this._player?.stop();
    this._player = null;
    if (this._ctx && this._ctx !== this.options.audioContext) this._ctx.close(); // ours to close
    this._ctx = this._worklet = null;
    const fatal = this._fatal ? `${this._fatal.code}: ${this._fatal.message}` : `closed with code ${code}`;
    this._settle?.reject(new Error(fatal));
    this._settle = null;
    this._setState("closed", code);
  }

  _setState(state, code, retryInMs) {
    if (state === this.state) return;
    this.state = state;
    this._emit({ type: "state", state, code, ...(retryInMs === undefined ? {} : { retry_in_ms: retryInMs }) });
  }

  /** Open, and the socket not already closing (a drop is seen a moment before onclose). */
  get _writable() {
    return this.state === "open" && this._ws?.readyState === WebSocket.OPEN;
  }

  /** Writes a text message now, or after the next session.started when not connected. */
  _send(msg) {
    if (this._writable) this._ws.send(JSON.stringify(msg));
    else if (this.state !== "closed") this._outbox.push(msg);
  }

  _ack() {
    if (!this._writable || this.lastSeq <= this.ackedSeq) return;
    this._ws.send(JSON.stringify({ type: "ack", seq: this.lastSeq }));
    this.ackedSeq = this.lastSeq;
  }

  // ---- events --------------------------------------------------------------

  _receive(data) {
    if (typeof data !== "string") return; // the edge sends only text frames
    let ev;
    try {
      ev = JSON.parse(data);
    } catch {
      return;
    }
    if (typeof ev.seq === "number") {
      if (ev.seq <= this.lastSeq) return; // replayed: already delivered
      this.lastSeq = ev.seq;
    }
    this._track(ev);
    this._emit(ev);
    if (ev.type === "tool.call") this._runTool(ev);
  }

  /** The client's own bookkeeping for an event, before handlers see it. */
  _track(ev) {
    switch (ev.type) {
      case "session.started":
        this.sessionId = ev.session_id;
        this._resumeToken = ev.resume_token;
        this._outputRate = ev.output_sample_rate || this.options.outputSampleRate;
        this._attempt = 0;
        this._setState("open");
        for (const msg of this._outbox.splice(0)) this._send(msg);
        this._settle?.resolve(ev);
        this._settle = null;
        break;
      case "session.ended":
        this._ended = true;
        break;
      case "error":
        if (ev.fatal) this._fatal = ev;
        break;
      case "response.text":
      case "tool.call":
        this._responseId = ev.response_id ?? this._responseId;
        break;
      case "audio.delta":
        this._play(ev);
        break;
      case "response.done":
        if (ev.status === "cancelled") this._player?.stop(ev.response_id);
        if (ev.response_id === this._responseId) this._responseId = null;
        break;
    }
  }

  _play(ev) {
    const pcm = decodePcm16(ev.audio);
    this.stats.receivedSamples += pcm.length;
    if (ev.response_id) {
      if (this._cancelled.has(ev.response_id)) return;
      this._responseId = ev.response_id;
    }
    if (!this.options.playAudio) return;
    this._player ??= new Player(this._audioContext(), this.stats);
    this._player.play(pcm, this._outputRate, ev.response_id);
  }

  _emit(ev) {
    for (const key of [ev.type, "*"]) {
      for (const handler of this._handlers.get(key) ?? []) {
        try {
          handler(ev);
        } catch (err) {
          console.error(`parley: a '${key}' handler threw`, err);
        }
      }
    }
  }

  /** Runs a tool.call once per call_id; a replay of an answered call re-sends the answer. */
  async _runTool(ev) {
    const { call_id: callId, name } = ev;
    if (this._calls.has(callId)) {
      const answer = this._calls.get(callId); // null: still running, it answers when done
      if (answer) this._send(answer);
      return;
    }
    this._calls.set(callId, null);
    if (this._calls.size > REMEMBERED_CALLS) this._calls.delete(this._calls.keys().next().value);
    const answer = { type: "tool.result", call_id: callId };
    const tool = this._tools.get(name);
    try {
      if (!tool) throw new Error(`unknown function: ${name}`);
      answer.output = (await tool.fn(ev.arguments ?? {}, ev)) ?? null;
    } catch (err) {
      answer.error = String(err?.message ?? err) || "error";
    }
    this._calls.set(callId, answer);
    this._send(answer);
    this._emit({ type: "tool.executed", call_id: callId, name, arguments: ev.arguments, output: answer.output, error: answer.error });
  }

  _audioContext() {
    this._ctx ??= this.options.audioContext ?? new AudioContext();
    return this._ctx;
  }
}
