"""A test room system's video: libx264 (PyAV) encodes a solid-colour picture, sent as H.264 RTP.

The encoder side is sans-IO (:class:`H264PictureSource` gives access units,
:class:`RoomVideoSender` turns them into RTP datagrams with ``bridge.h264_rtp``'s packetizer,
packetization-mode 1, RFC 6184), so unit tests use it without sockets and the interop test
sends its datagrams from a UDP socket of its own.  A keyframe request (RTCP PLI) is honoured by
forcing the next picture to be an IDR, as a real room system does.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import av
import numpy as np

from bridge.h264_rtp import (
    AccessUnit,
    H264Depacketizer,
    H264Error,
    H264Packetizer,
    is_keyframe,
    split_annexb,
)
from bridge.rtcp import PT_PSFB, RawRtcp, RtcpError, parse_compound
from bridge.rtcp_feedback import Pli
from bridge.rtp import RtpError, RtpPacket, looks_like_rtcp
from bridge.webrtc_leg import prefer_h264, tap_encoded_frames
from sip.info import InfoBodyError, KeyframeRequest, classify, content_type

VIDEO_CLOCK = 90_000


def x264_encoder(width: int, height: int, fps: int, *, gop: int, **options: str) -> Any:
    """A libx264 encoder (PyAV) as a room system runs one: yuv420p, the RTP video clock as
    time base, Baseline, zero latency (no B-frames, no lookahead); ``options`` add to or
    override the x264 options (``preset``, ``maxrate``, ...)."""
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuv420p"
    codec.time_base = fractions.Fraction(1, VIDEO_CLOCK)
    codec.framerate = fractions.Fraction(fps, 1)
    codec.gop_size = gop
    codec.options = {"tune": "zerolatency", "profile": "baseline", **options}
    return codec


class H264PictureSource:
    """Encodes a solid ``rgb`` picture (small, Baseline, zero-latency: one packet per frame).

    ``gop`` frames between scheduled IDRs (large by default: keyframes should come on request).
    """

    def __init__(self, rgb: tuple[int, int, int], *, width: int = 160, height: int = 120,
                 fps: int = 15, gop: int = 600) -> None:
        self.fps = fps
        self._image = np.zeros((height, width, 3), dtype=np.uint8)
        self._image[:, :] = rgb
        self._codec = x264_encoder(width, height, fps, gop=gop, preset="ultrafast")
        self._count = 0
        self._force_keyframe = False
        self.keyframes = 0

    def set_colour(self, rgb: tuple[int, int, int]) -> None:
        self._image[:, :] = rgb

    def request_keyframe(self) -> None:
        """Make the next picture an IDR (what a PLI/FIR/INFO asks of a room system)."""
        self._force_keyframe = True

    def next_unit(self) -> AccessUnit | None:
        """Encode the next picture; its access unit (None if the encoder held it back)."""
        frame = av.VideoFrame.from_ndarray(self._image, format="rgb24").reformat(format="yuv420p")
        timestamp = self._count * (VIDEO_CLOCK // self.fps)
        frame.pts = timestamp
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        if self._force_keyframe:
            frame.pict_type = av.video.frame.PictureType.I
            self._force_keyframe = False
        self._count += 1
        data = b"".join(bytes(p) for p in self._codec.encode(frame))
        if not data:
            return None
        nals = split_annexb(data)
        keyframe = is_keyframe(nals)
        self.keyframes += keyframe
        return AccessUnit(nals=nals, timestamp=timestamp, keyframe=keyframe)


class RoomVideoSender:
    """Access units -> H.264 RTP datagrams (packetization-mode 1) with the negotiated PT."""

    def __init__(self, payload_type: int, ssrc: int = 0x52544D31) -> None:
        self.ssrc = ssrc
        self._packetizer = H264Packetizer(payload_type, ssrc, packetization_mode=1)

    def datagrams(self, unit: AccessUnit, timestamp_offset: int = 0) -> list[bytes]:
        return [bytes(p) for p in self._packetizer.packetize(unit.nals, unit.timestamp + timestamp_offset)]


def decode_units(units: list[bytes]) -> list[av.VideoFrame]:
    """Decode Annex B access units with PyAV's H.264 decoder (what the core's aiortc uses)."""
    codec = av.CodecContext.create("h264", "r")
    frames: list[av.VideoFrame] = []
    for data in units:
        frames += codec.decode(av.Packet(data))
    return frames


def mean_rgb(frame: av.VideoFrame) -> tuple[int, int, int]:
    rgb = frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))


# -- the room system's video socket pair (interop) ---------------------------------------------

def video_offer_lines(host: str, rtp_port: int, payload_type: int = 96, *, feedback: bool = True,
                      tias_bps: int | None = 1024000) -> list[str]:
    """A main-video m-line as room systems offer it: H.264 packetization-mode 1 over RTP/AVPF
    with PLI/FIR feedback (RFC 6184, RFC 4585, RFC 5104), appended after the audio line.
    ``feedback=False`` is the older Cisco/Polycom kind: RTP/AVP, no ``a=rtcp-fb``, keyframes
    asked for by SIP INFO (RFC 5168, see :meth:`RoomVideoEndpoint.on_sip_request`).
    ``tias_bps`` is its receive cap (``b=TIAS``, RFC 3890); None states none."""
    fb = [f"a=rtcp-fb:{payload_type} nack pli", f"a=rtcp-fb:{payload_type} ccm fir"] if feedback else []
    return [
        f"m=video {rtp_port} RTP/{'AVPF' if feedback else 'AVP'} {payload_type}",
        f"c=IN IP4 {host}",
        *([f"b=TIAS:{tias_bps}"] if tias_bps is not None else []),
        f"a=rtpmap:{payload_type} H264/90000",
        f"a=fmtp:{payload_type} profile-level-id=42e01f;packetization-mode=1",
        *fb,
        "a=sendrecv",
    ]


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.on_datagram(data, addr)


class RoomVideoEndpoint:
    """The room system's video RTP/RTCP sockets: sends its picture at ``fps`` and makes an IDR
    when the gateway sends an RTCP PLI/FIR (the times of both are kept for the test to measure);
    keeps the meeting's video the gateway sends it as whole access units with their arrival
    time (``time.time()``, comparable with the gateway's log timestamps)."""

    def __init__(self, source: H264PictureSource, payload_type: int = 96) -> None:
        self.source = source
        self.sender = RoomVideoSender(payload_type)
        self.rtp: _Socket | None = None
        self.rtcp: _Socket | None = None
        self.rtp_port = 0
        self.keyframe_requests: list[tuple[float, str]] = []
        self.units_sent = 0
        self.packets_sent = 0
        #: loop.time() of each packet left out by :meth:`lose_next_packet`.
        self.lost_at: list[float] = []
        #: The meeting's video received: (arrival wall-clock time, access unit).
        self.received: list[tuple[float, AccessUnit]] = []
        #: RTP payload bytes of the meeting's video as they arrived: (loop time, bytes).
        self.payload_in: list[tuple[float, int]] = []
        self.depacketizer = H264Depacketizer()
        self._lose = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def bind(cls, host: str, source: H264PictureSource, payload_type: int = 96) -> RoomVideoEndpoint:
        """Bind an even RTP port and RTP+1 for RTCP on ``host`` (RFC 3550 11)."""
        self = cls(source, payload_type)
        loop = asyncio.get_running_loop()
        for _ in range(50):
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe.bind((host, 0))
            port = probe.getsockname()[1] & ~1
            probe.close()
            try:
                _, rtp = await loop.create_datagram_endpoint(lambda: _Socket(self._rtp_in), local_addr=(host, port))
            except OSError:
                continue
            try:
                _, rtcp = await loop.create_datagram_endpoint(lambda: _Socket(self._rtcp_in),
                                                              local_addr=(host, port + 1))
            except OSError:
                assert rtp.transport is not None
                rtp.transport.close()
                continue
            self.rtp, self.rtcp, self.rtp_port = rtp, rtcp, port
            return self
        raise OSError("no free even/odd UDP port pair")

    def _rtp_in(self, data: bytes, addr: tuple[str, int]) -> None:
        if looks_like_rtcp(data):
            self._rtcp_in(data, addr)
            return
        try:
            packet = RtpPacket.parse(data)
            self.payload_in.append((asyncio.get_running_loop().time(), len(packet.payload)))
            units = self.depacketizer.push(packet)
        except (RtpError, H264Error):
            return
        now = time.time()
        self.received += [(now, u) for u in units]

    def payload_bps(self, start: float, end: float) -> float:
        """The meeting's video received between two loop times, in RTP payload bit/s."""
        return sum(n for t, n in self.payload_in if start <= t < end) * 8 / (end - start)

    def send_pli(self, remote_rtcp: tuple[str, int]) -> None:
        """Ask the gateway for a keyframe of the meeting's video, as a room system does."""
        media = self.depacketizer._ssrc or 0
        if self.rtcp is not None and self.rtcp.transport is not None:
            self.rtcp.transport.sendto(Pli(self.sender.ssrc, media).to_bytes(), remote_rtcp)

    def _rtcp_in(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            packets = parse_compound(data)
        except RtcpError:
            return
        for p in packets:
            if isinstance(p, RawRtcp) and p.packet_type == PT_PSFB and p.fmt in (1, 4):
                self.keyframe_requests.append((asyncio.get_running_loop().time(),
                                               "pli" if p.fmt == 1 else "fir"))
                self.source.request_keyframe()

    def on_sip_request(self, request: Any) -> None:
        """An in-dialog request from the gateway (``UacCall.on_request``): an INFO
        ``picture_fast_update`` (RFC 5168) is honoured with an IDR, like an RTCP PLI."""
        if request.method != "INFO":
            return
        try:
            said = classify(content_type(request.headers.get("Content-Type")), request.body or b"")
        except (InfoBodyError, LookupError):
            return
        if isinstance(said, KeyframeRequest):
            self.keyframe_requests.append((asyncio.get_running_loop().time(), "sip_info"))
            self.source.request_keyframe()

    def lose_next_packet(self) -> None:
        """Leave the next RTP packet out (loss on the way: the receiver sees a sequence gap)."""
        self._lose += 1

    def start(self, remote: tuple[str, int]) -> None:
        self._task = asyncio.get_running_loop().create_task(self._send_loop(remote))

    async def _send_loop(self, remote: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while True:
            unit = self.source.next_unit()
            if unit is not None and self.rtp is not None and self.rtp.transport is not None:
                for data in self.sender.datagrams(unit):
                    if self._lose:  # the network loses it: the sequence number is used up
                        self._lose -= 1
                        self.lost_at.append(loop.time())
                        continue
                    self.rtp.transport.sendto(data, remote)
                    self.packets_sent += 1
                self.units_sent += 1
            n += 1
            await asyncio.sleep(max(0.0, start + n / self.source.fps - loop.time()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for s in (self.rtp, self.rtcp):
            if s is not None and s.transport is not None:
                s.transport.close()


class TappedViewer:
    """A video-only WHEP subscriber that keeps the encoded H.264 access units it receives (with
    arrival wall-clock time and keyframe flag) instead of decoding them, so a test can see when
    an IDR arrives; decode them with :func:`decode_units`."""

    def __init__(self) -> None:
        self.received: list[tuple[float, AccessUnit]] = []
        self.pc: Any = None
        self.url = ""

    @classmethod
    async def join(cls, base_url: str, meeting: str, exclude: str | None = None) -> TappedViewer:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        from tests.support.webrtc_client import http_request

        self = cls()
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        transceiver = pc.addTransceiver("video", direction="recvonly")
        prefer_h264(transceiver)
        tap_encoded_frames(transceiver.receiver, lambda u: self.received.append((time.time(), u)))
        await pc.setLocalDescription(await pc.createOffer())
        query = f"?exclude={exclude}" if exclude else ""
        endpoint = f"{base_url}/whep/{meeting}{query}"
        result = await http_request("POST", endpoint, pc.localDescription.sdp.encode(),
                                    {"Content-Type": "application/sdp"})
        assert result.status == 201, result.text
        self.url = urljoin(endpoint, result.headers["location"])
        await pc.setRemoteDescription(RTCSessionDescription(sdp=result.text, type="answer"))
        return self

    async def close(self) -> None:
        from tests.support.webrtc_client import http_request

        await http_request("DELETE", self.url)
        await self.pc.close()


def colour_of(units: list[AccessUnit]) -> tuple[int, int, int] | None:
    """Mean RGB of the last picture of ``units`` decoded from their first keyframe on."""
    start = next((i for i, u in enumerate(units) if u.keyframe), None)
    if start is None:
        return None
    frames = decode_units([u.annexb() for u in units[start:]])
    return mean_rgb(frames[-1]) if frames else None


# -- a room system's whole call: SIP (the test UAC), G.711 audio and H.264 video ------------------

ROOM_HOST = "127.0.0.1"


@dataclass
class RoomSystemCall:
    """A running call of a test room system: its UAC, audio, video endpoint and dialog."""

    uac: Any
    audio: Any
    audio_port: int
    room: RoomVideoEndpoint
    call: Any

    @property
    def video_target(self) -> tuple[str, int]:
        """Where the gateway wants the room system's video (the answer's video line)."""
        video_m = self.call.answer_sdp.media[1]
        return (video_m.connection_address or ROOM_HOST, video_m.port)



@contextlib.asynccontextmanager
async def room_system_call(
    sip_uri: str, *, colour: tuple[int, int, int], tone: dict[str, Any] | None = None,
    offer: Callable[[int, int], str] | None = None, start_video: bool = True, **video_lines: Any,
) -> AsyncIterator[RoomSystemCall]:
    """Call ``sip_uri`` as a room system showing ``colour`` with a G.711 tone (``tone``:
    :class:`bench.callmedia.CallAudio` settings) and H.264 video; ``offer(audio_port,
    video_port)`` builds the SDP (default: audio plus :func:`video_offer_lines` with
    ``video_lines``). Audio starts once answered, video too unless ``start_video`` is False
    (then ``room.start(call.video_target)`` when the test wants it). Everything stops on exit."""
    from bench.callmedia import CallAudio
    from tests.support.sip_uac import SipUac, offer_sdp

    uac = await SipUac.create(local_host=ROOM_HOST)
    audio, audio_port = await CallAudio.bind(ROOM_HOST, **(tone or {"tone_hz": 1000.0, "burst_ms": 600,
                                                                     "period_ms": 1000}))
    room = await RoomVideoEndpoint.bind(ROOM_HOST, H264PictureSource(colour))
    try:
        sdp = (offer(audio_port, room.rtp_port) if offer is not None else
               offer_sdp(ROOM_HOST, audio_port) + "\r\n".join(
                   video_offer_lines(ROOM_HOST, room.rtp_port, **video_lines)) + "\r\n")
        call = await uac.invite(sip_uri, sdp, timeout=20)
        call.on_request = room.on_sip_request  # SIP INFO picture_fast_update (RFC 5168) is honoured
        audio_m = call.answer_sdp.media[0]
        audio.start((audio_m.connection_address or ROOM_HOST, audio_m.port))
        running = RoomSystemCall(uac, audio, audio_port, room, call)
        if start_video:
            room.start(running.video_target)
        yield running
    finally:
        await room.stop()
        await audio.stop()
        await uac.close()
