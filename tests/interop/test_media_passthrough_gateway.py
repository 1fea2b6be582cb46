"""``media.passthrough: auto`` end to end: a real pjsua2 caller (PCMU) and an aiortc participant
meet through the gateway process and its embedded core, and the call takes the G.711 fast path.

Measured: the tone each way by FFT (pjsua plays 1 kHz and records; the participant sends 440 Hz
and records), the WebRTC leg's ``bridge.leg.up`` event says ``path=passthrough``, and the
gateway's ``bridge.session.closed`` shows no WebRTC-side frames decoded (``webrtc_in=0``).
Needs the wiring of ``media.passthrough`` from the call controllers to ``MediaSession``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from bridge.ice import use_host_addresses
from tests.interop.test_bridge_webrtc_leg import MEETING, WebPeer
from tests.support.audio import assert_tone, read_wav, tone, write_wav
from tests.support.core_server import loop_and_reactor, run
from tests.support.gateway_process import running_gateway
from tests.support.pjsua import run_pjsua_call

pytestmark = pytest.mark.interop


def test_pjsua_caller_and_webrtc_participant_over_the_fast_path(tmp_path: Path) -> None:
    play, record = write_wav(tmp_path / "1k.wav", tone(1000, 2.0)), tmp_path / "heard.wav"
    _, reactor = loop_and_reactor()
    use_host_addresses(["127.0.0.1"])  # the participant's ICE on loopback only
    with running_gateway(tmp_path / "gw", config={"media": {"passthrough": "auto"}}) as gw:
        async def scenario() -> WebPeer:
            peer = WebPeer(gw.http_url, reactor, frequency=440)
            await peer.join()
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(None, lambda: run_pjsua_call(
                gw.sip_uri(MEETING), codec="PCMU", play_wav=play, record_wav=record, seconds=5.0,
                log_file=tmp_path / "pjsua.log"))
            assert result.connected, result
            await peer.leave()
            return peer

        peer = run(scenario(), timeout=90)
        up = gw.wait_for_event("bridge.leg.up", timeout=10, leg="webrtc")
        closed = gw.wait_for_event("bridge.session.closed", timeout=10)
    heard_by_peer = assert_tone(np.concatenate(peer.heard), 48000, 1000, min_dbfs=-35, skip_seconds=1.5)
    samples, rate = read_wav(record)
    heard_by_caller = assert_tone(samples, rate, 440, min_dbfs=-35, skip_seconds=1.5)
    print(f"peer hears {heard_by_peer.peak_hz:.0f} Hz at {heard_by_peer.rms_dbfs:.1f} dBFS; caller hears "
          f"{heard_by_caller.peak_hz:.0f} Hz at {heard_by_caller.rms_dbfs:.1f} dBFS; {up}; {closed}")
    assert up["path"] == "passthrough"
    assert closed["webrtc_in"] == 0 and closed["webrtc_out"] == 0 and closed["legacy_in"] > 100
