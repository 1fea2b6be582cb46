"""The meeting's video switch: latest frame per publisher, meeting-wide timestamps, speaker energies.

Frames are decoded by aiortc and re-encoded per subscriber (aiortc has no
forwarding of encoded frames between peer connections), so only the newest
frame matters: a subscriber whose encoder is slower simply skips frames.

Each publisher may register a keyframe requester (an RTCP PLI on its receiver, see
``gateway.core.conference``): when a subscriber's switch moves to a publisher, asking it for a
fresh IDR makes the picture change cleanly even if its decoder state was damaged.
"""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import Callable, Mapping

import av

VIDEO_TIME_BASE = fractions.Fraction(1, 90_000)


class _Source:
    """One publisher's video: its newest frame and an event set when the next one arrives."""

    def __init__(self) -> None:
        self.latest: av.VideoFrame | None = None
        self.arrived = asyncio.Event()


class VideoSwitch:
    """Holds every video-publishing participant's newest frame and the energies that pick the speaker.

    ``energies`` is the meeting's smoothed audio energy per publisher (shared,
    updated each mixer tick). Each frame is re-stamped once on arrival with a
    meeting-wide 90 kHz clock before any subscriber sees it, because frames
    are shared by all subscribers and must not be mutated afterwards.
    """

    def __init__(self, energies: Mapping[str, float]) -> None:
        self._energies = energies
        self._sources: dict[str, _Source] = {}
        self._changed = asyncio.Event()
        self._origin: float | None = None
        self._last_pts = -1
        self._keyframe_requesters: dict[str, Callable[[], None]] = {}
        #: Keyframe requests sent to publishers because a subscriber switched to them.
        self.keyframe_requests = 0

    def add_source(self, publisher: str) -> None:
        self._sources.setdefault(publisher, _Source())

    def sources(self) -> set[str]:
        """Publishers registered as video sources (whether or not a frame has arrived yet)."""
        return set(self._sources)

    def set_keyframe_requester(self, publisher: str, request: Callable[[], None]) -> None:
        """How to ask ``publisher`` for a keyframe (e.g. an RTCP PLI on its receiver)."""
        self._keyframe_requesters[publisher] = request

    def request_keyframe(self, publisher: str) -> bool:
        """Ask ``publisher`` for a keyframe; False when it registered no way to ask."""
        request = self._keyframe_requesters.get(publisher)
        if request is None:
            return False
        self.keyframe_requests += 1
        request()
        return True

    def remove_source(self, publisher: str) -> None:
        self._keyframe_requesters.pop(publisher, None)
        source = self._sources.pop(publisher, None)
        if source is not None:
            source.arrived.set()  # wake waiters so they re-choose at once
        self._signal_change()

    def deliver(self, publisher: str, frame: av.VideoFrame) -> None:
        """A publisher's decoded frame arrived: stamp it and wake the subscribers showing it."""
        source = self._sources.get(publisher)
        if source is None:
            return
        now = asyncio.get_running_loop().time()
        if self._origin is None:
            self._origin = now
        pts = max(self._last_pts + 1, int((now - self._origin) * 90_000))
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        first = source.latest is None
        source.latest = frame
        event, source.arrived = source.arrived, asyncio.Event()
        event.set()
        if first:
            self._signal_change()

    def candidates(self, exclude: str | None) -> dict[str, float]:
        """Publishers that have sent video, other than ``exclude``, with their recent energy."""
        return {
            pid: self._energies.get(pid, 0.0)
            for pid, source in self._sources.items()
            if pid != exclude and source.latest is not None
        }

    async def wait_for_sources(self, timeout: float) -> None:
        """Sleep until a source appears or goes, or ``timeout`` passes."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass

    async def next_frame(self, publisher: str, timeout: float) -> av.VideoFrame | None:
        """The publisher's next frame, or None on timeout or when it stopped sending video."""
        source = self._sources.get(publisher)
        if source is None:
            return None
        try:
            await asyncio.wait_for(source.arrived.wait(), timeout)
        except TimeoutError:
            return None
        current = self._sources.get(publisher)
        return current.latest if current is source else None

    def _signal_change(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()
