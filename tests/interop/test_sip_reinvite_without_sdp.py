"""A re-INVITE without SDP against the real gateway process (RFC 3261 14.2; CUCM on transfer).

Caller A (tests/support/sip_uac.py) and caller B join one meeting and send G.711 tones.  A then
sends a re-INVITE without SDP: the gateway's 2xx must offer its current SDP (same RTP port,
``sendrecv``), and A's ACK answers with a *new* RTP socket A2 (another tone), as a transfer
moves the media (A's socket stops first, as a transferred phone's does).  The gateway must
re-target the legacy leg: B hears A2's tone and A2 hears B's, measured by FFT, and the call is
not ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from bench.callmedia import CallAudio
from sip.sdp import SessionDescription
from tests.interop.test_walking_skeleton import run_on_private_loop
from tests.support.audio import analyse, assert_tone
from tests.support.gateway_process import GatewayProcess
from tests.support.sip_uac import SipUac, offer_sdp

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"
TONE_A, TONE_A2, TONE_B = 700.0, 1000.0, 1500.0


def _since(audio: CallAudio, t0: float) -> np.ndarray:
    rx = audio.received
    kept = [pcm for at, pcm in zip(rx.arrivals, rx.pcm, strict=True) if at >= t0]
    return np.concatenate(kept) if kept else np.zeros(0, dtype=np.int16)


async def _transfer_media(gw: GatewayProcess) -> dict[str, object]:
    uac = await SipUac.create(local_host=HOST)
    a, port_a = await CallAudio.bind(HOST, tone_hz=TONE_A, burst_ms=800, period_ms=1000, codes=1)
    a2, port_a2 = await CallAudio.bind(HOST, tone_hz=TONE_A2, burst_ms=800, period_ms=1000, codes=1)
    b, port_b = await CallAudio.bind(HOST, tone_hz=TONE_B, burst_ms=800, period_ms=1000, codes=1)
    loop = asyncio.get_running_loop()
    try:
        call_a = await uac.invite(gw.sip_uri("1000"), offer_sdp(HOST, port_a, (0,)), timeout=20)
        call_b = await uac.invite(gw.sip_uri("1000"), offer_sdp(HOST, port_b, (0,)), timeout=20)
        gw_port_a = call_a.answer_sdp.media[0].port
        a.start((HOST, gw_port_a))
        b.start((HOST, call_b.answer_sdp.media[0].port))
        await asyncio.sleep(3.0)
        offers: list[SessionDescription] = []

        def answer(offer: SessionDescription) -> str:
            offers.append(offer)
            return offer_sdp(HOST, port_a2, (0,), session_id=99)

        # The old socket goes quiet first: plain RTP latches on the first packet from the SDP's
        # IP, any port (NAT), so a stale packet from A after the ACK could take the latch.
        await a.stop()
        await asyncio.sleep(0.3)
        await call_a.reinvite_without_sdp(answer, timeout=10)
        a2.start((HOST, offers[0].media[0].port))
        switched = loop.time()
        await asyncio.sleep(5.0)
        ended_early = call_a.ended.done()
        await call_a.bye()
        await call_b.bye()
        return {"offer": offers[0], "gw_port_a": gw_port_a, "b_after": _since(b, switched + 1.5),
                "a2_heard": a2.audio(), "a2_sent": a2.packets_sent, "ended_early": ended_early}
    finally:
        for audio in (a, a2, b):
            await audio.stop()
        await uac.close()


def test_bodiless_reinvite_moves_the_media_and_the_tone_continues(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    gw = gateway_factory()
    out = run_on_private_loop(_transfer_media(gw), timeout=90)
    offer = out["offer"]
    assert isinstance(offer, SessionDescription)
    m = offer.media[0]
    print(f"gateway offer: port {m.port} direction {m.direction} version {offer.origin.session_version}")
    assert m.port == out["gw_port_a"] and m.direction == "sendrecv" and m.formats[0] == "0"
    assert out["ended_early"] is False
    taken = gw.wait_for_event("call.reoffer_answer_taken", timeout=10)
    assert taken["codec"] == "PCMU"
    b_after, a2_heard = out["b_after"], out["a2_heard"]
    assert isinstance(b_after, np.ndarray) and isinstance(a2_heard, np.ndarray)
    # B hears the new socket's tone (not the old one's): the gateway latched on A2.
    spec_b = assert_tone(b_after, 8000, TONE_A2, min_dbfs=-45, skip_seconds=0.0)
    # A2 hears B: the gateway now sends to the port the ACK's answer named.
    spec_a2 = assert_tone(a2_heard, 8000, TONE_B, min_dbfs=-45, skip_seconds=1.0)
    print(f"B after the re-INVITE: peak {spec_b.peak_hz:.0f} Hz {spec_b.rms_dbfs:.1f} dBFS, "
          f"old tone {spec_b.level_at(TONE_A):.1f} dB; A2 hears {spec_a2.peak_hz:.0f} Hz "
          f"{spec_a2.rms_dbfs:.1f} dBFS ({len(a2_heard)} samples, sent {out['a2_sent']} packets)")
    assert spec_b.level_at(TONE_A) < -20
    assert analyse(a2_heard, 8000).level_at(TONE_A2) < -20  # not its own tone back
