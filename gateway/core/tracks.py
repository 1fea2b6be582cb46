"""The media tracks a WHEP subscriber receives: the N-1 audio mix (or one publisher's forwarded
audio) and the switched video.

aiortc's ``RTCRtpSender`` calls ``recv()`` in a loop and sends whatever it
returns at once, so each track must keep real-time pace itself and must never
block forever (a stuck ``recv`` stalls RTCP-driven state and shutdown): a forwarding
track waits only for the next frame, a switch or ``stop()``.
"""

from __future__ import annotations

import asyncio
import fractions
from collections import deque
from collections.abc import Callable

import av
import numpy as np
import structlog
from aiortc.codecs import get_encoder
from aiortc.codecs.base import Encoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from bridge.backlog import BacklogDrain
from bridge.pacing import FramePacer, mono_s16_frame
from gateway.core.mixer import BLOCK_SAMPLES, SAMPLE_RATE, SILENCE, TICK_SECONDS
from gateway.core.speaker import SpeakerSelector
from gateway.core.video import VideoSwitch

log = structlog.get_logger("gateway.core.tracks")

QUEUE_BLOCKS = 5
"""A subscriber queue holds at most 100 ms; older blocks are dropped so latency cannot grow."""

TARGET_BLOCKS = 1
"""Blocks a subscriber queue may keep standing after a read; more than that for a drain window is shed."""

RESYNC_SECONDS = 0.1
"""A track that fell this far behind its schedule (loop stall) restarts the schedule instead of bursting."""

FORWARD_QUEUE_FRAMES = 25
"""Forwarded frames a subscriber may hold (500 ms): the queue only fills while the loop is stalled,
and then every frame held is one the receiver gets late rather than never; in steady state each
frame leaves as soon as it arrives, so the cap adds no delay."""

MAX_FRAME_SAMPLES = 3 * BLOCK_SAMPLES
"""The longest step between forwarded frames taken as one frame's duration (Opus allows 60 ms)."""

MAX_FORWARD_GAP = 10 * SAMPLE_RATE
"""A forwarded timestamp this far past the last one is a publisher restart, not a pause."""

INLINE_CODECS = frozenset({"pcmu", "pcma"})
"""Codecs cheap enough to encode on the loop rather than pay an executor hand-off per frame."""

AUDIO_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


def audio_frame(block: np.ndarray, pts: int) -> av.AudioFrame:
    """A 20 ms mono s16 48 kHz frame at ``pts`` (time base 1/48000) holding ``block``."""
    return mono_s16_frame(block, pts, SAMPLE_RATE)


