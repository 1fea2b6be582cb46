"""baresip 1.0.0 (Debian ``baresip-core``) dials in with no encryption and with ``srtp-mand``
(RFC 4568 SDES, RTP/SAVP); the tone test passes both ways: the WHEP side hears baresip's
1 kHz, baresip hears the WebRTC participant's 440 Hz and not itself.  The same with Opus
(RFC 7587) into a meeting whose policy lists ``audio_codecs: [OPUS, PCMU]``: baresip offers
only opus/48000/2 and the call's log says codec OPUS."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.ice import use_host_addresses
from tests.interop.test_walking_skeleton import (
    BROWSER_HZ,
    CALLER_HZ,
    run_on_private_loop,
)
from tests.support.audio import assert_tone, tone, write_wav
from tests.support.baresip import BaresipResult, run_baresip_call, write_stereo_wav
from tests.support.gateway_process import GatewayProcess
from tests.support.webrtc_client import ToneTrack, publish, subscribe


async def _baresip_with_webrtc_peer(gw: GatewayProcess, tmp_path: Path, mediaenc: str | None,
                                    codec: str = "PCMU") -> tuple[BaresipResult, object]:
    use_host_addresses(["127.0.0.1"])
    if codec == "opus":  # baresip's aufile gives Opus no source from a mono file
        wav = write_stereo_wav(tmp_path / "baresip-caller.wav", tone(CALLER_HZ, 12.0, rate=48000))
    else:
        wav = write_wav(tmp_path / "baresip-caller.wav", tone(CALLER_HZ, 12.0, rate=8000), rate=8000)
    publisher = await publish(gw.http_url, "1000", audio=ToneTrack.sine(BROWSER_HZ))
    subscriber = await subscribe(gw.http_url, "1000", exclude=publisher.participant_id, video=False)
    loop = asyncio.get_running_loop()
    try:
        call = loop.run_in_executor(None, lambda: run_baresip_call(
            gw.sip_uri("1000"), tmp_path, play_wav=wav, seconds=7, mediaenc=mediaenc, codec=codec))
        await loop.run_in_executor(None, lambda: gw.wait_for_event("call.answered", timeout=30,
                                                                   meeting="1000"))
        await asyncio.sleep(0.5)
        heard = await subscriber.record(2.5)
        result = await call
    finally:
        await subscriber.close()
        await publisher.close()
    return result, heard


@pytest.mark.parametrize("mediaenc", [None, "srtp-mand"])
def test_baresip_tone_both_ways(gateway_factory: Callable[..., GatewayProcess], tmp_path: Path,
                                mediaenc: str | None) -> None:
    gw = gateway_factory()
    result, heard = run_on_private_loop(_baresip_with_webrtc_peer(gw, tmp_path, mediaenc))
    assert result.returncode == 0 and result.established, result.output[-2000:]
    assert_tone(heard, 48000, CALLER_HZ, min_dbfs=-35, skip_seconds=0.2)  # type: ignore[arg-type]
    samples, rate = result.recording()
    spectrum = assert_tone(samples, rate, BROWSER_HZ, min_dbfs=-35, skip_seconds=2.0)
    assert spectrum.level_at(CALLER_HZ) < -30, "baresip hears its own tone back"
    admitted = gw.events("call.admitted")
    want = "sdes-srtp" if mediaenc else "plain"
    assert [e.get("legacy_encryption") for e in admitted][-1:] == [want], admitted


def test_baresip_opus_tone_both_ways(gateway_factory: Callable[..., GatewayProcess],
                                     tmp_path: Path) -> None:
    gw = gateway_factory(policy={"meetings": {"1000": {"audio_codecs": ["OPUS", "PCMU"]}}})
    result, heard = run_on_private_loop(_baresip_with_webrtc_peer(gw, tmp_path, None, "opus"))
    assert result.returncode == 0 and result.established, result.output[-2000:]
    up = assert_tone(heard, 48000, CALLER_HZ, min_dbfs=-35, skip_seconds=0.2)  # type: ignore[arg-type]
    samples, rate = result.recording()
    down = assert_tone(samples, rate, BROWSER_HZ, min_dbfs=-35, skip_seconds=2.0)
    print(f"opus: WHEP hears {up.peak_hz:.0f} Hz {up.rms_dbfs:.1f} dBFS; baresip hears "
          f"{down.peak_hz:.0f} Hz {down.rms_dbfs:.1f} dBFS at {rate} Hz")
    assert down.level_at(CALLER_HZ) < -30, "baresip hears its own tone back"
    assert [e.get("codec") for e in gw.events("call.admitted")][-1:] == ["OPUS"]
    closed = gw.wait_for_event("bridge.session.closed", timeout=15, meeting="1000")
    assert closed.get("codec") == "OPUS", closed
