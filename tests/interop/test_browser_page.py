"""Walking skeleton, acceptance: a browser on the meeting page and a SIP caller hear each other.

Headless Chromium opens ``/m/<meeting>`` with a fake microphone playing 440 Hz; a real pjsua
dials the same meeting sending 1 kHz. The page's WHEP feed (recorded in the page) must carry
the 1 kHz tone and its own stats must count audio bytes; pjsua's recording must carry 440 Hz.

Chromium also gathers the machine's other addresses (e.g. eth0's) and may send its ICE checks
from there to the gateway's 127.0.0.1 candidate; the gateway's ICE answers them as
peer-reflexive, which this test covers because it does not filter the page's candidates.
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import pytest

from tests.support.audio import analyse, assert_tone, tone, write_wav
from tests.support.chromium import (
    CHROMIUM,
    audio_stats,
    chromium_available,
    launch_chromium,
    record_remote_audio,
)
from tests.support.pjsua import run_pjsua_call

pytestmark = pytest.mark.interop

MEETING = "4242"
CALL_SECONDS = 6.0
PAGE_TIMEOUT_MS = 45_000
REMOTE_AUDIO = "document.getElementById('remote-audio').srcObject"
# Test-side instrumentation, run before the page's own script (Playwright init scripts are not
# subject to the page's CSP): keep every RTCPeerConnection the page makes, to read its ICE pair.
KEEP_PEER_CONNECTIONS = """
(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); window.__pcs.push(this); }
  };
})();
"""


def _wait_page_state(page, want: str, timeout_ms: float = PAGE_TIMEOUT_MS) -> None:
    try:
        # A function, not an expression: the page's CSP (script-src 'self') forbids the eval that
        # Playwright uses for expression predicates.
        page.wait_for_function(f"() => window.roomgate && window.roomgate.state === {want!r}",
                               timeout=timeout_ms)
    except Exception as exc:  # playwright TimeoutError: say what the page shows instead
        state = page.evaluate("window.roomgate ? window.roomgate.state : '(no window.roomgate)'")
        error = page.evaluate("document.getElementById('error')?.textContent || ''")
        raise AssertionError(f"page never reached state {want!r}: state {state!r}, error {error!r}") from exc


def _wait_bytes_received_grow(page, timeout: float = 30.0) -> dict:
    """Poll the page's own stats until the WHEP feed's audio byte counter moves (the caller's audio)."""
    first = page.evaluate("window.roomgate.stats()")
    deadline = time.monotonic() + timeout
    while True:
        page.wait_for_timeout(250)
        now = page.evaluate("window.roomgate.stats()")
        if now["audioBytesReceived"] > first["audioBytesReceived"]:
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"the page's audio byte counter never moved: {first} -> {now}")


def test_browser_page_and_sip_caller_hear_each_other(gateway_factory, tmp_path: Path) -> None:
    assert chromium_available(), f"Chromium not found at {CHROMIUM} (make test installs Debian's chromium)"
    gw = gateway_factory()
    mic_wav = write_wav(tmp_path / "browser_mic_440.wav", tone(440, 2.0, rate=48000), rate=48000)
    caller_wav = write_wav(tmp_path / "caller_1000.wav", tone(1000, 2.0))
    caller_rec = tmp_path / "caller_heard.wav"

    with launch_chromium(fake_audio_wav=mic_wav) as browser, \
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        page = browser.new_page()
        page.add_init_script(KEEP_PEER_CONNECTIONS)
        console: list[str] = []
        page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
        page.goto(gw.page_url(MEETING))
        _wait_page_state(page, "connected")
        gw.wait_for_event("core.participant.joined", timeout=10, meeting=MEETING, kind="whep")

        call = pool.submit(run_pjsua_call, gw.sip_uri(MEETING), codec="PCMU", play_wav=caller_wav,
                           record_wav=caller_rec, seconds=CALL_SECONDS, timeout=30.0)
        try:
            gw.wait_for_event("bridge.leg.up", timeout=30, leg="webrtc")
            _wait_bytes_received_grow(page)
            # Record while the call is up (the call lasts CALL_SECONDS from its answer).
            samples, rate = record_remote_audio(page, REMOTE_AUDIO, seconds=2.0)
            stats = page.evaluate("window.roomgate.stats()")
            publisher_ice = audio_stats(page, "window.__pcs[0]")
            subscriber_ice = audio_stats(page, "window.__pcs[1]")
            shot = tmp_path / "meeting_page_during_call.png"
            page.screenshot(path=str(shot), full_page=True)
            shown = page.evaluate("""() => ({
              state: document.getElementById('state').textContent,
              error: document.getElementById('error').hidden ? '' : document.getElementById('error').textContent,
              stats: document.getElementById('stats').textContent,
              remoteVideo: document.getElementById('remote-video').getBoundingClientRect().toJSON(),
              localVideo: document.getElementById('local-video').getBoundingClientRect().toJSON(),
              localVideoWidth: document.getElementById('local-video').videoWidth,
              viewport: [innerWidth, innerHeight],
            })""")
            state_during_call = page.evaluate("window.roomgate.state")
        finally:
            result = call.result(timeout=CALL_SECONDS + 60)

    print("page stats", stats, "state", state_during_call)
    print("publisher ICE", publisher_ice)
    print("subscriber ICE", subscriber_ice)
    print("shown", shown, "screenshot", shot)
    print("pjsua", result.connected, result.final_status, result.rx_rtp_packets, result.tx_rtp_packets,
          result.codec, result.error)
    print("console", console)
    assert result.connected, f"pjsua not connected: {result.final_status} {result.reason} {result.error}"
    assert state_during_call == "connected"

    # What a person sees (screenshot saved above): the state, no error, live stats, the videos.
    assert shown["state"] == "connected" and not shown["error"], shown
    assert '"audioBytesReceived"' in shown["stats"], shown
    assert shown["localVideoWidth"] > 0, "the page does not show the local camera"
    assert shown["remoteVideo"]["width"] >= min(600, shown["viewport"][0] - 40), (
        f"the meeting's video is squeezed: {shown['remoteVideo']}")
    # Both connections really use ICE to the gateway's 127.0.0.1 candidate (Chromium may send
    # from another local address; the gateway then knows it as peer-reflexive).
    for ice in (publisher_ice, subscriber_ice):
        assert ice["pair_state"] == "succeeded", ice
        assert (ice["remote_candidate"] or "").startswith("127.0.0.1:"), ice

    # (a) SIP -> browser: the page's own stats count audio, and what it plays is the caller's 1 kHz.
    assert stats["audioBytesReceived"] > 0 and stats["audioPacketsReceived"] > 0, stats
    heard = analyse(samples, rate, skip_seconds=0.2)
    print(f"page heard {heard.peak_hz:.1f} Hz at {heard.rms_dbfs:.1f} dBFS "
          f"(440 Hz at {heard.level_at(440):.1f} dB rel.)")
    assert_tone(samples, rate, 1000, min_dbfs=-40, skip_seconds=0.2)
    assert heard.level_at(440) < -20, "the page hears its own microphone in the WHEP feed"

    # (b) browser -> SIP: pjsua's recording has the page's 440 Hz.
    rec, rec_rate = result.recording()
    got = analyse(rec, rec_rate, skip_seconds=1.0)
    print(f"caller heard {got.peak_hz:.1f} Hz at {got.rms_dbfs:.1f} dBFS")
    assert_tone(rec, rec_rate, 440, min_dbfs=-40, skip_seconds=1.0)
    assert got.level_at(1000) < -20, "the caller hears itself"
