"""A low-delay replacement for aiortc's audio jitter buffer on the receivers we own.

aiortc gives every audio ``RTCRtpReceiver`` a ``JitterBuffer(capacity=16, prefetch=4)``
(aiortc/rtcrtpreceiver.py). Two costs follow, both measured on the gateway's path:

- ``prefetch=4`` holds each frame until four later frames have arrived: a fixed 80 ms at
  every aiortc receiver an utterance crosses, for reordering protection our own FIFOs
  downstream (bridge.backlog) do not need on loopback or a LAN;
- a lost packet at the buffer's origin stops output until the buffer is *full* (16 packets)
  and then only the hole is removed: the 15 packets behind it stay queued and, since one frame
  leaves per arriving packet, they stay as ~300 ms of added delay for the rest of the call.
  Nothing downstream can shed that: downstream sees one frame per packet, a steady flow.

:class:`LowDelayJitterBuffer` keeps aiortc's reassembly (it subclasses it: no fork) but
releases a frame as soon as the next one arrives (``prefetch=1``) and gives up on a missing
packet once ``max_hold`` packets wait behind it, so a loss costs one frame of audio instead of
a lasting backlog. :func:`use_low_delay_jitter_buffer` installs it on one receiver; aiortc
offers no parameter for it, so this sets the receiver's private, name-mangled attribute (the
same way :func:`bridge.webrtc_leg.cap_remb` reaches the estimator).
"""

from __future__ import annotations

from typing import Any

import structlog
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

log = structlog.get_logger("bridge.audio_jitter")

PREFETCH = 1
"""Frames held behind the one released: the 20 ms minimum of aiortc's reassembly."""

MAX_HOLD = 1
"""Packets allowed to wait behind a missing one before it is given up: the first one already.

Waiting longer buys tolerance of reordering (rare on the loopback or LAN hop to the core) but
costs as many frames again, since the packets that waited must then be dropped to get back to
``prefetch`` (one frame leaves per arriving packet, so nothing else would ever drain them)."""

CAPACITY = 16
"""Slots in the ring (aiortc requires a power of two); only reached by a burst of misordering."""


class LowDelayJitterBuffer(JitterBuffer):
    """aiortc's audio jitter buffer with ``prefetch=1`` that skips a hole after ``max_hold`` packets."""

    def __init__(self, capacity: int = CAPACITY, prefetch: int = PREFETCH, max_hold: int = MAX_HOLD) -> None:
        if max_hold < 1:
            raise ValueError("max_hold must be at least 1")
        super().__init__(capacity=capacity, prefetch=prefetch)
        self.max_hold = max_hold
        self.holes_skipped = 0
        """Missing packets given up on (a counter for stats and tests)."""
        self.packets_shed = 0
        """Packets dropped after a skipped hole to get back to ``prefetch`` (see ``MAX_HOLD``)."""

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli, frame = super().add(packet)
        if frame is None and self._waiting_behind_hole() >= self.max_hold:
            frame = self._release_across_hole(packet.sequence_number)
        return pli, frame

    def _contiguous(self) -> int:
        """Packets queued from the origin up to the first empty slot."""
        assert self._origin is not None
        n = 0
        while n < self._capacity and self._packets[(self._origin + n) % self._capacity] is not None:
            n += 1
        return n

    def _waiting_behind_hole(self) -> int:
        """Packets queued beyond the first missing one (0 when nothing is missing)."""
        if self._origin is None:
            return 0
        return sum(p is not None for p in self._packets) - self._contiguous()

    def _release_across_hole(self, sequence_number: int) -> JitterFrame | None:
        """Give up on the missing packet(s): release the frame before the hole, if any, and move
        the origin to the first packet after it."""
        assert self._origin is not None
        frame = None
        run = self._contiguous()
        if run:
            # Nothing later is contiguous, so the origin's run is one whole frame (else aiortc's
            # prefetch of 1 would have released it already).
            packets = [self._packets[(self._origin + i) % self._capacity] for i in range(run)]
            first = packets[0]
            assert first is not None
            frame = JitterFrame(data=b"".join(p._data for p in packets if p is not None),  # type: ignore[attr-defined]
                                timestamp=first.timestamp)
            self.remove(run)
        skipped = 0
        while self._packets[self._origin % self._capacity] is None and skipped < self._capacity:
            self._origin = (self._origin + 1) & 0xFFFF
            skipped += 1
        self.holes_skipped += skipped
        # Keep no more queued than prefetch allows after the frame that leaves now.
        excess = self._contiguous() - self._prefetch - (0 if frame is not None else 1)
        if excess > 0:
            self.remove(excess)
            self.packets_shed += excess
        log.debug("bridge.audio_jitter.hole_skipped", packets=skipped, total=self.holes_skipped,
                  shed=max(excess, 0))
        return frame if frame is not None else self._remove_frame(sequence_number)


def use_low_delay_jitter_buffer(receiver: Any, *, max_hold: int = MAX_HOLD) -> bool:
    """Give one aiortc audio ``receiver`` a :class:`LowDelayJitterBuffer` (call before media flows).

    Returns False, leaving the receiver as it was, if this aiortc has no such attribute."""
    attribute = "_RTCRtpReceiver__jitter_buffer"
    if not isinstance(getattr(receiver, attribute, None), JitterBuffer):
        log.warning("bridge.audio_jitter.unsupported", reason="aiortc receiver has no jitter buffer attribute")
        return False
    setattr(receiver, attribute, LowDelayJitterBuffer(max_hold=max_hold))
    return True
