// roomgate meeting page: publish mic + camera by WHIP, play the meeting's mix by WHEP.
//
// The page talks to the conference core it was served from:
//   POST /whip/<meeting>                   -> 201, answer, Location of our publisher
//   POST /whep/<meeting>?exclude=<whip id> -> 201, answer: everyone's audio but ours, active speaker's video
//   DELETE each Location to leave.
// ICE is not trickled: we wait for gathering to complete before each POST.
//
// For tests, window.roomgate exposes {state, stats()} where stats() resolves to
// {audioBytesReceived, audioPacketsReceived, audioLevel} from the subscriber's inbound-rtp,
// and {participants}: the last roster read from GET /m/<meeting>/participants (once a second).
// Each participant gets an encryption indicator: a lock when its media is encrypted all the way
// to the gateway (browsers: DTLS-SRTP; room systems: SDES-SRTP), a warning when a room system's
// media reaches the gateway as plain RTP.
"use strict";

(() => {
  const GATHER_TIMEOUT_MS = 5000;

  const $ = (id) => document.getElementById(id);
  const el = {
    meeting: $("meeting"), state: $("state"), error: $("error"), join: $("join"), leave: $("leave"),
    unmute: $("unmute"), remoteVideo: $("remote-video"), localVideo: $("local-video"),
    remoteAudio: $("remote-audio"), stats: $("stats"), remoteVideoNote: $("remote-video-note"),
    participants: $("participants"),
  };
  const ENCRYPTED_TEXT = "encrypted end to end to the gateway";
  const PLAIN_TEXT = "this room system's media is not encrypted before the gateway";

  const meeting = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");

  let media = null;        // local MediaStream
  let publisher = null;    // RTCPeerConnection (WHIP, sendonly)
  let subscriber = null;   // RTCPeerConnection (WHEP, recvonly)
  let whipUrl = null;
  let whepUrl = null;

  const roomgate = {
    state: "idle",
    meeting,
    whipId: null,
    whepId: null,
    stats: subscriberStats,
    participants: [],
    join,
    leave,
  };
  window.roomgate = roomgate;

  function setState(state) {
    roomgate.state = state;
    el.state.textContent = state;
  }

  function showError(err) {
    console.error(err);
    el.error.textContent = String(err && err.message ? err.message : err);
    el.error.hidden = false;
  }

  // Resolve once ICE gathering is complete (or after a timeout: host candidates come first anyway).
  function iceGatheringComplete(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (pc.iceGatheringState !== "complete") return;
        pc.removeEventListener("icegatheringstatechange", done);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        pc.removeEventListener("icegatheringstatechange", done);
        resolve();
      }, GATHER_TIMEOUT_MS);
      pc.addEventListener("icegatheringstatechange", done);
    });
  }

  // Offer, wait for candidates, POST the complete offer, apply the answer; return the resource URL.
  async function negotiate(pc, endpoint) {
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringComplete(pc);
    const response = await fetch(endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/sdp" },
      body: pc.localDescription.sdp,
    });
    const text = await response.text();
    if (response.status !== 201) {
      throw new Error(`${endpoint}: HTTP ${response.status} ${text.trim()}`);
    }
    const resource = new URL(response.headers.get("Location"), location.href).href;
    await pc.setRemoteDescription({ type: "answer", sdp: text });
    return resource;
  }

  async function getMedia() {
    try {
      return await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    } catch (err) {
      console.warn("camera unavailable, joining with audio only", err);
      return navigator.mediaDevices.getUserMedia({ audio: true, video: false });
    }
  }

  // Both connections must be up for the page to be "connected"; either failing fails the page.
  function updateState() {
    const states = [publisher, subscriber].filter(Boolean).map((pc) => pc.connectionState);
    if (states.includes("failed")) setState("failed");
    else if (states.length === 2 && states.every((s) => s === "connected")) setState("connected");
    else if (states.includes("disconnected")) setState("disconnected");
    else setState("connecting");
  }

  function play(element) {
    const attempt = element.play();
    if (attempt) attempt.catch(() => { el.unmute.hidden = false; }); // autoplay refused: ask for a click
  }

  async function join() {
    if (publisher || subscriber) return;
    el.join.hidden = true;
    el.error.hidden = true;
    try {
      setState("requesting media");
      media = await getMedia();
      el.localVideo.srcObject = media;

      setState("publishing");
      publisher = new RTCPeerConnection({ iceServers: [] });
      publisher.addEventListener("connectionstatechange", updateState);
      for (const track of media.getTracks()) publisher.addTransceiver(track, { direction: "sendonly" });
      const base = `/whip/${encodeURIComponent(meeting)}`;
      whipUrl = await negotiate(publisher, base);
      roomgate.whipId = whipUrl.split("/").pop();

      setState("subscribing");
      subscriber = new RTCPeerConnection({ iceServers: [] });
      subscriber.addEventListener("connectionstatechange", updateState);
      subscriber.addTransceiver("audio", { direction: "recvonly" });
      subscriber.addTransceiver("video", { direction: "recvonly" });
      subscriber.addEventListener("track", (event) => {
        const target = event.track.kind === "audio" ? el.remoteAudio : el.remoteVideo;
        target.srcObject = new MediaStream([event.track]);
        play(target);
      });
      const exclude = encodeURIComponent(roomgate.whipId);
      whepUrl = await negotiate(subscriber, `/whep/${encodeURIComponent(meeting)}?exclude=${exclude}`);
      roomgate.whepId = whepUrl.split("/").pop();

      el.leave.disabled = false;
      updateState();
    } catch (err) {
      showError(err);
      await leave();
      setState("failed");
    }
  }

  async function leave() {
    el.leave.disabled = true;
    const urls = [whepUrl, whipUrl].filter(Boolean);
    whipUrl = whepUrl = null;
    // DELETE before closing: a closed connection also ends the resource, and the DELETE would then 404.
    await Promise.all(urls.map((url) =>
      fetch(url, { method: "DELETE", keepalive: true }).catch((err) => console.warn("DELETE failed", err))));
    for (const pc of [subscriber, publisher]) if (pc) pc.close();
    publisher = subscriber = null;
    if (media) media.getTracks().forEach((track) => track.stop());
    media = null;
    el.localVideo.srcObject = el.remoteVideo.srcObject = el.remoteAudio.srcObject = null;
    roomgate.whipId = roomgate.whepId = null;
    setState("left");
    el.join.hidden = false;
  }

  // Totals over the subscriber's audio inbound-rtp entries (one per audio m-line; we have one).
  async function subscriberStats() {
    const result = { audioBytesReceived: 0, audioPacketsReceived: 0, audioLevel: 0 };
    if (!subscriber) return result;
    const report = await subscriber.getStats();
    report.forEach((entry) => {
      if (entry.type !== "inbound-rtp" || (entry.kind || entry.mediaType) !== "audio") return;
      result.audioBytesReceived += entry.bytesReceived || 0;
      result.audioPacketsReceived += entry.packetsReceived || 0;
      if (typeof entry.audioLevel === "number") result.audioLevel = Math.max(result.audioLevel, entry.audioLevel);
    });
    return result;
  }

  async function renderStats() {
    // Audio-only participants (SIP phones) send no picture: say so rather than show a bare black box.
    el.remoteVideoNote.textContent = subscriber && el.remoteVideo.videoWidth === 0 ? ": no video, audio only" : "";
    try {
      const stats = await subscriberStats();
      el.stats.textContent = JSON.stringify({ state: roomgate.state, ...stats }, null, 2);
    } catch (err) {
      el.stats.textContent = `stats unavailable: ${err}`;
    }
  }

  // One list item per publisher: name, what it is, and its lock or warning (text, not colour alone).
  function renderParticipants(list) {
    const items = list.map((p) => {
      const li = document.createElement("li");
      const secure = p.encrypted_to_gateway === true;
      li.className = secure ? "enc-ok" : "enc-plain";
      li.dataset.encryption = p.encryption;
      li.dataset.leg = p.leg;
      const icon = document.createElement("span");
      icon.className = "enc-icon";
      icon.setAttribute("aria-hidden", "true");
      // Drawn by meeting.css (an SVG), so it shows without an emoji font; the text says it too.
      icon.classList.add(secure ? "enc-icon-lock" : "enc-icon-warning");
      const name = document.createElement("strong");
      name.textContent = p.name;
      const what = document.createElement("span");
      what.className = "enc-leg";
      what.textContent = p.leg === "webrtc" ? " (browser)" : ` (${p.leg.toUpperCase()} room system, ${p.encryption})`;
      const note = document.createElement("span");
      note.className = "enc-text";
      note.textContent = ` \u2014 ${secure ? ENCRYPTED_TEXT : PLAIN_TEXT}`;
      li.append(icon, " ", name, what, note);
      return li;
    });
    el.participants.replaceChildren(...items);
  }

  async function refreshParticipants() {
    try {
      const response = await fetch(`/m/${encodeURIComponent(meeting)}/participants`, { cache: "no-store" });
      if (!response.ok) return;
      const body = await response.json();
      roomgate.participants = body.participants || [];
      renderParticipants(roomgate.participants);
    } catch (err) {
      console.warn("roster unavailable", err);
    }
  }

  el.meeting.textContent = meeting;
  el.join.addEventListener("click", join);
  el.leave.addEventListener("click", leave);
  el.unmute.addEventListener("click", () => {
    el.unmute.hidden = true;
    play(el.remoteAudio);
    play(el.remoteVideo);
  });
  // Leaving the page leaves the meeting (keepalive lets the DELETEs outlive the page).
  window.addEventListener("pagehide", () => { if (whipUrl || whepUrl) leave(); });
  setInterval(renderStats, 1000);
  renderStats();
  setInterval(refreshParticipants, 1000);
  refreshParticipants();

  if (new URLSearchParams(location.search).get("autojoin") === "0") {
    el.join.hidden = false;
  } else {
    join();
  }
})();
