"""A MediaSession joins a meeting of the real embedded core over HTTP (WHIP + WHEP, DTLS-SRTP on
127.0.0.1) next to another WebRTC participant, and audio crosses both ways:

    legacy endpoint (plain UDP socket, PCMU 1 kHz) -> session -> core mix -> other participant hears 1 kHz
    other participant (aiortc, 440 Hz)             -> core mix -> session -> legacy endpoint hears 440 Hz

Also: the session's resources leave the core on close(), the core refusing or being absent gives
typed errors, and the core removing us calls on_ended.
"""

from __future__ import annotations

import asyncio
import fractions
import socket
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from bridge.codecs import AUDIO_CODECS, downmix
from bridge.ice import rtc_configuration
from bridge.ports import PortAllocator
from bridge.rtp import RtpPacket
from bridge.session import MediaSession
from bridge.whip_client import CoreRefused, CoreUnreachable, WhipClient, WhipResource
from tests.support.audio import assert_tone, tone
from tests.support.core_server import core_server, loop_and_reactor, run

pytestmark = pytest.mark.interop

MEETING = "bridge-interop"


class ToneTrack(MediaStreamTrack):
    """A 48 kHz mono sine as 20 ms frames on a steady clock (what a browser's mic would send)."""

    kind = "audio"

    def __init__(self, frequency: float) -> None:
        super().__init__()
        self._signal = tone(frequency, 1.0, rate=48000)  # whole periods: loops seamlessly
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        wait = self._start + self._n / 48000 - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        i = self._n % 48000
        frame = av.AudioFrame.from_ndarray(self._signal[i:i + 960].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, self._n, fractions.Fraction(1, 48000)
        self._n += 960
        return frame


class WebPeer:
    """Another participant joining the way the meeting page does: WHIP a tone, WHEP the mix minus itself."""

    def __init__(self, base_url: str, reactor: Any, frequency: float) -> None:
        self.base_url, self.http = base_url, WhipClient(reactor)
        self.track = ToneTrack(frequency)
        self.heard: list[np.ndarray] = []
        self.pcs: list[RTCPeerConnection] = []
        self.resources: list[WhipResource] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def _post(self, pc: RTCPeerConnection, url: str) -> WhipResource:
        await pc.setLocalDescription(await pc.createOffer())
        res = await self.http.post_offer(url, pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(res.answer, "answer"))
        self.resources.append(res)
        return res

    async def join(self) -> None:
        pub, sub = RTCPeerConnection(rtc_configuration()), RTCPeerConnection(rtc_configuration())
        self.pcs += [pub, sub]
        pub.addTransceiver(self.track, direction="sendonly")
        me = await self._post(pub, f"{self.base_url}/whip/{MEETING}")
        sub.addTransceiver("audio", direction="recvonly")
        sub.on("track", lambda t: self._tasks.append(asyncio.ensure_future(self._record(t))))
        await self._post(sub, f"{self.base_url}/whep/{MEETING}?exclude={me.resource_id}")

    async def _record(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                f = await track.recv()
            except MediaStreamError:
                return
            assert f.sample_rate == 48000
            self.heard.append(downmix(f.to_ndarray(), len(f.layout.channels), f.format.is_planar))

    async def leave(self) -> None:
        for res in self.resources:
            await self.http.delete(res.location)
        for pc in self.pcs:
            await pc.close()
        for t in self._tasks:
            t.cancel()


class LegacyEndpoint:
    """A plain-RTP endpoint on a UDP socket: sends a PCMU/G.722 tone at 20 ms, keeps what it receives."""

    def __init__(self, encoding: str, frequency: float) -> None:
        self.codec = AUDIO_CODECS[encoding]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.signal = tone(frequency, 1.0, rate=self.codec.sample_rate)
        self.received: list[bytes] = []

    async def talk(self, target_port: int, seconds: float) -> None:
        enc, n, loop = self.codec.encoder(), self.codec.samples_per_frame, asyncio.get_running_loop()
        start = loop.time()
        for i in range(int(seconds * 50)):
            j = (i * n) % self.signal.size
            pkt = RtpPacket(self.codec.payload_type, i, i * self.codec.timestamp_step, 0xABCD,
                            enc.encode(self.signal[j:j + n]), marker=i == 0)
            self.sock.sendto(bytes(pkt), ("127.0.0.1", target_port))
            self.drain()
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))
        self.drain()

    def drain(self) -> None:
        while True:
            try:
                self.received.append(self.sock.recv(2048))
            except BlockingIOError:
                return

    def heard(self) -> np.ndarray:
        dec = self.codec.decoder()
        return np.concatenate([dec.decode(RtpPacket.parse(d).payload) for d in self.received])


def session_args(server_url: str, reactor: Any, endpoint: LegacyEndpoint, allocator: PortAllocator) -> dict[str, Any]:
    return {"reactor": reactor, "meeting": MEETING, "core_url": server_url, "media_address": "127.0.0.1",
            "port_allocator": allocator, "encoding": endpoint.codec.name,
            "payload_type": endpoint.codec.payload_type, "remote_address": "127.0.0.1",
            "remote_port": endpoint.port, "telephone_event_pt": 101, "display_name": "Room 4 (bridge test)"}


