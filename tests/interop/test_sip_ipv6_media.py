"""IPv6 media on loopback: ``media.address: "::1"``.  The gateway binds its RTP on ::1, answers
``c=IN IP6 ::1``, latches the caller's ::1 source and sends back to it, while SIP stays on
127.0.0.1 and the WebRTC side on 127.0.0.1.

The bundled pjsua2 is built without IPv6 (``pjsua_acc_add`` asserts ``ipv6_media_use ==
PJSUA_IPV6_DISABLED``), so the caller here is the test UAC (tests/support/sip_uac.py) with an
RTP socket of its own on ::1 that sends a 1 kHz PCMU tone (stdlib ``audioop`` encodes it) and
records what comes back; an aiortc participant publishes 440 Hz.  Both sides are measured by FFT.
"""

from __future__ import annotations

import asyncio
import audioop
import os
import socket
import struct
import time
from collections.abc import Iterator

import numpy as np
import pytest

from bridge.ice import use_host_addresses
from tests.interop.test_walking_skeleton import (
    BROWSER_HZ,
    CALLER_HZ,
    run_on_private_loop,
)
from tests.support.audio import assert_tone, tone
from tests.support.gateway_process import GatewayProcess, running_gateway
from tests.support.sip_uac import SipUac, offer_sdp
from tests.support.webrtc_client import ToneTrack, publish, subscribe

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def gw6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {"media": {"address": "::1"}, "webrtc": {"ice_addresses": ["127.0.0.1"]}}
    with running_gateway(tmp_path_factory.mktemp("ipv6-media"), config=config) as gateway:
        yield gateway


def rtp_exchange(sock: socket.socket, dest: tuple[str, int], seconds: float) -> tuple[bytes, int, int]:
    """Send ``seconds`` of 1 kHz PCMU (PT 0, 20 ms packets) to ``dest`` from ``sock`` and collect
    the payloads that come back; returns (mu-law bytes received, packets sent, packets received)."""
    pcm = (tone(CALLER_HZ, seconds, rate=8000) * 32767).astype("<i2").tobytes()
    ssrc, seq, ts = struct.unpack("!IHI", os.urandom(10))
    sock.setblocking(False)
    received, got, sent = bytearray(), 0, 0
    start = time.monotonic()
    for n in range(int(seconds * 50)):
        header = struct.pack("!BBHII", 0x80, 0, (seq + n) & 0xFFFF, (ts + 160 * n) & 0xFFFFFFFF, ssrc)
        sock.sendto(header + audioop.lin2ulaw(pcm[n * 320:(n + 1) * 320], 2), dest)
        sent += 1
        while True:
            try:
                data = sock.recv(2048)
            except BlockingIOError:
                break
            if len(data) > 12 and data[1] & 0x7F == 0:
                received += data[12:]
                got += 1
        time.sleep(max(0.0, start + (n + 1) * 0.02 - time.monotonic()))
    return bytes(received), sent, got


async def ipv6_call(gw: GatewayProcess, meeting: str) -> tuple[np.ndarray, np.ndarray, str, int, int]:
    use_host_addresses(["127.0.0.1"])
    publisher = await publish(gw.http_url, meeting, audio=ToneTrack.sine(BROWSER_HZ))
    subscriber = await subscribe(gw.http_url, meeting, exclude=publisher.participant_id, video=False)
    rtp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    rtp.bind(("::1", 0))
    uac = await SipUac.create(local_host="127.0.0.1")
    try:
        sdp = offer_sdp("::1", rtp.getsockname()[1], (0,)).replace("IN IP4 ::1", "IN IP6 ::1")
        call = await uac.invite(gw.sip_uri(meeting), sdp)
        answer = str(call.answer_sdp)
        dest = ("::1", call.answer_sdp.media[0].port)
        loop = asyncio.get_running_loop()
        exchange = loop.run_in_executor(None, rtp_exchange, rtp, dest, 5.0)
        await asyncio.sleep(1.5)
        heard = await subscriber.record(2.5)
        back, sent, got = await exchange
        await call.bye()
    finally:
        await uac.close()
        rtp.close()
        await subscriber.close()
        await publisher.close()
    caller_heard = np.frombuffer(audioop.ulaw2lin(back, 2), dtype="<i2")
    return heard, caller_heard, answer, sent, got


def test_ipv6_media_tone_both_ways(gw6: GatewayProcess) -> None:
    heard, caller_heard, answer, sent, got = run_on_private_loop(ipv6_call(gw6, "6001"))
    print(f"\nIPv6 media: {sent} RTP packets sent from [::1], {got} received on [::1]")
    assert "c=IN IP6 ::1" in answer and "o=roomgate" in answer, answer
    assert_tone(heard, 48000, CALLER_HZ, min_dbfs=-35, skip_seconds=0.2)
    spectrum = assert_tone(caller_heard, 8000, BROWSER_HZ, min_dbfs=-35, skip_seconds=1.5)
    assert spectrum.level_at(CALLER_HZ) < -30, "the caller hears its own tone back"
    latched = gw6.wait_for_event("bridge.rtp.latched", timeout=10)
    assert latched["sdp_ip_matches"] is True, latched
    done = gw6.wait_for_event("bridge.session.closed", timeout=15, meeting="6001")
    assert done["legacy_in"] > 100 and done["legacy_out"] > 100 and done["legacy_dropped"] == 0, done

