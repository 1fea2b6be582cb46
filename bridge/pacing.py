"""Real-time pacing for aiortc tracks that produce fixed-size audio frames.

aiortc's ``RTCRtpSender`` calls a track's ``recv()`` in a loop and sends whatever
it returns at once, so a track that is fed from a queue must keep real-time pace
itself: frame *n* goes out no earlier than ``start + n * frame duration``. After
a loop stall longer than ``resync_seconds`` the schedule restarts instead of
bursting the backlog (a burst would only fill the far side's jitter buffer).
Both the gateway's caller track and the embedded core's mix track use this.
"""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np


class FramePacer:
    """Hands out presentation timestamps for consecutive frames, sleeping until each one is due."""

    def __init__(self, rate: int, samples_per_frame: int, resync_seconds: float = 0.1) -> None:
        self.rate = rate
        self.samples_per_frame = samples_per_frame
        self.resync_seconds = resync_seconds
        self._start: float | None = None
        self._next_pts = 0

    async def next_pts(self) -> int:
        """Wait until the next frame is due; return its pts (in samples at ``rate``)."""
        loop = asyncio.get_running_loop()
        pts = self._next_pts
        if self._start is None:
            self._start = loop.time()
        else:
            delay = self._start + pts / self.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -self.resync_seconds:
                self._start = loop.time() - pts / self.rate
        self._next_pts = pts + self.samples_per_frame
        return pts


def mono_s16_frame(pcm: np.ndarray, pts: int, rate: int) -> av.AudioFrame:
    """An ``av.AudioFrame`` (s16) holding the mono ``pcm`` at ``pts`` with time base 1/``rate``.

    It is laid out as stereo with both channels equal: aiortc's Opus encoder always encodes
    stereo and upmixes a mono frame through swresample at -3 dB, so a mono frame would reach
    every listener 3 dB quieter than a browser's (whose mono Opus decodes to L=R at unity).
    """
    mono = np.ascontiguousarray(pcm, dtype=np.int16)
    frame = av.AudioFrame(format="s16", layout="stereo", samples=len(mono))
    frame.planes[0].update(np.repeat(mono, 2).tobytes())
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, rate)
    return frame
