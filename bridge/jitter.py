"""Adaptive, bounded jitter buffer for the legacy leg's inbound audio, without I/O.

Packets go in with ``put(seq, timestamp, ssrc, payload, arrival)`` as they arrive (``arrival``
from the caller's clock, in seconds); the leg's 20 ms clock calls ``pull()`` once per tick and
gets the frames to play for that tick (normally exactly one), in RTP timestamp order:

- ``audio``: a packet's payload, to decode;
- ``concealed``: a gap inside the stream (a lost or too-late packet, or a short underrun), to
  conceal (:class:`Concealer`, or the decoder's own PLC where it has one);
- nothing: the stream is not primed yet, or has been silent for longer than ``max_conceal``
  frames (the sender paused; inventing audio that long would be worse than silence).

Playout runs on the tick, not on arrivals: each pull moves the playout point one frame of RTP
time on, so a sender stall or a burst can never build a growing queue -- a packet whose time
has passed is dropped as late (counted), one too far ahead triggers a resync.

Adaptation (why not just RFC 3550's J times a factor): the buffer records, for each arrival, its
*margin* -- how far ahead of the playout point the packet arrived. Over a sliding window of
recent arrivals (``window``, about 2 s at 20 ms) the low quantile of margins says whether we
play too early (packets arriving after their time: grow by one concealed frame) or with more
slack than the jitter needs (shrink by dropping one frame). That is the delay the *measured*
jitter needs, including reordering, and it shrinks again once the jitter is gone because old
margins leave the window. The target is kept within [``min_delay``, ``max_delay``] and at most
one adjustment is made per ``adjust_every`` ticks, so the delay changes in 20 ms steps without
oscillating. RFC 3550 A.8 interarrival jitter is kept as well, for reporting.

An underrun (nothing buffered when a frame is due) is not a loss yet: the play point holds for
that tick (concealed frame, delay one frame longer), so a sender whose clock runs slower than
ours, or a delay spike, costs concealment rather than late drops; the bound and the shrinking
above take the added delay back.

Wrap-around: 16-bit sequence numbers and 32-bit timestamps are extended against the stream's
reference (signed distance), so a stream crossing 65535 -> 0 or 2^32 -> 0 plays through.
A new SSRC resets everything (a new stream primes afresh).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import structlog

log = structlog.get_logger("bridge.jitter")

FrameKind = Literal["audio", "concealed"]
PutResult = Literal["buffered", "duplicate", "late", "reset"]

#: A packet this far ahead of playout is not jitter but a timeline jump: start over from it.
RESYNC_AHEAD = 1.0
#: This many late packets in a row mean our playout point is behind the stream: start over.
RESYNC_LATE_RUN = 10


@dataclass(frozen=True, slots=True)
class Frame:
    """One thing to play this tick: ``audio`` (decode ``payload``) or ``concealed`` (``ticks``
    of RTP time with no packet: conceal)."""

    kind: FrameKind
    ticks: int
    payload: bytes = b""
    seq: int | None = None


@dataclass
class JitterCounters:
    """What the buffer did, for stats: each dropped packet counted once, by reason."""

    buffered: int = 0
    late: int = 0
    duplicate: int = 0
    concealed: int = 0
    resets: int = 0
    resyncs: int = 0
    grown: int = 0
    shrunk: int = 0
    #: Ticks that found the buffer empty and held the play point (the delay grew one frame).
    held: int = 0
    overflow: int = 0


def _signed(diff: int, bits: int) -> int:
    """``diff`` modulo 2**bits as a signed distance (RFC 3550 A.1 style wrap handling)."""
    half = 1 << (bits - 1)
    return (diff + half) % (1 << bits) - half


@dataclass
class _Packet:
    seq: int
    ts: int
    payload: bytes


class JitterBuffer:
    """See the module docstring. ``clock_rate`` is the RTP clock (8000 for G.711/G.722),
    ``frame_ticks`` the RTP ticks per pull (160 = 20 ms at 8 kHz)."""

    def __init__(self, *, clock_rate: int, frame_ticks: int, min_delay: float = 0.02,
                 max_delay: float = 0.2, max_conceal: int = 5, window: int = 100,
                 adjust_every: int = 10, low_quantile: float = 0.03) -> None:
        if not 0 < min_delay <= max_delay:
            raise ValueError(f"need 0 < min_delay <= max_delay, got {min_delay}, {max_delay}")
        self.clock_rate = clock_rate
        self.frame_ticks = frame_ticks
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.max_conceal = max_conceal
        self.adjust_every = adjust_every
        self.low_quantile = low_quantile
        self.counters = JitterCounters()
        self._window: deque[float] = deque(maxlen=window)
        self._capacity = math.ceil((max_delay + RESYNC_AHEAD) * clock_rate / frame_ticks) + 4
        self._reset(None)

    # -- state -----------------------------------------------------------------------------

    def _reset(self, ssrc: int | None) -> None:
        self.ssrc = ssrc
        self._packets: dict[int, _Packet] = {}
        self._seq_ref: int | None = None  # extended seq of the last packet put (unwrap reference)
        self._ts_ref: int | None = None
        self._played_seqs: deque[int] = deque(maxlen=128)
        self._play_ts: int | None = None  # extended RTP time at the start of the next pull
        self._covered_until: int | None = None  # extended RTP time played (or concealed) up to
        self._prime_at: float | None = None  # when playout starts (first arrival + min_delay)
        self._offset: float | None = None  # play point (s of RTP time) minus clock time at last pull
        self._window.clear()
        self._gap_frames = 0
        self._late_run = 0
        self._since_adjust = 0
        self._ptime_ticks = self.frame_ticks
        self._transit: float | None = None
        #: RFC 3550 A.8 interarrival jitter, in RTP timestamp units.
        self.jitter = 0.0

    def reset(self) -> None:
        """Forget the stream (re-targeted or re-keyed leg): the next packet primes afresh."""
        self._reset(None)

    def _extend(self, seq: int, ts: int) -> tuple[int, int]:
        if self._seq_ref is None or self._ts_ref is None:
            return seq + (1 << 16), ts + (1 << 32)  # headroom so early reordering stays positive
        return (self._seq_ref + _signed(seq - self._seq_ref, 16),
                self._ts_ref + _signed(ts - self._ts_ref, 32))

    # -- input -------------------------------------------------------------------------------

    def put(self, seq: int, timestamp: int, ssrc: int, payload: bytes, arrival: float) -> PutResult:
        """File one packet; the result says what happened to it (late/duplicate are dropped)."""
        result: PutResult = "buffered"
        if ssrc != self.ssrc:
            if self.ssrc is not None:
                self.counters.resets += 1
                log.info("bridge.jitter.reset", reason="ssrc_change")
                result = "reset"
            self._reset(ssrc)
        xseq, xts = self._extend(seq, timestamp)
        if self._play_ts is not None and xts - self._play_ts > RESYNC_AHEAD * self.clock_rate:
            self._resync("jump_ahead")
            result = "reset"
            xseq, xts = self._extend(seq, timestamp)
        self._note_arrival(xseq, xts, arrival)
        if xseq in self._packets or xseq in self._played_seqs:
            self.counters.duplicate += 1
            return "duplicate"
        if self._covered_until is not None and xts + self._ptime_ticks <= self._covered_until:
            self.counters.late += 1
            self._late_run += 1
            if self._late_run >= RESYNC_LATE_RUN:
                self._resync("behind")
                return self._file(seq, timestamp, payload, arrival, "reset")
            return "late"
        self._late_run = 0
        return self._file_extended(xseq, xts, payload, arrival, result)

    def _file(self, seq: int, ts: int, payload: bytes, arrival: float, result: PutResult) -> PutResult:
        xseq, xts = self._extend(seq, ts)
        self._note_arrival(xseq, xts, arrival)
        return self._file_extended(xseq, xts, payload, arrival, result)

    def _file_extended(self, xseq: int, xts: int, payload: bytes, arrival: float,
                       result: PutResult) -> PutResult:
        if len(self._packets) >= self._capacity:  # only before playout starts; a hard bound anyway
            del self._packets[min(self._packets)]
            self.counters.overflow += 1
        prev = self._packets.get(xseq - 1)
        if prev is not None and 0 < xts - prev.ts <= self.clock_rate // 8:
            self._ptime_ticks = xts - prev.ts
        self._packets[xseq] = _Packet(xseq, xts, payload)
        if self._seq_ref is None or xseq > self._seq_ref:
            self._seq_ref, self._ts_ref = xseq, xts
        if self._prime_at is None:
            self._prime_at = arrival + self.min_delay
        self.counters.buffered += 1
        return result

    def _note_arrival(self, xseq: int, xts: int, arrival: float) -> None:
        """Interarrival jitter (RFC 3550 A.8) and the packet's margin for adaptation."""
        if self._seq_ref is None:
            self._seq_ref, self._ts_ref = xseq, xts
        transit = arrival - xts / self.clock_rate
        if self._transit is not None:
            self.jitter += (abs(transit - self._transit) * self.clock_rate - self.jitter) / 16.0
        self._transit = transit
        if self._offset is not None:
            self._window.append(xts / self.clock_rate - arrival - self._offset)

    def _resync(self, reason: str) -> None:
        """Drop the playout point and the queue; the next packet primes a fresh start."""
        self.counters.resyncs += 1
        log.info("bridge.jitter.resync", reason=reason, buffered=len(self._packets))
        ssrc, jitter = self.ssrc, self.jitter
        self._reset(ssrc)
        self.jitter = jitter

    # -- output ------------------------------------------------------------------------------

    def pull(self, now: float) -> list[Frame]:
        """What to play for the tick at ``now`` (see the module docstring)."""
        if self._play_ts is None:
            if self._prime_at is None or now < self._prime_at or not self._packets:
                return []
            first = self._packets[min(self._packets)]
            self._play_ts = first.ts
            self._covered_until = first.ts
            self._cap((self.min_delay + self.max_delay) / 2)  # a burst at start (or after a resync)
        assert self._covered_until is not None
        self._cap(self.max_delay)
        self._offset = self._play_ts / self.clock_rate - now
        adjust = self._adjustment()
        if adjust > 0:  # grow: play a concealed frame without moving the playout point on
            self.counters.grown += 1
            self._shift_window(self.frame_ticks)
            return [self._conceal_frame()] if self._gap_frames < self.max_conceal else []
        if adjust < 0:  # shrink: skip one frame of RTP time
            self.counters.shrunk += 1
            self._shift_window(-self.frame_ticks)
            self._skip(self._play_ts + self.frame_ticks)
        end = self._play_ts + self.frame_ticks
        frames: list[Frame] = []
        for xseq in sorted(self._packets):
            p = self._packets[xseq]
            if p.ts >= end:
                break
            del self._packets[xseq]
            if p.ts + self._ptime_ticks <= self._covered_until:
                self.counters.late += 1  # overtaken while waiting (a shrink skipped it)
                continue
            frames.append(Frame("audio", self._ptime_ticks, p.payload, xseq & 0xFFFF))
            self._played_seqs.append(xseq)
            self._covered_until = max(self._covered_until, p.ts + self._ptime_ticks)
        if self._covered_until < end:
            played = bool(frames)
            if self._gap_frames < self.max_conceal:
                frames.append(self._conceal_frame())
            self._gap_frames += 1
            if not self._packets and not played:
                # Underrun: nothing later is here either, so the packet is not lost (yet) but
                # late -- a sender slower than our clock, or a delay spike. Hold the play point
                # (the delay grows by this frame) instead of declaring it late; a gap with later
                # packets waiting is a loss and moves on. The bound and the adaptation take any
                # excess delay back.
                self.counters.held += 1
                return frames
            self._covered_until = end
        elif frames:
            self._gap_frames = 0
        self._play_ts = end
        return frames

    def _cap(self, limit: float) -> None:
        """Hard bound: never hold more than ``limit`` of media ahead of the play point; skip
        whole frames of the oldest (counted as ``overflow``) when a burst would exceed it."""
        assert self._play_ts is not None
        if not self._packets:
            return
        newest = max(p.ts for p in self._packets.values())
        excess = newest - self._play_ts - int(limit * self.clock_rate)
        if excess > 0:
            frames = -(-excess // self.frame_ticks)
            before = len(self._packets)
            self._skip(self._play_ts + frames * self.frame_ticks)
            self.counters.overflow += before - len(self._packets)
            self._shift_window(-frames * self.frame_ticks)

    def _conceal_frame(self) -> Frame:
        self.counters.concealed += 1
        return Frame("concealed", self.frame_ticks)

    def _skip(self, until: int) -> None:
        for xseq in sorted(self._packets):
            p = self._packets[xseq]
            if p.ts >= until:
                break
            del self._packets[xseq]
            self._played_seqs.append(xseq)
        self._covered_until = max(self._covered_until or until, until)
        self._play_ts = until

    def _shift_window(self, ticks: int) -> None:
        """After a grow (+) or shrink (-), recorded margins move with the playout point."""
        seconds = ticks / self.clock_rate
        for i in range(len(self._window)):
            self._window[i] += seconds

    def _adjustment(self) -> int:
        """+1 grow, -1 shrink, 0 keep; at most once per ``adjust_every`` ticks."""
        self._since_adjust += 1
        if self._since_adjust < self.adjust_every or len(self._window) < 10:
            return 0
        margins = np.fromiter(self._window, dtype=np.float64)
        low = float(np.quantile(margins, self.low_quantile))
        frame = self.frame_ticks / self.clock_rate
        depth = self.depth
        change = 0
        if low < 0 and depth + frame <= self.max_delay:
            change = 1
        elif depth - frame >= self.min_delay and (low > frame or depth > self.max_delay):
            change = -1
        if change:
            self._since_adjust = 0
        return change

    # -- figures -----------------------------------------------------------------------------

    @property
    def depth(self) -> float:
        """Playout delay in seconds: how far the newest buffered media runs ahead of the play point,
        or (when the margin window is full) the typical arrival margin."""
        if self._play_ts is None:
            return 0.0
        if self._window:
            return max(0.0, float(np.median(np.fromiter(self._window, dtype=np.float64))))
        if not self._packets:
            return 0.0
        newest = max(p.ts for p in self._packets.values()) + self._ptime_ticks
        return max(0.0, (newest - self._play_ts) / self.clock_rate)

    @property
    def depth_ms(self) -> float:
        return self.depth * 1000.0

    @property
    def jitter_ms(self) -> float:
        """RFC 3550 A.8 interarrival jitter of what was put, in ms."""
        return self.jitter * 1000.0 / self.clock_rate

    @property
    def queued(self) -> int:
        return len(self._packets)


@dataclass
class Concealer:
    """Packet-loss concealment for codecs without their own PLC (G.711 has none; FFmpeg's G.722
    decoder as PyAV exposes it has none either): repeat the last good frame, attenuated 6 dB per
    consecutive concealed frame, fading to silence after ``max_frames``. Crude next to G.711
    Appendix I, but it keeps a single loss inaudible-ish and never invents audio for long.

    A decoder with a ``conceal(samples) -> np.ndarray`` method (e.g. Opus) is used instead.
    """

    samples_per_frame: int
    max_frames: int = 5
    _last: np.ndarray | None = field(default=None, repr=False)
    _run: int = 0

    def good(self, pcm: np.ndarray) -> None:
        """A decoded frame was played: remember it, end any concealment run."""
        if pcm.size:
            self._last = pcm
        self._run = 0

    def conceal(self, decoder: object | None = None) -> np.ndarray:
        """One frame to play in place of a missing one."""
        own = getattr(decoder, "conceal", None)
        self._run += 1
        if callable(own):
            pcm = own(self.samples_per_frame)
            if isinstance(pcm, np.ndarray):
                return pcm.astype(np.int16, copy=False)
        if self._last is None or self._run > self.max_frames:
            return np.zeros(self.samples_per_frame, dtype=np.int16)
        src = self._last
        reps = -(-self.samples_per_frame // src.size)
        frame = np.tile(src, reps)[:self.samples_per_frame].astype(np.float64)
        return (frame * 0.5 ** self._run).astype(np.int16)
