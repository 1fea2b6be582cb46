"""The media tracks a WHEP subscriber receives: the N-1 audio mix and the switched video.

aiortc's ``RTCRtpSender`` calls ``recv()`` in a loop and sends whatever it
returns at once, so each track must keep real-time pace itself and must never
block forever (a stuck ``recv`` stalls RTCP-driven state and shutdown).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import av
import numpy as np
import structlog
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

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


def audio_frame(block: np.ndarray, pts: int) -> av.AudioFrame:
    """A 20 ms mono s16 48 kHz frame at ``pts`` (time base 1/48000) holding ``block``."""
    return mono_s16_frame(block, pts, SAMPLE_RATE)


class MixAudioTrack(MediaStreamTrack):
    """A subscriber's audio: blocks pushed by the meeting clock, paced at 20 ms, silence on underrun.

    Blocks standing in the queue above ``TARGET_BLOCKS`` for a whole drain window (a stall of the
    sender's loop left them) are shed by a :class:`~bridge.backlog.BacklogDrain`, so the queue's
    cap bounds the delay and the drain brings it back down.
    """

    kind = "audio"

    def __init__(self, depth: int = QUEUE_BLOCKS) -> None:
        super().__init__()
        self._queue: deque[np.ndarray] = deque(maxlen=depth)
        self._arrived = asyncio.Event()
        self._pacer = FramePacer(SAMPLE_RATE, BLOCK_SAMPLES, RESYNC_SECONDS)
        self._drain = BacklogDrain(TARGET_BLOCKS, queue="core.subscriber")
        self.dropped_blocks = 0
        """Blocks discarded because the queue was full or a standing backlog was shed."""
        self.silent_frames = 0
        """Frames sent as silence because no block arrived within a tick."""

    def push(self, block: np.ndarray) -> None:
        """Queue one mixed block (called by the meeting clock); the oldest is dropped past ~100 ms."""
        if len(self._queue) == self._queue.maxlen:
            self.dropped_blocks += 1
        self._queue.append(block)
        self._arrived.set()

    async def recv(self) -> av.AudioFrame:
        """The next 20 ms frame, no earlier than its schedule and at most one tick later."""
        if self.readyState != "live":
            raise MediaStreamError
        pts = await self._pacer.next_pts()
        if not self._queue:
            # The clock's next push is at most a tick away; wait for it rather than send silence early.
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), TICK_SECONDS)
            except TimeoutError:
                pass
        if self.readyState != "live":
            raise MediaStreamError
        if self._queue:
            block = self._queue.popleft()
        else:
            block = SILENCE
            self.silent_frames += 1
        for _ in range(self._drain.after_read(len(self._queue))):
            self._queue.popleft()
            self.dropped_blocks += 1
        return audio_frame(block, pts)


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