@pytest.mark.parametrize("encoding", ["PCMU", "G722"])
def test_audio_crosses_the_core_both_ways(encoding: str) -> None:
    _, reactor = loop_and_reactor()

    async def scenario() -> dict[str, Any]:
        async with core_server() as server:
            peer = WebPeer(server.base_url, reactor, frequency=440)
            await peer.join()
            endpoint = LegacyEndpoint(encoding, frequency=1000)
            allocator = PortAllocator(43000, 43999, address="127.0.0.1")
            ended: list[str] = []
            session = MediaSession.allocate(**session_args(server.base_url, reactor, endpoint, allocator))
            session.on_ended = ended.append
            assert allocator.in_use == 1 and session.local_port % 2 == 0
            await session.start()
            roster_during = server.core.roster(MEETING)
            peer.heard.clear()  # only what was heard while the endpoint talked
            await endpoint.talk(session.local_port, seconds=3.0)
            for _ in range(100):  # the last datagrams may still wait in the socket: let the loop read them
                if session.stats()["legacy"]["packets_in"] >= 150:
                    break
                await asyncio.sleep(0.02)
            stats = session.stats()
            await session.close()
            await session.close()  # idempotent
            roster_after = server.core.roster(MEETING)
            await peer.leave()
            return {"peer": peer, "endpoint": endpoint, "stats": stats, "roster_during": roster_during,
                    "roster_after": roster_after, "ended": ended, "in_use": allocator.in_use}

    r = run(scenario(), timeout=60)
    stats, peer, endpoint = r["stats"], r["peer"], r["endpoint"]

    # The other participant hears the legacy caller's 1 kHz through the core's mix.
    heard_by_peer = np.concatenate(peer.heard)
    to_peer = assert_tone(heard_by_peer, 48000, 1000, min_dbfs=-35, skip_seconds=1.0)
    # The legacy endpoint hears the other participant's 440 Hz (its own tone excluded from its mix).
    heard_by_endpoint = endpoint.heard()
    spectrum = assert_tone(heard_by_endpoint, endpoint.codec.sample_rate, 440, min_dbfs=-35, skip_seconds=1.0)
    assert spectrum.level_at(1000) < -20, "the caller hears itself: the WHEP exclude did not work"
    print(f"[{encoding}] peer hears {to_peer.peak_hz:.0f} Hz at {to_peer.rms_dbfs:.1f} dBFS; endpoint hears "
          f"{spectrum.peak_hz:.0f} Hz at {spectrum.rms_dbfs:.1f} dBFS, own 1 kHz at {spectrum.level_at(1000):.0f} dB; "
          f"stats {stats}")

    assert stats["codec"] == encoding
    assert stats["legacy"]["encryption"] == "plain" and stats["webrtc"]["encryption"] == "dtls-srtp"
    assert stats["legacy"]["packets_in"] == 150 and stats["legacy"]["dropped"] == 0
    assert stats["webrtc"]["frames_in"] > 50 and stats["webrtc"]["frames_out"] > 50
    assert stats["webrtc"]["whip_state"] == stats["webrtc"]["whep_state"] == "connected"

    # The gateway joined under its display name as one publisher + one subscriber, and left on close().
    ours = [p for p in r["roster_during"] if p.display_name == "Room 4 (bridge test)"]
    assert sorted(p.kind for p in ours) == ["whep", "whip"]
    assert not [p for p in r["roster_after"] if p.display_name == "Room 4 (bridge test)"]
    assert r["ended"] == [] and r["in_use"] == 0


def test_core_removing_the_participant_ends_the_session() -> None:
    _, reactor = loop_and_reactor()

    async def scenario() -> tuple[list[str], dict[str, Any]]:
        async with core_server() as server:
            endpoint = LegacyEndpoint("PCMU", 1000)
            ended: list[str] = []
            session = await MediaSession.open(**session_args(
                server.base_url, reactor, endpoint, PortAllocator(43000, 43999, address="127.0.0.1")))
            session.on_ended = ended.append
            whip_id = session.webrtc.whip.resource_id  # type: ignore[union-attr]
            await server.core.leave(MEETING, whip_id, "whip")
            for _ in range(100):
                if ended:
                    break
                await asyncio.sleep(0.05)
            await session.close()
            return ended, session.stats()

    ended, stats = run(scenario(), timeout=60)
    print(f"on_ended: {ended}")
    assert len(ended) == 1 and ("whip" in ended[0] or "track" in ended[0]), ended
    assert stats["closed"]


def test_core_refusal_and_absence_are_typed_errors() -> None:
    _, reactor = loop_and_reactor()
    endpoint = LegacyEndpoint("PCMU", 1000)
    allocator = PortAllocator(43000, 43999, address="127.0.0.1")

    async def refused() -> CoreRefused:
        async with core_server() as server:
            args = session_args(server.base_url, reactor, endpoint, allocator)
            args["meeting"] = "no spaces allowed"  # the core answers 400 for a bad meeting id
            with pytest.raises(CoreRefused) as info:
                await MediaSession.open(**args)
            return info.value

    exc = run(refused())
    assert exc.status == 400 and "meeting id" in exc.body and "HTTP 400" in str(exc)
    assert allocator.in_use == 0

    # Nothing listens on this port: bind one, note it, close it.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead_port = s.getsockname()[1]
    s.close()

    async def unreachable() -> None:
        with pytest.raises(CoreUnreachable, match="cannot reach"):
            await MediaSession.open(**session_args(f"http://127.0.0.1:{dead_port}", reactor, endpoint, allocator))

    run(unreachable())
    assert allocator.in_use == 0
