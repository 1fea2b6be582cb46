"""The video benchmark's load: one encoded clip replayed by every caller, and what comes back counted.

Encoding 720p per caller would make the load generator the bottleneck (x264 costs a few ms per
frame), so :func:`encode_clip` encodes a few seconds of a moving picture once (libx264 via PyAV,
Baseline, constant bit rate with ``nal-hrd=cbr`` as room systems send it, one IDR then P-frames)
and caches the access units. Each caller (:class:`VideoCaller`, the test room system's sockets of
tests/support/video_room_system.py) replays them in a loop through ``bridge.h264_rtp``'s
packetizer (1200-byte packets, its own SSRC, continuous sequence numbers and timestamps), with an
SEI stamp (bench/videosei.py) in each access unit; a keyframe request (RTCP PLI/FIR, SIP INFO
picture_fast_update) makes the cached IDR the next picture sent, as a real room system would.

Receiving stays cheap: each packet is parsed, counted per SSRC (RFC 3550 A.1 via
``bridge.rtcp.ReceiverStatistics``, so sequence gaps are the loss of the gateway's stream) and
looked at for a stamp; only a short sample is depacketized and decoded with PyAV, at the end.
"""

from __future__ import annotations

import asyncio
import fractions
import secrets
import time
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

import av
import numpy as np
import structlog

from bench.videosei import SeiError, Stamp, stamp_in_payload, with_stamp
from bridge.h264_rtp import AccessUnit, H264Error, is_keyframe, split_annexb
from bridge.rtcp import ReceiverStatistics
from bridge.rtcp_feedback import Pli
from bridge.rtp import RtpError, RtpPacket, looks_like_rtcp
from tests.support.video_room_system import (
    VIDEO_CLOCK,
    RoomVideoEndpoint,
    RoomVideoSender,
    x264_encoder,
)

log = structlog.get_logger("bench.video")


@dataclass(frozen=True)
class Clip:
    """Encoded access units (NAL units each; the first is the only IDR) and what they weigh."""

    units: tuple[tuple[bytes, ...], ...]
    fps: int
    width: int
    height: int

    @property
    def bitrate_bps(self) -> float:
        """The clip's H.264 bit rate (NAL bytes, no RTP headers) over its length."""
        return sum(len(n) for u in self.units for n in u) * 8 * self.fps / len(self.units)


