"""The G.711 fast path (bridge.fastpath, ``media.passthrough: auto``) against the real embedded core.

A plain-RTP legacy endpoint (PCMU or PCMA, 1 kHz) and an aiortc participant (440 Hz, the way the
meeting page joins) meet in the core through a MediaSession that relays packets undecoded:

    endpoint 1 kHz -> relay -> WHIP sender (aiortc's SRTP) -> core mix -> participant hears 1 kHz
    participant 440 Hz -> core mix (G.711 for our WHEP) -> relay -> endpoint hears 440 Hz

Measured, not assumed: both tones by FFT; the session's stats say ``path=passthrough`` with zero
decode work; tshark sees the WebRTC side carry RTP headers of the G.711 payload type whose
payloads are not the endpoint's G.711 bytes (they are SRTP-encrypted).
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.ports import PortAllocator
from bridge.session import MediaSession
from bridge.srtp import SdesSrtp
from tests.interop.test_bridge_webrtc_leg import LegacyEndpoint, WebPeer, session_args
from tests.support.audio import assert_tone
from tests.support.core_server import core_server, loop_and_reactor, run
from tests.support.tshark import capture, decode

pytestmark = pytest.mark.interop


SUITE = "AES_CM_128_HMAC_SHA1_80"


class SrtpSocket:
    """The endpoint's socket under SDES: what it sends is protected, what it receives unprotected
    (so :class:`LegacyEndpoint` talks and listens unchanged)."""

    def __init__(self, sock: socket.socket, srtp: SdesSrtp) -> None:
        self._sock, self._srtp = sock, srtp

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        return self._sock.sendto(self._srtp.protect(data), address)

    def recv(self, size: int) -> bytes:
        return self._srtp.unprotect(self._sock.recv(size))  # an auth failure fails the test


def _ice_ports(session: MediaSession) -> set[int]:
    """The UDP ports our two peer connections' ICE gathered (the WebRTC side of the wire)."""
    ports: set[int] = set()
    for pc in (session.webrtc._pub, session.webrtc._sub):
        assert pc is not None
        for t in pc.getTransceivers():
            gatherer = t.sender.transport.transport.iceGatherer
            ports.update(c.port for c in gatherer.getLocalCandidates())
    return ports


@pytest.mark.parametrize(("encoding", "sdes"), [("PCMU", False), ("PCMA", False), ("PCMU", True)],
                         ids=["PCMU", "PCMA", "PCMU-sdes"])
def test_passthrough_tone_both_ways_over_srtp(encoding: str, sdes: bool, tmp_path: Path) -> None:
    _, reactor = loop_and_reactor()
    pcap = tmp_path / "webrtc-side.pcapng"

    async def scenario() -> dict[str, Any]:
        async with core_server() as server:
            peer = WebPeer(server.base_url, reactor, frequency=440)
            await peer.join()
            endpoint = LegacyEndpoint(encoding, frequency=1000)
            keys: dict[str, Any] = {}
            if sdes:  # the leg is SDES-SRTP: the relay's packets must be protected toward the caller
                ours, theirs = os.urandom(30), os.urandom(30)
                endpoint.sock = SrtpSocket(endpoint.sock, SdesSrtp(SUITE, remote_key=ours, local_key=theirs))  # type: ignore[assignment]
                keys = {"srtp_suite": SUITE, "srtp_remote_key": theirs, "srtp_local_key": ours}
            allocator = PortAllocator(44000, 44999, address="127.0.0.1")
            session = MediaSession.allocate(**session_args(server.base_url, reactor, endpoint, allocator),
                                            passthrough="auto", **keys)
            await session.start()
            ice = _ice_ports(session)
            peer.heard.clear()
            await endpoint.talk(session.local_port, seconds=3.0)
            for _ in range(100):  # let the loop read the last datagrams
                if session.stats()["legacy"]["packets_in"] >= 150:
                    break
                await asyncio.sleep(0.02)
            stats = session.stats()
            await session.close()
            await peer.leave()
            return {"peer": peer, "endpoint": endpoint, "stats": stats, "ice": ice}

    with capture("udp", pcap):
        r = run(scenario(), timeout=60)
    stats, peer, endpoint = r["stats"], r["peer"], r["endpoint"]

    heard_by_peer = np.concatenate(peer.heard)
    to_peer = assert_tone(heard_by_peer, 48000, 1000, min_dbfs=-35, skip_seconds=1.0)
    heard_by_endpoint = endpoint.heard()
    spectrum = assert_tone(heard_by_endpoint, 8000, 440, min_dbfs=-35, skip_seconds=1.0)
    assert spectrum.level_at(1000) < -20, "the caller hears itself"

    relay = stats["passthrough"]
    print(f"[{encoding}{'-sdes' if sdes else ''}] peer hears {to_peer.peak_hz:.0f} Hz at {to_peer.rms_dbfs:.1f} dBFS; endpoint hears "
          f"{spectrum.peak_hz:.0f} Hz at {spectrum.rms_dbfs:.1f} dBFS; relay {relay}; "
          f"legacy {stats['legacy']['packets_in']} in / {stats['legacy']['packets_out']} out")
    assert stats["path"] == "passthrough" and stats["webrtc"]["path"] == "passthrough"
    assert relay["decoded_frames"] == 0 and stats["webrtc"]["frames_in"] == 0
    assert relay["to_core"] == stats["legacy"]["packets_in"] == 150
    assert relay["send_errors"] == 0
    # aiortc counts none of the relayed packets; the WebRTC leg's figures come from the relays.
    webrtc_call = stats["call"]["webrtc"]
    assert webrtc_call["outbound"]["packets"] == relay["to_core"]
    assert webrtc_call["outbound"]["bytes"] == 160 * relay["to_core"]
    assert webrtc_call["inbound"]["packets"] >= relay["to_legacy"] > 100
    assert webrtc_call["codec"] == encoding
    assert stats["legacy"]["encryption"] == ("sdes-srtp" if sdes else "plain")
    # Everything the endpoint received came from the relay (the 20 ms clock never sent).
    assert relay["to_legacy"] == stats["legacy"]["packets_out"] == len(endpoint.received) > 100

    # The wire, WebRTC side: RTP headers of the G.711 payload type, payloads not the endpoint's bytes.
    codec = endpoint.codec
    frame = bytes(codec.encoder().encode(endpoint.signal[:160]))  # 1 kHz at 8 kHz: every frame alike
    port_filter = " or ".join(f"udp.port == {p}" for p in sorted(r["ice"]))
    rows = decode(pcap, f"rtp and ({port_filter})", ["rtp.p_type", "rtp.payload"], rtp_heuristic=True)
    g711 = [row for row in rows if row["rtp.p_type"] == str(codec.payload_type)]
    print(f"[{encoding}] WebRTC-side RTP packets seen by tshark: {len(rows)}, with PT {codec.payload_type}: "
          f"{len(g711)}")
    assert len(g711) >= 100, "tshark saw no G.711 RTP on the WebRTC side"
    plain = frame.hex()
    assert not [row for row in g711 if plain in row["rtp.payload"].replace(":", "")], \
        "plain G.711 payloads on the WebRTC side: not SRTP"
