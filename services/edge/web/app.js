// Parley web demo, translate mode: microphone -> /v1/stream -> captions,
// translations and translated speech. Protocol: see PROTOCOL.md (client protocol v1).
// No dependencies and no build step: this file is served as is.

const INPUT_RATE = 16000; // the worklet downsamples to this; sent as input_sample_rate
const OUTPUT_RATE = 16000; // requested output_sample_rate
const FRAME_MS = 40; // binary frames of 40 ms: small enough for latency, few enough frames
const ACK_EVERY_MS = 1000;
const PLAY_LEAD_S = 0.08; // start delay after an underrun, to absorb network jitter
const MAX_EVENTS = 5000; // window.parley.events keeps the newest this many
const MAX_NOTICES = 20;
const MAX_ATTEMPTS = 15; // reconnects in a row without a session.started (~2 min)
const NO_RETRY_CODES = new Set([4400, 4401]); // a protocol bug or bad credentials: retrying cannot help
const FINAL_STATES = new Set(["stopped", "ended", "error"]);

const $ = (id) => document.getElementById(id);

// State for tests and for curious people with a console open.
const parley = {
  state: "idle",
  events: [], // every event received, in arrival order (replayed duplicates included)
  sessionId: null,
  resumeToken: null,
  lastSeq: 0, // highest durable seq received
  ackedSeq: 0, // highest seq sent in an ack
  playedSamples: 0, // output samples whose playback has finished
  sentSamples: 0, // microphone samples (at INPUT_RATE) sent to the edge
  reconnects: 0,
  // Closes the socket as a network failure would, to exercise resume.
  dropConnection: () => session?.drop(),
};
window.parley = parley;

let session = null; // the Session of the current run
let run = null; // {ctx, player, stopMic} while the page is capturing

// ---- playback ------------------------------------------------------------

function decodePcm16(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length & ~1); // a stray odd byte is dropped
  for (let i = 0; i < bytes.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Int16Array(bytes.buffer); // little-endian platform, so this reads PCM16LE
}

// Plays PCM chunks back to back: each starts exactly where the previous ends.
class Player {
  constructor(ctx) {
    this.ctx = ctx;
    this.next = 0;
    this.sources = new Set();
  }

  play(pcm, rate) {
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
    this.sources.add(src);
    src.onended = () => {
      this.sources.delete(src);
      parley.playedSamples += pcm.length;
    };
  }

  stop() {
    for (const src of this.sources) {
      src.onended = null;
      src.stop();
    }
    this.sources.clear();
  }
}

// ---- capture -------------------------------------------------------------

async function openMic(ctx, onFrame) {
  if (!navigator.mediaDevices?.getUserMedia || !ctx.audioWorklet) {
    throw new Error("the microphone needs a secure page (https, or http on localhost)");
  }
  await ctx.audioWorklet.addModule(new URL("capture-worklet.js", import.meta.url));
  const stream = await navigator.mediaDevices.getUserMedia({
    // Echo cancellation keeps the spoken translation out of the microphone;
    // no noise suppression or gain control, which only make recognition worse.
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false },
  });
  const source = ctx.createMediaStreamSource(stream);
  // No outputs: the node is a sink, which Chromium pulls without a path to the speakers.
  const node = new AudioWorkletNode(ctx, "parley-capture", {
    numberOfInputs: 1,
    numberOfOutputs: 0,
    processorOptions: { targetRate: INPUT_RATE, frameMs: FRAME_MS },
  });
  node.port.onmessage = (e) => onFrame(e.data);
  source.connect(node);
  return () => {
    node.port.onmessage = null;
    source.disconnect();
    for (const track of stream.getTracks()) track.stop();
  };
}

// ---- connection ----------------------------------------------------------

