"""The Chromium harness works here: fake devices, a WAV as the microphone, ICE over 127.0.0.1.

A tiny local page makes an RTCPeerConnection pair in-page (non-trickle, only 127.0.0.1
candidates kept, as the gateway will offer), sends getUserMedia audio through it, and the test
measures the tone that arrives on the receiving side and reads getStats.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.audio import assert_tone, tone, write_wav
from tests.support.chromium import (
    audio_stats,
    launch_chromium,
    record_remote_audio,
    serve_directory,
)

pytestmark = pytest.mark.interop

LOOPBACK_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>loopback</title></head><body>
<script>
function onlyLoopback(sdp) {
  // Keep 127.0.0.1 host candidates only: the gateway's ICE will be loopback-only in tests.
  return sdp.split('\\r\\n').filter(l => !l.startsWith('a=candidate:') || / 127\\.0\\.0\\.1 /.test(l)).join('\\r\\n');
}
async function complete(pc) {
  if (pc.iceGatheringState === 'complete') return;
  await new Promise(r => pc.addEventListener('icegatheringstatechange',
    () => pc.iceGatheringState === 'complete' && r()));
}
window.start = async () => {
  const mic = await navigator.mediaDevices.getUserMedia({audio: true, video: false});
  const a = new RTCPeerConnection(), b = new RTCPeerConnection();
  window.pcA = a; window.pcB = b;
  mic.getTracks().forEach(t => a.addTrack(t, mic));
  window.remoteStream = null;
  const gotTrack = new Promise(r => b.ontrack = ev => { window.remoteStream = ev.streams[0]; r(); });
  await a.setLocalDescription(await a.createOffer());
  await complete(a);
  const offer = onlyLoopback(a.localDescription.sdp);
  await b.setRemoteDescription({type: 'offer', sdp: offer});
  await b.setLocalDescription(await b.createAnswer());
  await complete(b);
  const answer = onlyLoopback(b.localDescription.sdp);
  await a.setRemoteDescription({type: 'answer', sdp: answer});
  await gotTrack;
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('ICE not connected: ' + b.iceConnectionState)), 15000);
    const check = () => { if (['connected', 'completed'].includes(b.iceConnectionState)) { clearTimeout(t); resolve(); } };
    b.addEventListener('iceconnectionstatechange', check); check();
  });
  return {
    micLabel: mic.getAudioTracks()[0].label,
    offerCandidates: offer.split('\\r\\n').filter(l => l.startsWith('a=candidate:')).length,
  };
};
</script></body></html>
"""


def test_chromium_loopback_peer_connection_carries_fake_microphone_tone(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "mic_660.wav", tone(660, 2.0, rate=48000), rate=48000)
    with serve_directory(pages={"/loopback.html": LOOPBACK_PAGE}) as base, \
            launch_chromium(fake_audio_wav=wav) as browser:
        page = browser.new_page()
        page.goto(f"{base}/loopback.html")
        info = page.evaluate("window.start()")
        assert info["offerCandidates"] >= 1, info  # Chromium gathered a 127.0.0.1 candidate
        samples, rate = record_remote_audio(page, "window.remoteStream", seconds=2.0)
        stats = audio_stats(page, "window.pcB")
        sent = audio_stats(page, "window.pcA")

    print("receiver", stats)
    print("sender", sent)
    # The receiver's end of the selected pair is its 127.0.0.1 host candidate (the only one it
    # signalled; Chromium gathers it thanks to --allow-loopback-in-peer-connection). The sender
    # may reach it from another local address of its own (on a machine with eth0 Chromium
    # prefers that host candidate, and Linux routes it to 127.0.0.1 over lo), which the
    # receiver then knows only as a peer-reflexive candidate with an empty address.
    assert stats["local_candidate"].startswith("127.0.0.1:"), stats
    assert stats["local_candidate"].endswith("/udp/host"), stats
    assert sent["remote_candidate"] == stats["local_candidate"], (sent, stats)
    assert sent["pair_state"] == "succeeded" and stats["pair_state"] == "succeeded"
    assert stats["codec"] == "audio/opus"
    assert stats["inbound_audio_packets"] > 50 and stats["inbound_audio_bytes"] > 1000, stats
    assert sent["outbound_audio_packets"] > 50, sent
    # What arrived is the WAV the fake microphone played, not the default beep.
    spectrum = assert_tone(samples, rate, 660, min_dbfs=-30, skip_seconds=0.2)
    print(f"received {spectrum.peak_hz:.1f} Hz at {spectrum.rms_dbfs:.1f} dBFS, rate {rate}")
    assert spectrum.level_at(1000) < -20