class MixAudioTrack(MediaStreamTrack):
    """A subscriber's audio: its N-1 mix, or one publisher's frames forwarded unchanged.

    Mixing: blocks pushed by the meeting clock, paced at 20 ms, silence on underrun. Blocks
    standing in the queue above ``TARGET_BLOCKS`` for a whole drain window (a stall of the
    sender's loop left them) are shed by a :class:`~bridge.backlog.BacklogDrain`, so the queue's
    cap bounds the delay and the drain brings it back down.

    Forwarding (:meth:`set_forwarding`, decided by :mod:`gateway.core.forwarding`): the
    publisher's encoded frames, handed over by :meth:`forward`, are returned as ``av.Packet`` as
    soon as they arrive; aiortc's ``RTCRtpSender`` then only packs them (``Encoder.pack``), with
    the sequence numbers of this same sender.

    Once the sender's codec is known (:meth:`use_codec`) the track encodes mixed blocks itself
    and returns packets in both modes, so every timestamp the receiver sees comes from one
    counter here (``pts`` in 1/48000, continuous across switches). It cannot hand mixed frames
    to aiortc's encoder instead: that encoder keeps the last frame's samples in its resampler,
    and after a forwarding period it sends them with their old timestamp, a step back the
    receiver would take for a reordered or restarted stream
    (tests/unit/test_core_forward_track.py shows it). Without a codec (unit tests, a sender that
    never started) mixed blocks are returned as ``AudioFrame`` as before.
    """

    kind = "audio"

    def __init__(self, depth: int = QUEUE_BLOCKS, forward_depth: int = FORWARD_QUEUE_FRAMES) -> None:
        super().__init__()
        self._queue: deque[np.ndarray] = deque(maxlen=depth)
        self._forwarded: deque[tuple[bytes, int]] = deque(maxlen=forward_depth)
        self._pending: deque[bytes] = deque()
        self._arrived = asyncio.Event()
        self._pacer = FramePacer(SAMPLE_RATE, BLOCK_SAMPLES, RESYNC_SECONDS)
        self._drain = BacklogDrain(TARGET_BLOCKS, queue="core.subscriber")
        self._forwarding = False
        self._codec: RTCRtpCodecParameters | None = None
        self._encoder: Encoder | None = None
        self._encoder_pts = 0
        """The encoder's own input clock: contiguous, so its resampler never sees a jump."""
        # The subscriber's timestamp space (1/48000): the last pts sent, the next one due (last +
        # the last frame's duration), and publisher timestamp + anchor = pts while forwarding.
        self._last_pts = -1
        self._next_pts = 0
        self._duration = BLOCK_SAMPLES
        self._anchor: int | None = None
        self.dropped_blocks = 0
        """Blocks (or forwarded frames) discarded because the queue was full or a backlog was shed."""
        self.silent_frames = 0
        """Frames sent as silence because no block arrived within a tick."""
        self.forwarded_frames = 0
        """Publisher frames sent on unchanged."""
        self.late_frames = 0
        """Forwarded frames dropped because their timestamp was not after the last one sent."""

    @property
    def forwarding(self) -> bool:
        return self._forwarding

    def use_codec(self, codec: RTCRtpCodecParameters) -> None:
        """The codec this track's sender sends in: from now on the track encodes mixed blocks itself."""
        self._codec = codec
        self._new_encoder()

    def set_forwarding(self, on: bool) -> None:
        """Switch between forwarding (:meth:`forward`) and mixing (:meth:`push`)."""
        if on == self._forwarding:
            return
        self._forwarding = on
        self._forwarded.clear()
        self._anchor = None
        if not on:
            self._queue.clear()
            self._pending.clear()
            # A fresh encoder: the old one still holds samples from before the forwarding period.
            self._new_encoder()
        self._arrived.set()  # a recv waiting in the other mode re-checks at once

    def stop(self) -> None:
        super().stop()
        self._arrived.set()  # wake a recv waiting for a forwarded frame: it raises MediaStreamError

    def push(self, block: np.ndarray) -> None:
        """Queue one mixed block (called by the meeting clock); the oldest is dropped past ~100 ms."""
        if len(self._queue) == self._queue.maxlen:
            self.dropped_blocks += 1
        self._queue.append(block)
        self._arrived.set()

    def forward(self, payload: bytes, timestamp: int) -> None:
        """Queue one publisher frame; ``timestamp`` in 1/48000 on the publisher's own clock."""
        if not self._forwarding:
            return
        if len(self._forwarded) == self._forwarded.maxlen:
            self.dropped_blocks += 1
        self._forwarded.append((payload, timestamp))
        self._arrived.set()

    async def recv(self) -> av.AudioFrame | av.Packet:
        """The next frame: a forwarded one as soon as it arrives, a mixed one on the 20 ms schedule."""
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if self._pending:
                return self._packet(self._pending.popleft(), self._take_pts(BLOCK_SAMPLES))
            data = await (self._next_forwarded() if self._forwarding else self._next_mixed())
            if data is not None:
                return data

    async def _next_forwarded(self) -> av.Packet | None:
        if not self._forwarded:
            # No timeout (a wait_for per frame is a task per frame): forward(), a switch to mixing
            # and stop() all set the event, and aiortc cancels this await when its sender stops.
            self._arrived.clear()
            await self._arrived.wait()
            if not self._forwarding or not self._forwarded:
                return None
        payload, timestamp = self._forwarded.popleft()
        if self._anchor is None:
            self._anchor = self._next_pts - timestamp
        pts = timestamp + self._anchor
        if pts <= self._last_pts:
            self.late_frames += 1
            return None
        gap = pts - self._last_pts
        if gap > MAX_FORWARD_GAP:
            # The publisher's clock jumped (a restart): carry on from our own schedule.
            self._anchor = self._next_pts - timestamp
            pts = self._next_pts
        elif self._last_pts >= 0 and gap <= MAX_FRAME_SAMPLES:
            self._duration = gap
        self._last_pts, self._next_pts = pts, pts + self._duration
        self.forwarded_frames += 1
        return self._packet(payload, pts)

    async def _next_mixed(self) -> av.AudioFrame | av.Packet | None:
        """The next mixed block, no earlier than its schedule and at most one tick later."""
        await self._pacer.next_pts()
        if not self._queue:
            # The clock's next push is at most a tick away; wait for it rather than send silence early.
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), TICK_SECONDS)
            except TimeoutError:
                pass
        if self.readyState != "live" or self._forwarding:
            return None
        if self._queue:
            block = self._queue.popleft()
        else:
            block = SILENCE
            self.silent_frames += 1
        for _ in range(self._drain.after_read(len(self._queue))):
            self._queue.popleft()
            self.dropped_blocks += 1
        if self._encoder is None:
            return audio_frame(block, self._take_pts(BLOCK_SAMPLES))
        self._pending.extend(await self._encode(block))
        if not self._pending:
            return None  # the encoder is still filling its resampler (one frame, at the start)
        return self._packet(self._pending.popleft(), self._take_pts(BLOCK_SAMPLES))

    async def _encode(self, block: np.ndarray) -> list[bytes]:
        """Encode one mixed block; Opus off the loop as aiortc's sender does, G.711 inline (< 10 us)."""
        encoder, codec = self._encoder, self._codec
        assert encoder is not None and codec is not None
        frame = audio_frame(block, self._encoder_pts)
        self._encoder_pts += BLOCK_SAMPLES
        if codec.name.lower() in INLINE_CODECS:
            payloads, _ = encoder.encode(frame)
        else:
            payloads, _ = await asyncio.get_running_loop().run_in_executor(None, encoder.encode, frame)
        return [bytes(p) for p in payloads]

    def _new_encoder(self) -> None:
        if self._codec is not None:
            self._encoder = get_encoder(self._codec)
            self._encoder_pts = 0

    def _take_pts(self, duration: int) -> int:
        pts = self._next_pts
        self._last_pts, self._next_pts, self._duration = pts, pts + duration, duration
        return pts

    @staticmethod
    def _packet(payload: bytes, pts: int) -> av.Packet:
        packet = av.Packet(payload)
        packet.pts = pts
        packet.time_base = AUDIO_TIME_BASE
        return packet


