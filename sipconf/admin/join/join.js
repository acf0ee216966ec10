// sipconf: join a conference from the browser (SPEC 14). No build step, no CDN.
// One POST /join/offer carries room, conference ID, PIN and the WebRTC offer
// (ICE gathered in full first: no trickle); GET /join/wait tells how the
// participant ended (kicked, conference ended...); leaving the page sends
// POST /join/leave. window.sipconfJoin exposes the state and the dominant
// frequency of what we hear (tests read it with page.evaluate).
"use strict";

const page = (self.crypto && crypto.randomUUID) ? crypto.randomUUID() : String(Math.random()).slice(2);
const $ = (id) => document.getElementById(id);
const state = { phase: "idle", message: "", session: null, pc: null, stream: null,
                audio: null, analyser: null, goodbye: false };
window.sipconfJoin = {
  get phase() { return state.phase; },
  get message() { return state.message; },
  get connectionState() { return state.pc ? state.pc.connectionState : "none"; },
  dominantHz: () => dominantHz(),
  level: () => level(),
};

function show(text, kind) {
  state.message = text;
  const el = $("status");
  el.textContent = text;
  el.className = kind || "";
}

function setPhase(phase) {
  state.phase = phase;
  $("join").hidden = phase === "joined" || phase === "connecting" || state.goodbye;
  $("call").hidden = phase !== "joined" && phase !== "connecting";
}

async function gatheringComplete(pc, ms) {
  if (pc.iceGatheringState === "complete") return;
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}

function closeMedia() {
  if (state.pc) { try { state.pc.close(); } catch (e) { /* already closed */ } }
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.pc = null;
  state.stream = null;
}

function ended(text) {
  closeMedia();
  state.session = null;
  setPhase("ended");
  show(text, "ended");
  $("join").hidden = state.goodbye;
  $("go").disabled = state.goodbye;
}

async function join(event) {
  event.preventDefault();
  if (state.phase === "connecting" || state.phase === "joined") return;
  if (!navigator.mediaDevices || !window.RTCPeerConnection) {
    // browsers give the microphone only to secure pages: HTTPS, or plain HTTP on localhost
    show("This browser does not allow the microphone here: open this page over HTTPS "
         + "(or on localhost), in a browser with WebRTC.", "error");
    return;
  }
  $("go").disabled = true;
  // the AudioContext is made in the click (browsers start it only on a user gesture)
  if (!state.audio) state.audio = new AudioContext();
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    $("go").disabled = false;
    show("No microphone: " + e.message, "error");
    return;
  }
  const pc = new RTCPeerConnection({ iceServers: [] });
  state.pc = pc;
  state.stream.getTracks().forEach((t) => pc.addTrack(t, state.stream));
  pc.addEventListener("track", (e) => listen(e.streams[0] || new MediaStream([e.track])));
  pc.addEventListener("connectionstatechange", () => onConnectionState(pc));
  setPhase("connecting");
  show("Connecting…");
  await pc.setLocalDescription(await pc.createOffer());
  await gatheringComplete(pc, 3000);
  let reply, body;
  try {
    reply = await fetch("/join/offer", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ room: $("room").value, conference: $("conference").value, pin: $("pin").value,
                             page, type: "offer", sdp: pc.localDescription.sdp }),
    });
    body = await reply.json();
  } catch (e) {
    closeMedia();
    setPhase("idle");
    $("go").disabled = false;
    show("The server cannot be reached: " + e.message, "error");
    return;
  }
  if (!reply.ok) {
    closeMedia();
    if (body.goodbye) {
      state.goodbye = true;
      ended("Goodbye. " + (body.error || ""));
      return;
    }
    setPhase("idle");
    $("go").disabled = false;
    const left = body.attempts_left !== undefined ? ` (${body.attempts_left} attempt${body.attempts_left === 1 ? "" : "s"} left)` : "";
    show((body.error || "Refused") + left, "error");
    return;
  }
  state.session = body.session;
  await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
  watch(body.session);
}

function onConnectionState(pc) {
  if (pc !== state.pc) return;
  const s = pc.connectionState;
  if (s === "connected" && state.phase === "connecting") {
    setPhase("joined");
    show("In the conference.");
  } else if (s === "failed") {
    const session = state.session;
    ended("Connection failed: no network path to the server (ICE) or the secure handshake (DTLS) failed.");
    if (session) navigator.sendBeacon("/join/leave", JSON.stringify({ session }));
  }
}

// How the server ended us: a long poll that answers when the state changes.
async function watch(session) {
  let known = "connecting";
  while (state.session === session) {
    let body;
    try {
      const r = await fetch(`/join/wait?session=${encodeURIComponent(session)}&state=${known}`);
      if (r.status === 404) return;
      body = await r.json();
    } catch (e) {
      await new Promise((res) => setTimeout(res, 1000));
      continue;
    }
    known = body.state;
    if (body.state === "ended" && state.session === session) {
      ended(endText(body.reason));
      return;
    }
  }
}

function endText(reason) {
  if (/removed/.test(reason)) return "You were removed from the conference.";
  if (/ended|moderator left/.test(reason)) return "The conference has ended.";
  if (/ICE|DTLS/.test(reason)) return "Connection failed: " + reason + ".";
  return "Disconnected: " + reason + ".";
}

function listen(stream) {
  const el = $("remote");
  el.srcObject = stream;  // Chrome feeds WebAudio from a remote stream only while an element plays it
  el.play().catch(() => {});
  const ctx = state.audio;
  if (ctx.state === "suspended") ctx.resume();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 8192;
  analyser.smoothingTimeConstant = 0.5;
  ctx.createMediaStreamSource(stream).connect(analyser);
  state.analyser = analyser;
  setInterval(() => { $("level").style.width = Math.round(level() * 2) + "px"; }, 200);
}

function dominantHz() {
  const a = state.analyser;
  if (!a) return 0;
  const bins = new Float32Array(a.frequencyBinCount);
  a.getFloatFrequencyData(bins);
  let best = 1;
  for (let i = 2; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
  return bins[best] < -90 ? 0 : best * state.audio.sampleRate / a.fftSize;
}

function level() {
  const a = state.analyser;
  if (!a) return 0;
  const t = new Float32Array(a.fftSize);
  a.getFloatTimeDomainData(t);
  let sum = 0;
  for (const v of t) sum += v * v;
  return Math.sqrt(sum / t.length) * 100;
}

function hangup() {
  if (state.session) navigator.sendBeacon("/join/leave", JSON.stringify({ session: state.session }));
  ended("You left the conference.");
}

$("join").addEventListener("submit", join);
$("hangup").addEventListener("click", hangup);
window.addEventListener("pagehide", () => {
  if (state.session) navigator.sendBeacon("/join/leave", JSON.stringify({ session: state.session }));
});
