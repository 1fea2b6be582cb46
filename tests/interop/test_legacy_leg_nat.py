"""Symmetric RTP (RFC 4961 3) on the legacy leg: a caller behind NAT whose SDP names an address
it cannot receive on still gets two-way audio, because the leg latches to the first accepted
(for SRTP: authenticated, RFC 3711 3.3) source and sends back there."""

from __future__ import annotations

import asyncio
import os
import socket

import numpy as np
import pytest

from bridge.codecs import PCMU
from bridge.legacy_leg import LegacyAudioLeg
from bridge.ports import PortAllocator
from bridge.rtp import RtpPacket
from bridge.srtp import SUITES, SdesSrtp
from tests.support.audio import assert_tone, tone


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def _drain(sock: socket.socket) -> list[bytes]:
    out: list[bytes] = []
    while True:
        try:
            out.append(sock.recv(2048))
        except BlockingIOError:
            return out


async def _call(sdp_address: str, sdp_port: int, srtp: bool) -> dict[str, object]:
    allocator = PortAllocator(42000, 42999, address="127.0.0.1")
    peer, intruder = _udp(), _udp()
    leg_srtp = peer_srtp = None
    if srtp:
        suite = "AES_CM_128_HMAC_SHA1_80"
        a, b = os.urandom(SUITES[suite][1]), os.urandom(SUITES[suite][1])
        leg_srtp = SdesSrtp(suite, remote_key=b, local_key=a)
        peer_srtp = SdesSrtp(suite, remote_key=a, local_key=b)
    received: list[np.ndarray] = []
    leg = LegacyAudioLeg(lease=allocator.allocate(), codec=PCMU, payload_type=0,
                         remote_address=sdp_address, remote_port=sdp_port,
                         on_audio=received.append, srtp=leg_srtp)
    await leg.start()
    target = ("127.0.0.1", leg.local_port)
    enc, caller, meeting = PCMU.encoder(), tone(1000, 1.0), tone(440, 1.2)
    heard: list[bytes] = []
    for i in range(50):
        pkt = bytes(RtpPacket(0, 100 + i, 160 * i, 0x4242, enc.encode(caller[i * 160:(i + 1) * 160])))
        if peer_srtp is not None:
            # An intruder racing the caller with unauthenticated packets must not latch.
            intruder.sendto(pkt, target)
            await asyncio.sleep(0.001)
            pkt = peer_srtp.protect(pkt)
        peer.sendto(pkt, target)
        leg.push_audio(meeting[i * 160:(i + 1) * 160])
        await asyncio.sleep(0.02)
        heard += _drain(peer)
    await asyncio.sleep(0.1)
    heard += _drain(peer)
    stats = leg.stats()
    leg.close()
    intruder_heard = _drain(intruder)
    peer_port = peer.getsockname()[1]
    peer.close()
    intruder.close()
    pcm_out = []
    dec = PCMU.decoder()
    for d in heard:
        if peer_srtp is not None:
            d = peer_srtp.unprotect(d)
        pcm_out.append(dec.decode(RtpPacket.parse(d).payload))
    return {"stats": stats, "received": received, "heard": pcm_out, "peer_port": peer_port,
            "intruder_heard": intruder_heard}


@pytest.mark.parametrize(("sdp_address", "srtp"), [
    ("127.0.0.1", False),   # plain RTP: right IP, wrong port (a NAT rewrote the port)
    ("192.0.2.99", True),   # SRTP: the SDP names a private/unreachable IP altogether
])
def test_wrong_sdp_address_still_gets_two_way_audio(sdp_address: str, srtp: bool) -> None:
    loop = asyncio.new_event_loop()
    try:
        r = loop.run_until_complete(_call(sdp_address, 9, srtp))  # port 9: discard, never ours
    finally:
        loop.close()
    stats: dict = r["stats"]  # type: ignore[assignment]
    assert stats["packets_in"] == 50 and stats["latched"]
    assert_tone(np.concatenate(r["received"]), 8000, 1000)  # type: ignore[arg-type]
    heard = r["heard"]
    assert len(heard) >= 40  # type: ignore[arg-type]
    assert_tone(np.concatenate(heard[-30:]), 8000, 440, skip_seconds=0.1)  # type: ignore[arg-type]
    assert r["intruder_heard"] == []
    if srtp:
        # Before the latch the intruder fails authentication; after it, it is the wrong source.
        assert stats["dropped_srtp_auth"] >= 1
        assert stats["dropped_srtp_auth"] + stats["dropped_wrong_source"] == 50