class SwitchedVideoTrack(MediaStreamTrack):
    """A subscriber's video: frames of the meeting's active speaker, never of ``exclude``.

    With no video source in the meeting it simply waits (re-checking twice a
    second), which is what an aiortc sender tolerates. Frames carry the
    meeting-wide timestamps stamped by :class:`VideoSwitch`, so switching
    sources keeps pts monotonic.

    At every switch (the first source included) the new source's first frame is encoded as a
    keyframe -- ``force_keyframe`` is the subscriber's sender's request hook, set by the core
    (aiortc's encoder makes an IDR when asked, ``H264Encoder._encode_frame``) -- so a viewer
    never shows the new speaker as P-frames on top of the old one's picture; and the new source
    itself is asked for a keyframe (:meth:`VideoSwitch.request_keyframe`).
    """

    kind = "video"

    POLL_SECONDS = 0.5

    def __init__(self, switch: VideoSwitch, exclude: str | None, hold: float = 1.0) -> None:
        super().__init__()
        self._switch = switch
        self._exclude = exclude
        self._selector = SpeakerSelector(hold=hold)
        self._last_pts = -1
        self._shown: str | None = None
        #: Asks this subscriber's encoder for a keyframe (aiortc ``RTCRtpSender._send_keyframe``).
        self.force_keyframe: Callable[[], None] | None = None
        #: Source switches, the first source included.
        self.switches = 0

    @property
    def source(self) -> str | None:
        """The publisher currently shown (None before the first frame)."""
        return self._selector.current

    async def recv(self) -> av.VideoFrame:
        loop = asyncio.get_running_loop()
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            source = self._selector.choose(self._switch.candidates(self._exclude), loop.time())
            if source is None:
                await self._switch.wait_for_sources(self.POLL_SECONDS)
                continue
            frame = await self._switch.next_frame(source, self.POLL_SECONDS)
            if frame is None or frame.pts is None or frame.pts <= self._last_pts:
                continue
            self._last_pts = frame.pts
            if source != self._shown:
                self._switched(source)
            return frame

    def _switched(self, source: str) -> None:
        """The frame about to be returned is the first of a new source: make it an IDR (the
        sender reads its keyframe flag after ``recv`` returns) and ask the source for one."""
        previous, self._shown = self._shown, source
        self.switches += 1
        if self.force_keyframe is not None:
            self.force_keyframe()
        asked = self._switch.request_keyframe(source)
        log.info("core.video.switched", publisher=source, previous=previous, publisher_asked=asked,
                 forced_keyframe=self.force_keyframe is not None)
