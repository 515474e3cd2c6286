// Parley web demo, assistant mode: talk to an assistant that can call a function which
// runs in this page (set_background_color). Built on the SDK in parley.js.

import { ParleyClient } from "./parley.js";

const MAX_NOTICES = 20;
const COLORS = ["red", "green", "blue", "yellow"];

const $ = (id) => document.getElementById(id);

// State for tests and for curious people with a console open.
const assistant = { client: null, state: "idle", events: [] };
window.assistant = assistant;
let ending = false; // End was pressed: the close is ours

// ---- the function the assistant may call ------------------------------------

const BACKGROUND_SCHEMA = {
  type: "object",
  properties: { color: { type: "string", enum: COLORS } },
  required: ["color"],
};

function setBackgroundColor({ color }) {
  if (!COLORS.includes(color)) throw new Error(`unsupported color: ${color}`);
  document.body.style.backgroundColor = color;
  return { ok: true, color };
}

// ---- rendering ----------------------------------------------------------------

function addEntry(list, who, key) {
  const li = document.createElement("li");
  const whoEl = document.createElement("span");
  whoEl.className = "who";
  whoEl.textContent = who;
  const text = document.createElement("span");
  text.className = "text";
  li.append(whoEl, text);
  if (key) li.dataset.key = key;
  list.append(li);
  list.scrollTop = list.scrollHeight;
  return li;
}

function entry(list, key, who) {
  return list.querySelector(`li[data-key="${CSS.escape(key)}"]`) ?? addEntry(list, who, key);
}

function showTranscript(ev) {
  if (ev.speaker && ev.speaker !== assistant.client.sessionId) return; // only the own speech
  const li = entry($("transcript"), ev.utterance_id, "you");
  if (li.classList.contains("final")) return; // a late partial never hides the final text
  li.className = ev.type === "transcript.final" ? "final" : "partial";
  li.querySelector(".text").textContent = ev.text || "…";
}

function showReply(ev) {
  const text = entry($("replies"), ev.response_id, "assistant").querySelector(".text");
  text.textContent = text.textContent ? `${text.textContent} ${ev.text}` : ev.text;
}

function finishReply(ev) {
  const li = $("replies").querySelector(`li[data-key="${CSS.escape(ev.response_id)}"]`);
  if (li && ev.status !== "completed") li.classList.add(ev.status);
}

function showToolCall(ev) {
  const li = addEntry($("tool-log"), "assistant called", ev.call_id);
  li.dataset.name = ev.name;
  li.querySelector(".text").textContent = `${ev.name}(${JSON.stringify(ev.arguments ?? {})})`;
}

function showToolResult(ev) {
  const li = entry($("tool-log"), ev.call_id, "assistant called");
  const result = document.createElement("span");
  result.className = "result";
  result.textContent = ev.error != null ? `→ error: ${ev.error}` : `→ ${JSON.stringify(ev.output)}`;
  if (ev.error != null) li.classList.add("error");
  li.append(result);
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
  assistant.state = state;
  $("status").textContent = state;
  $("status").dataset.state = state === "open" ? "live" : state;
  const running = state !== "idle" && state !== "closed" && state !== "error";
  $("start").disabled = running;
  $("end").disabled = !running;
  $("barge").disabled = state !== "open";
  $("language").disabled = running;
  $("instructions").disabled = running;
}

// ---- start / end ----------------------------------------------------------------

function handle(ev) {
  if (ev.type !== "audio.delta") assistant.events.push(ev); // audio is counted in client.stats
  switch (ev.type) {
    case "state":
      if (ev.state === "closed") assistant.client.options.audioContext.close();
      return setState(ev.state);
    case "transcript.partial":
    case "transcript.final": return showTranscript(ev);
    case "response.text": return showReply(ev);
    case "response.done": return finishReply(ev);
    case "tool.call": return showToolCall(ev);
    case "tool.executed": return showToolResult(ev);
    case "warning": return notice("warning", `${ev.code}: ${ev.message}`);
    case "error": return notice("error", `${ev.code}: ${ev.message}${ev.fatal ? " (fatal)" : ""}`);
    case "session.lost": return notice("error", "the session was lost; press Start for a new one");
    case "session.ended": return notice("info", `session ended: ${ev.reason}`);
  }
}

async function start() {
  const token = new URLSearchParams(location.search).get("token");
  const client = new ParleyClient({
    mode: "assistant",
    language: $("language").value,
    instructions: $("instructions").value.trim() || undefined,
    token: token || undefined,
    // Created inside the click, so the browser lets it play sound.
    audioContext: new AudioContext(),
  });
  assistant.client = client;
  assistant.events = [];
  ending = false;
  for (const id of ["transcript", "replies", "tool-log"]) $(id).replaceChildren();
  client.on("*", handle);
  client.registerFunction("set_background_color", setBackgroundColor, BACKGROUND_SCHEMA, {
    description: "Change the background colour of the web page the user is looking at.",
  });
  try {
    await client.connect();
    if (client.state === "open") await client.startMicrophone(); // else End was pressed meanwhile
  } catch (err) {
    if (ending) return; // End was pressed meanwhile
    notice("error", err.message);
    if (client.state !== "closed") client.end();
    setState("error");
  }
}

$("controls").addEventListener("submit", (e) => {
  e.preventDefault();
  start();
});
$("barge").addEventListener("click", () => assistant.client?.cancelResponse());
$("end").addEventListener("click", () => {
  ending = true;
  assistant.client?.end();
});
const language = new URLSearchParams(location.search).get("language");
if (language) $("language").value = language;