@cache
def encode_clip(width: int = 1280, height: int = 720, fps: int = 30, seconds: float = 3.0,
                bitrate: int = 1_500_000) -> Clip:
    """Encode a scrolling textured picture with fresh noise on each frame (so no P-frame is empty
    and the rate control has to spend its budget), once per process and size."""
    rng = np.random.default_rng(6)
    frames = round(seconds * fps)
    step = 4  # pixels the picture scrolls per frame
    texture = rng.integers(0, 256, (height // 8, (width + frames * step) // 8 + 1, 3), dtype=np.uint8)
    texture = texture.repeat(8, 0).repeat(8, 1)
    # One IDR: later ones only on request, from the cache.
    codec = x264_encoder(width, height, fps, gop=100_000, preset="veryfast", threads="1",
                         maxrate=f"{bitrate // 1000}k", bufsize=f"{bitrate // 15000}k", scenecut="0",
                         **{"x264-params": "nal-hrd=cbr"})
    codec.bit_rate = bitrate
    units: list[tuple[bytes, ...]] = []
    for i in range(frames):
        picture = texture[:height, i * step:i * step + width].astype(np.int16)
        picture += rng.integers(-16, 17, picture.shape, dtype=np.int16)
        frame = av.VideoFrame.from_ndarray(picture.clip(0, 255).astype(np.uint8), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts, frame.time_base = i * (VIDEO_CLOCK // fps), fractions.Fraction(1, VIDEO_CLOCK)
        units += [tuple(split_annexb(bytes(p))) for p in codec.encode(frame)]
    units += [tuple(split_annexb(bytes(p))) for p in codec.encode(None)]
    if not units or not is_keyframe(list(units[0])):
        raise RuntimeError("libx264 did not start the clip with an IDR")
    return Clip(tuple(units), fps, width, height)


class ClipSource:
    """The clip in a loop as a room system's picture source (the interface of
    ``H264PictureSource``): each unit gets the call's SEI stamp; a keyframe request makes the
    cached IDR the next unit."""

    def __init__(self, clip: Clip, call_id: int) -> None:
        self.clip = clip
        self.fps = clip.fps
        self.call_id = call_id
        self.keyframes = 0
        self._count = 0
        self._index = 0

    def request_keyframe(self) -> None:
        self._index = 0

    def next_unit(self) -> AccessUnit:
        nals = self.clip.units[self._index]
        self._index = (self._index + 1) % len(self.clip.units)
        keyframe = self._index == 1
        self.keyframes += keyframe
        stamp = Stamp(self.call_id, self._count, time.time_ns())
        unit = AccessUnit(nals=with_stamp(nals, stamp), timestamp=self._count * (VIDEO_CLOCK // self.fps),
                          keyframe=keyframe)
        self._count += 1
        return unit


@dataclass(frozen=True)
class Counters:
    """A receiver's running totals, read at the start and end of a measured window."""

    packets: int
    payload_bytes: int
    expected: int
    received: int
    packets_sent: int


@dataclass
class FrameLatency:
    """One stamped access unit received whole: when (loop time), how late (ms), from whom."""

    at: float
    ms: float
    call_id: int


class VideoCaller(RoomVideoEndpoint):
    """A room system's video sockets (RTP and RTCP+1) replaying a clip, counting what comes back.

    Everything the gateway sends is counted per SSRC; a stamped access unit received whole (its
    marker packet) gives one :class:`FrameLatency`; only during :meth:`start_sample` are packets
    depacketized, for :meth:`decode_sample` at the end.
    """

    def __init__(self, source: Any, payload_type: int = 96) -> None:
        super().__init__(source, payload_type)
        self.sender = RoomVideoSender(payload_type, ssrc=secrets.randbits(32))
        self.streams: dict[int, ReceiverStatistics] = {}
        self.packets_in = 0
        self.payload_bytes_in = 0
        self.malformed = 0
        self.sei_malformed = 0
        self.latencies: list[FrameLatency] = []
        self.sample: list[AccessUnit] = []
        self._sample_until: float | None = None
        self._pending: tuple[int, Stamp] | None = None
        self._last_ssrc = 0

    @classmethod
    async def bind_clip(cls, host: str, source: ClipSource, payload_type: int = 96) -> VideoCaller:
        """Bind the RTP/RTCP pair on ``host`` (RoomVideoEndpoint.bind) for a clip source, which
        has the picture source's interface (``fps``, ``next_unit``, ``request_keyframe``)."""
        video = await cls.bind(host, cast(Any, source), payload_type)
        assert isinstance(video, VideoCaller)
        return video

    def _rtp_in(self, data: bytes, addr: tuple[str, int]) -> None:
        if looks_like_rtcp(data):
            self._rtcp_in(data, addr)
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            self.malformed += 1
            return
        now = asyncio.get_running_loop().time()
        stats = self.streams.get(packet.ssrc)
        if stats is None:
            stats = self.streams[packet.ssrc] = ReceiverStatistics(packet.ssrc, VIDEO_CLOCK)
        stats.update(packet.sequence_number, packet.timestamp, now)
        self._last_ssrc = packet.ssrc
        self.packets_in += 1
        self.payload_bytes_in += len(packet.payload)
        try:
            stamp = stamp_in_payload(packet.payload)
        except SeiError as exc:
            self.sei_malformed += 1
            log.warning("bench.video.sei_malformed", reason=exc.reason, ssrc=packet.ssrc)
            stamp = None
        if stamp is not None:
            self._pending = (packet.timestamp, stamp)
        if packet.marker and self._pending is not None and self._pending[0] == packet.timestamp:
            sent = self._pending[1]
            self.latencies.append(FrameLatency(now, (time.time_ns() - sent.realtime_ns) / 1e6, sent.call_id))
            self._pending = None
        if self._sample_until is not None and now < self._sample_until:
            try:
                self.sample += self.depacketizer.push(packet)
            except H264Error:
                pass  # counted as undecodable by decode_sample

    def counters(self) -> Counters:
        return Counters(self.packets_in, self.payload_bytes_in,
                        sum(s.expected for s in self.streams.values()),
                        sum(s.received for s in self.streams.values()), self.packets_sent)

    def start_sample(self, seconds: float, remote_rtcp: tuple[str, int]) -> None:
        """Ask the gateway for a keyframe (RTCP PLI) and keep the next ``seconds`` of its video."""
        self._sample_until = asyncio.get_running_loop().time() + seconds
        if self.rtcp is not None and self.rtcp.transport is not None:
            self.rtcp.transport.sendto(Pli(self.sender.ssrc, self._last_ssrc).to_bytes(), remote_rtcp)

    def decode_sample(self) -> tuple[int, int]:
        """(access units from the sample's first keyframe on, pictures PyAV decoded from them)."""
        start = next((i for i, u in enumerate(self.sample) if u.keyframe), None)
        if start is None:
            return 0, 0
        units = self.sample[start:]
        codec = av.CodecContext.create("h264", "r")
        decoded = 0
        for unit in [*units, None]:
            try:
                decoded += len(codec.decode(None if unit is None else av.Packet(unit.annexb())))
            except av.error.FFmpegError:
                continue
        return len(units), decoded