function streamUrl() {
  // Relative, so the page also works behind a proxy that serves it under a prefix.
  const url = new URL("v1/stream", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  url.hash = "";
  const token = new URLSearchParams(location.search).get("token");
  if (token) url.searchParams.set("token", token); // browsers cannot set headers on a WebSocket
  return url.href;
}

function backoffMs(attempt) {
  const base = Math.min(10000, 500 * 2 ** attempt);
  return base / 2 + (Math.random() * base) / 2; // jitter, so clients don't return in step
}

// One protocol session across any number of connections: start once, then resume.
class Session {
  constructor(startMessage, { onEvent, onState, onAck }) {
    this.startMessage = startMessage;
    this.onEvent = onEvent;
    this.onState = onState;
    this.onAck = onAck;
    this.id = null;
    this.token = null;
    this.lastSeq = 0;
    this.acked = 0;
    this.attempt = 0;
    this.done = false;
    this.ended = false;
    this.retryTimer = null;
    this.ackTimer = setInterval(() => this.ack(), ACK_EVERY_MS);
    this.connect();
  }

  connect() {
    this.onState(this.id ? "reconnecting" : "connecting");
    const ws = new WebSocket(streamUrl());
    this.ws = ws;
    this.opened = false;
    ws.onopen = () => {
      this.opened = true;
      this.send(this.id
        ? { type: "session.resume", session_id: this.id, resume_token: this.token, last_seq: this.lastSeq }
        : this.startMessage);
    };
    ws.onmessage = (e) => this.receive(e.data);
    ws.onclose = (e) => this.closed(ws, e.code);
  }

  send(message) {
    this.ws.send(JSON.stringify(message));
  }

  sendAudio(buffer) {
    // Audio while disconnected is dropped: it is live speech, late is useless.
    if (this.opened && this.ws.readyState === WebSocket.OPEN) this.ws.send(buffer);
  }

  receive(data) {
    if (this.done || typeof data !== "string") return; // the edge sends only text frames
    let ev;
    try {
      ev = JSON.parse(data);
    } catch {
      return;
    }
    let fresh = true;
    if (typeof ev.seq === "number") {
      fresh = ev.seq > this.lastSeq; // never render a durable event twice
      if (fresh) this.lastSeq = ev.seq;
    }
    if (ev.type === "session.started") {
      this.id = ev.session_id;
      this.token = ev.resume_token;
      this.attempt = 0;
      this.onState("live");
    } else if (ev.type === "session.ended") {
      this.ended = true;
    }
    this.onEvent(ev, fresh);
  }

  ack() {
    if (!this.opened || this.ws.readyState !== WebSocket.OPEN || this.lastSeq <= this.acked) return;
    this.send({ type: "ack", seq: this.lastSeq });
    this.acked = this.lastSeq;
    this.onAck(this.acked);
  }

  closed(ws, code) {
    if (ws !== this.ws || this.done) return;
    this.opened = false;
    if (this.ended || code === 1000) return this.finish("ended");
    if (NO_RETRY_CODES.has(code)) return this.finish("error");
    if (this.attempt >= MAX_ATTEMPTS) return this.finish("error");
    if (code === 4404) {
      // The session is gone (resume window passed): carry on with a new one.
      this.id = null;
      this.token = null;
      this.lastSeq = 0;
      this.acked = 0;
    }
    this.onState("reconnecting");
    // Draining, or the session is gone: the edge is reachable, so go on at once.
    const delay = code === 4503 || code === 4404 ? 0 : backoffMs(this.attempt);
    this.attempt++;
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  finish(state) {
    this.done = true;
    clearInterval(this.ackTimer);
    clearTimeout(this.retryTimer);
    this.onState(state);
  }

  stop() {
    if (this.done) return;
    if (this.opened && this.ws.readyState === WebSocket.OPEN) this.send({ type: "session.end" });
    this.finish("stopped");
    this.ws.close(1000);
  }

  drop() {
    if (!this.done && this.ws) this.ws.close(4000, "dropped by the page");
  }
}

// ---- rendering -----------------------------------------------------------

const captionItems = new Map(); // "speaker/utterance_id" -> <li>

function speakerName(speaker) {
  return speaker === parley.sessionId ? "you" : String(speaker ?? "?").slice(0, 8);
}

function addEntry(list, who) {
  const li = document.createElement("li");
  const whoEl = document.createElement("span");
  whoEl.className = "who";
  whoEl.textContent = who;
  const text = document.createElement("span");
  text.className = "text";
  li.append(whoEl, text);
  list.append(li);
  return li;
}

function scrollToEnd(list) {
  list.scrollTop = list.scrollHeight;
}

function showCaption(ev) {
  const key = `${ev.speaker}/${ev.utterance_id}`;
  let li = captionItems.get(key);
  if (!li) {
    li = addEntry($("captions"), speakerName(ev.speaker));
    li.dataset.utterance = ev.utterance_id;
    captionItems.set(key, li);
  }
  if (li.classList.contains("final")) return; // a late partial never hides the final text
  const final = ev.type === "transcript.final";
  li.className = final ? "final" : "partial";
  if (final && ev.language) li.lang = ev.language;
  li.querySelector(".text").textContent = ev.text || "…";
  scrollToEnd($("captions"));
}

function showTranslation(ev) {
  const who = `${speakerName(ev.speaker)} · ${ev.source_language}→${ev.target_language}`;
  const li = addEntry($("translations"), who);
  li.dataset.utterance = ev.utterance_id;
  li.lang = ev.target_language;
  li.querySelector(".text").textContent = ev.text;
  scrollToEnd($("translations"));
}

function notice(kind, text) {
  const list = $("notices");
  const li = document.createElement("li");
  li.className = kind;
  li.textContent = text;
  list.append(li);
  while (list.children.length > MAX_NOTICES) list.firstElementChild.remove();
}

function setState(state) {
  parley.state = state;
  $("status").textContent = state;
  $("status").dataset.state = state;
  const running = !FINAL_STATES.has(state) && state !== "idle";
  $("start").disabled = running;
  $("stop").disabled = !running;
  for (const id of ["language", "target", "room"]) $(id).disabled = running;
  if (!running) {
    updateTargetEnabled();
    releaseAudio(); // the session ended by itself, or Stop was pressed
  }
}

function updateTargetEnabled() {
  $("target").disabled = $("room").value.trim() !== ""; // in a room you hear your own language
}

// ---- events --------------------------------------------------------------

function handleEvent(ev, fresh) {
  parley.events.push(ev);
  if (parley.events.length > MAX_EVENTS) parley.events.shift();
  parley.lastSeq = session.lastSeq;
  if (!fresh) return;
  switch (ev.type) {
    case "session.started":
      if (ev.resumed) parley.reconnects++;
      else if (parley.sessionId) notice("warning", "the old session was gone; a new one started");
      parley.sessionId = ev.session_id;
      parley.resumeToken = ev.resume_token;
      run.outputRate = ev.output_sample_rate || OUTPUT_RATE;
      break;
    case "transcript.partial":
    case "transcript.final":
      showCaption(ev);
      break;
    case "translation":
      showTranslation(ev);
      break;
    case "audio.delta":
      run?.player.play(decodePcm16(ev.audio), run.outputRate);
      break;
    case "warning":
      notice("warning", `${ev.code}: ${ev.message}`);
      break;
    case "error":
      notice("error", `${ev.code}: ${ev.message}${ev.fatal ? " (fatal)" : ""}`);
      break;
    case "session.ended":
      notice("info", `session ended: ${ev.reason}`);
      break;
  }
}

// ---- start / stop ---------------------------------------------------------

function startMessage() {
  const room = $("room").value.trim();
  const msg = {
    type: "session.start",
    mode: "translate",
    language: $("language").value,
    input_sample_rate: INPUT_RATE,
    output_sample_rate: OUTPUT_RATE,
  };
  if (room) msg.room = room;
  else msg.target_language = $("target").value; // only meaningful without a room
  return msg;
}

async function start() {
  // Created inside the click, so the browser lets it play sound.
  const ctx = new AudioContext();
  run = { ctx, player: new Player(ctx), stopMic: null, outputRate: OUTPUT_RATE };
  setState("connecting");
  $("captions").replaceChildren();
  $("translations").replaceChildren();
  captionItems.clear();
  try {
    await ctx.resume();
    const stopMic = await openMic(ctx, (buffer) => {
      session?.sendAudio(buffer);
      parley.sentSamples += buffer.byteLength / 2;
    });
    if (!run || run.ctx !== ctx) return stopMic(); // Stop was pressed meanwhile
    run.stopMic = stopMic;
  } catch (err) {
    if (!run || run.ctx !== ctx) return; // Stop was pressed meanwhile
    notice("error", `microphone: ${err.message}`);
    setState("error");
    return;
  }
  Object.assign(parley, { sessionId: null, resumeToken: null, lastSeq: 0, ackedSeq: 0 });
  session = new Session(startMessage(), {
    onEvent: handleEvent,
    onState: setState,
    onAck: (seq) => (parley.ackedSeq = seq),
  });
}

function releaseAudio() {
  if (!run) return;
  const { ctx, player, stopMic } = run;
  run = null;
  stopMic?.();
  player.stop();
  ctx.close();
}

function stop() {
  if (session && !session.done) session.stop();
  else setState("stopped"); // still opening the microphone
}

function prefillFromQuery() {
  const query = new URLSearchParams(location.search);
  for (const id of ["language", "target", "room"]) if (query.get(id)) $(id).value = query.get(id);
  updateTargetEnabled();
}

$("controls").addEventListener("submit", (e) => {
  e.preventDefault();
  start();
});
$("stop").addEventListener("click", stop);
$("room").addEventListener("input", updateTargetEnabled);
prefillFromQuery();
