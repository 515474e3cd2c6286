// Parley web demo, translate mode: microphone -> /v1/stream -> captions,
// translations and translated speech. The connection (start, resume, acks, audio in and
// out) is the SDK's, parley.js; this file only renders. No build step: served as is.

import { ParleyClient } from "./parley.js";

const MAX_EVENTS = 5000; // window.parley.events keeps the newest this many
const MAX_NOTICES = 20;
const RUNNING_STATES = new Set(["connecting", "live", "reconnecting"]);

const $ = (id) => document.getElementById(id);

let client = null; // the ParleyClient of the current run
let stopping = false; // Stop was pressed: the end is ours

// State for tests and for curious people with a console open.
const parley = {
  state: "idle",
  events: [], // every event delivered, in order (durable ones once each)
  reconnects: 0,
  get sessionId() { return client?.sessionId ?? null; },
  get lastSeq() { return client?.lastSeq ?? 0; },
  get ackedSeq() { return client?.ackedSeq ?? 0; },
  get playedSamples() { return client?.stats.playedSamples ?? 0; },
  get sentSamples() { return client?.stats.sentSamples ?? 0; },
  // Closes the socket as a network failure would, to exercise resume.
  dropConnection: () => client?.dropConnection(),
};
window.parley = parley;

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
  const running = RUNNING_STATES.has(state);
  $("start").disabled = running;
  $("stop").disabled = !running;
  for (const id of ["language", "target", "room"]) $(id).disabled = running;
  if (!running) updateTargetEnabled();
}

function updateTargetEnabled() {
  $("target").disabled = $("room").value.trim() !== ""; // in a room you hear your own language
}

// ---- events --------------------------------------------------------------

/** The SDK's connection state, in the page's words. */
function pageState({ state, code }) {
  if (state === "open") return "live";
  if (state !== "closed") return state;
  if (stopping) return "stopped";
  return code === 1000 ? "ended" : "error";
}

function handleEvent(ev) {
  if (ev.type === "state") {
    if (ev.state === "closed") client.options.audioContext.close();
    return setState(pageState(ev));
  }
  parley.events.push(ev);
  if (parley.events.length > MAX_EVENTS) parley.events.shift();
  switch (ev.type) {
    case "session.started":
      if (ev.resumed) parley.reconnects++;
      break;
    case "transcript.partial":
    case "transcript.final":
      showCaption(ev);
      break;
    case "translation":
      showTranslation(ev);
      break;
    case "warning":
      notice("warning", `${ev.code}: ${ev.message}`);
      break;
    case "error":
      notice("error", `${ev.code}: ${ev.message}${ev.fatal ? " (fatal)" : ""}`);
      break;
    case "session.lost":
      notice("error", "the session was gone when the page came back; press Start for a new one");
      break;
    case "session.ended":
      notice("info", `session ended: ${ev.reason}`);
      break;
  }
}

// ---- start / stop ---------------------------------------------------------

async function start() {
  const room = $("room").value.trim();
  const token = new URLSearchParams(location.search).get("token");
  client = new ParleyClient({
    mode: "translate",
    language: $("language").value,
    targetLanguage: room ? undefined : $("target").value, // a room: each hears its own language
    room: room || undefined,
    token: token || undefined,
    // Created inside the click, so the browser lets it play sound.
    audioContext: new AudioContext(),
  });
  stopping = false;
  Object.assign(parley, { events: [], reconnects: 0 });
  $("captions").replaceChildren();
  $("translations").replaceChildren();
  captionItems.clear();
  client.on("*", handleEvent);
  try {
    await client.connect();
    if (!stopping) await client.startMicrophone();
  } catch (err) {
    if (stopping) return; // Stop was pressed meanwhile
    notice("error", err.message.startsWith("closed") ? "could not start the session" : err.message);
    if (client.state !== "closed") await client.end();
    setState("error");
  }
}

function stop() {
  stopping = true;
  client?.end();
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
