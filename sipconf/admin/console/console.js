// sipconf console: one static file, no build step, no external code.
// The token is kept in sessionStorage (gone when the tab closes). API calls send
// it as "Authorization: Bearer"; the event stream, opened with EventSource (which
// cannot send headers), passes it as ?token= -- only /api/events accepts that.
"use strict";

const TOKEN_KEY = "sipconf-token";
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY);
let rooms = [];            // last GET /api/rooms
let source = null;         // EventSource
let refreshTimer = null;
let statusTimer = null;

// Events after which the room list is fetched again; talking is applied in place.
const STRUCTURAL = new Set(["joined", "left", "muted", "unmuted", "locked", "unlocked",
  "recording_started", "recording_stopped", "call_ended"]);

async function api(method, path) {
  const response = await fetch(path, { method, headers: { Authorization: "Bearer " + token } });
  let body = {};
  try { body = await response.json(); } catch (e) { /* empty or not JSON */ }
  if (response.status === 401 || response.status === 403) {
    logout(response.status === 403 ? "This address is banned for now (too many wrong tokens)." : "Wrong token.");
    throw new Error(body.error || response.statusText);
  }
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function showError(message) { $("error").textContent = message || ""; }

function logout(message) {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  if (source) { source.close(); source = null; }
  clearInterval(statusTimer);
  setStream(false);
  $("rooms").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

async function login(candidate) {
  token = candidate;
  try {
    await api("GET", "/api/status");
  } catch (e) {
    if (token) $("login-error").textContent = e.message;  // not a token problem (those log out)
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("login-error").textContent = "";
  $("token").value = "";
  $("login").hidden = true;
  $("logout").hidden = false;
  $("rooms").hidden = false;
  await Promise.all([refreshStatus(), refreshRooms()]);
  statusTimer = setInterval(refreshStatus, 5000);
  connectEvents();
}

async function refreshStatus() {
  try {
    const s = await api("GET", "/api/status");
    $("status").textContent = `v${s.version} · up ${formatUptime(s.uptime_s)} · ${s.calls} calls · ` +
      `${s.participants} in conferences · ${s.registrations} registered`;
  } catch (e) { /* shown by api() or next time */ }
}

function formatUptime(seconds) {
  const s = Math.floor(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${m} min` : m ? `${m} min ${s % 60} s` : `${s} s`;
}

async function refreshRooms() {
  try {
    rooms = (await api("GET", "/api/rooms")).rooms;
    render();
    showError("");
  } catch (e) { showError(e.message); }
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshRooms, 100);
}

function setStream(on) {
  const badge = $("stream");
  badge.className = "stream " + (on ? "on" : "off");
  badge.textContent = "events: " + (on ? "live" : "off");
}

function connectEvents() {
  if (source) source.close();
  source = new EventSource("/api/events?token=" + encodeURIComponent(token));
  source.onopen = () => { setStream(true); scheduleRefresh(); };  // catch up on what was missed
  source.onerror = () => {
    setStream(false);
    // EventSource retries by itself; if the token stopped working, say so.
    if (source.readyState === EventSource.CLOSED) refreshStatus().then(() => token && setTimeout(connectEvents, 2000));
  };
  source.onmessage = (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch (e) { return; }
    if (event.event === "talking" || event.event === "stopped_talking") {
      setTalking(event.participant, event.event === "talking");
    } else if (STRUCTURAL.has(event.event)) {
      scheduleRefresh();
      if (event.event === "joined" || event.event === "left") refreshStatus();
    }
  };
}

function setTalking(pid, on) {
  for (const room of rooms) for (const c of room.conferences) for (const p of c.participants) {
    if (p.id === pid) p.talking = on;
  }
  const dot = document.querySelector(`tr[data-participant="${CSS.escape(String(pid))}"] .talking`);
  if (dot) dot.classList.toggle("on", on);
}

// -- rendering (textContent only: names come from the phones) -------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else if (key === "onclick") node.addEventListener("click", value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

// Destructive buttons need a second click within CONFIRM_MS; kept outside the DOM
// because the page is redrawn whenever an event arrives.
const CONFIRM_MS = 3000;
const armedUntil = new Map();  // path -> time

function actionButton(label, path, action, { danger = false, confirmText = null } = {}) {
  const armed = () => (armedUntil.get(path) || 0) > Date.now();
  const button = el("button", { type: "button", "data-action": action, class: danger ? "danger" : "" },
    confirmText && armed() ? confirmText : label);
  button.addEventListener("click", async () => {
    if (confirmText && !armed()) {
      armedUntil.set(path, Date.now() + CONFIRM_MS);
      button.textContent = confirmText;
      setTimeout(() => { if (!armed()) button.textContent = label; }, CONFIRM_MS + 50);
      return;
    }
    armedUntil.delete(path);
    button.disabled = true;
    try {
      const state = await api("POST", path);
      applyConference(state);
      showError("");
    } catch (e) {
      showError(`${label}: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

function applyConference(state) {
  for (const room of rooms) {
    if (room.extension !== state.room) continue;
    room.conferences = room.conferences.map((c) => (c.id === state.id ?
      { id: state.id, locked: state.locked, recording: state.recording, participants: state.participants } : c));
  }
  render();
}

function yesNo(value) { return value ? "yes" : "no"; }

function render() {
  const main = $("rooms");
  main.replaceChildren();
  if (!rooms.length) main.append(el("p", { class: "empty" }, "No rooms configured."));
  for (const room of rooms) {
    const section = el("section", { class: "room", "data-room": room.extension },
      el("h2", {}, `Room ${room.extension}` + (room.name ? ` — ${room.name}` : "")));
    for (const c of room.conferences) section.append(renderConference(room, c));
    main.append(section);
  }
}

function renderConference(room, c) {
  const base = `/api/rooms/${encodeURIComponent(room.extension)}/conferences/${encodeURIComponent(c.id)}`;
  const live = c.participants.length > 0;
  const title = el("h3", {}, `Conference ${c.id}`, el("span", { class: "badge" }, `${c.participants.length} in`));
  if (c.locked) title.append(el("span", { class: "badge locked" }, "locked"));
  if (c.recording) title.append(el("span", { class: "badge recording" }, "● recording"));
  const box = el("div", { class: "conference" + (live ? "" : " idle"), "data-conference": c.id }, title);
  if (!live) return box;
  box.append(el("div", { class: "actions" },
    c.locked ? actionButton("Unlock", `${base}/unlock`, "unlock") : actionButton("Lock", `${base}/lock`, "lock"),
    actionButton("Mute all", `${base}/mute-all`, "mute-all"),
    actionButton("Unmute all", `${base}/unmute-all`, "unmute-all"),
    c.recording ? actionButton("Stop recording", `${base}/record/stop`, "record-stop")
      : actionButton("Record", `${base}/record/start`, "record-start"),
    actionButton("End conference", `${base}/end`, "end", { danger: true, confirmText: "Click again to end" })));
  const table = el("table", {}, el("thead", {}, el("tr", {},
    ...["", "Caller", "Name", "Codec", "SRTP", "Moderator", "Muted", "Joined", ""].map((h) => el("th", {}, h)))));
  const body = el("tbody");
  for (const p of c.participants) {
    const path = `${base}/participants/${encodeURIComponent(p.id)}`;
    body.append(el("tr", { "data-participant": p.id, "data-caller": p.caller },
      el("td", {}, el("span", { class: "talking" + (p.talking ? " on" : ""), title: "talking" })),
      el("td", {}, p.caller), el("td", {}, p.name || ""), el("td", {}, p.codec || ""),
      el("td", {}, yesNo(p.srtp)), el("td", {}, yesNo(p.moderator)),
      el("td", { class: "muted" }, yesNo(p.muted)),
      el("td", {}, new Date(p.joined_at).toLocaleTimeString()),
      el("td", { class: "actions" },
        p.muted ? actionButton("Unmute", `${path}/unmute`, "unmute") : actionButton("Mute", `${path}/mute`, "mute"),
        actionButton("Kick", `${path}/kick`, "kick", { danger: true }))));
  }
  table.append(body);
  box.append(table);
  return box;
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    login($("token").value.trim());
  });
  $("logout").addEventListener("click", () => logout(""));
  if (token) login(token); else logout("");
});
