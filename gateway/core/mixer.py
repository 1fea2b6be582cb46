"""Audio mixing without I/O: per-publisher jitter FIFOs, N-1 mixes, a soft limiter.

Everything here is plain numpy on 20 ms blocks of mono 48 kHz int16 so the
mixer can be unit-tested without a loop, a clock or a peer connection. The
meeting's clock (``gateway.core.meeting``) calls :func:`mix_minus` once per tick.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from bridge.backlog import BacklogDrain

SAMPLE_RATE = 48_000
"""Opus' native rate; aiortc decodes to it, so no resampling in the common case."""

BLOCK_SAMPLES = 960
"""Samples per 20 ms tick at 48 kHz (one Opus frame)."""

TICK_SECONDS = BLOCK_SAMPLES / SAMPLE_RATE

INT16_MAX = 32767
INT16_MIN = -32768

SILENCE = np.zeros(BLOCK_SAMPLES, dtype=np.int16)
SILENCE.setflags(write=False)

LIMITER_THRESHOLD = 24_576
"""Sums below 0.75 full scale pass unchanged; above it a tanh knee bends them under full scale."""


def soft_limit(mix: np.ndarray, threshold: int = LIMITER_THRESHOLD) -> np.ndarray:
    """Map an int32 sum of int16 blocks into int16 without hard clipping where possible.

    Samples within ``threshold`` are untouched (so one or two normal talkers are
    bit-exact sums); beyond it the excess is compressed with ``tanh`` so the
    output approaches but never exceeds full scale. Stateless on purpose: a
    look-ahead limiter would add latency and state per subscriber. The final
    ``clip`` is the saturating guarantee.
    """
    x = mix.astype(np.int32, copy=False)
    over = np.abs(x) > threshold
    if not over.any():
        return x.astype(np.int16)
    out = x.astype(np.float64)
    headroom = INT16_MAX - threshold
    excess = (np.abs(out[over]) - threshold) / headroom
    out[over] = np.sign(out[over]) * (threshold + headroom * np.tanh(excess))
    return np.clip(np.rint(out), INT16_MIN, INT16_MAX).astype(np.int16)


def saturating_sum(blocks: Iterable[np.ndarray]) -> np.ndarray:
    """The plain int16 saturating sum (the minimum clipping protection); kept for comparison and tests."""
    total = np.zeros(BLOCK_SAMPLES, dtype=np.int32)
    for block in blocks:
        total += block
    return np.clip(total, INT16_MIN, INT16_MAX).astype(np.int16)


def mix_minus(
    blocks: Mapping[str, np.ndarray],
    exclusions: Iterable[str | None],
) -> dict[str | None, np.ndarray]:
    """One tick's mixes: the full mix (key ``None``) and the mix minus each excluded publisher.

    The full sum is computed once in int32 and each N-1 mix is that sum minus
    one block, so the cost is O(publishers + distinct exclusions), not
    O(publishers x subscribers). Exclusions naming no current publisher get the
    full mix (the excluded participant has not published yet or has left).
    """
    total = np.zeros(BLOCK_SAMPLES, dtype=np.int32)
    for block in blocks.values():
        total += block
    full = soft_limit(total)
    result: dict[str | None, np.ndarray] = {None: full}
    for excluded in exclusions:
        if excluded is None or excluded in result:
            continue
        own = blocks.get(excluded)
        result[excluded] = full if own is None else soft_limit(total - own)
    return result


def block_energy(block: np.ndarray) -> float:
    """Mean square of a block, as a fraction of full scale squared (0..1): the speaker detector's input."""
    x = block.astype(np.float64) / 32768.0
    return float(np.mean(x * x))


class SampleFifo:
    """A bounded FIFO of one publisher's mono samples with a small start-up/underrun prebuffer.

    Network arrival is bursty while the mixer takes exactly one block per tick.
    The FIFO holds back output until ``prebuffer`` samples are queued (so a
    publisher whose packets arrive a few ms late does not alternate sound and
    silence every tick), returns silence while prebuffering, and drops the
    oldest samples beyond ``capacity`` so latency stays bounded when the
    publisher's clock runs faster than ours. Below that hard cap a
    :class:`~bridge.backlog.BacklogDrain` sheds whatever stood above ``target``
    for a whole window of ticks, so a stall's backlog does not stay as delay.
    """

    def __init__(self, capacity: int = 10 * BLOCK_SAMPLES, prebuffer: int = 2 * BLOCK_SAMPLES,
                 target: int | None = BLOCK_SAMPLES) -> None:
        if prebuffer > capacity:
            raise ValueError("prebuffer must not exceed capacity")
        #: None: the cap alone bounds the queue (no backlog shedding).
        self._drain = None if target is None else BacklogDrain(target, queue="core.publisher")
        self._buf = np.zeros(capacity, dtype=np.int16)
        self._capacity = capacity
        self._prebuffer = prebuffer
        self._start = 0
        self._size = 0
        self._primed = False
        self.dropped = 0
        """Samples discarded because the FIFO was full or a backlog was shed (a counter for stats)."""
        self.underruns = 0
        """Ticks that found fewer than a block queued after playback had started."""

    @property
    def shed(self) -> int:
        """Samples dropped because a backlog stood above the target (part of ``dropped``)."""
        return 0 if self._drain is None else self._drain.shed

    def __len__(self) -> int:
        return self._size

    def write(self, samples: np.ndarray) -> None:
        """Append samples; when that overflows the capacity, the oldest ones are dropped."""
        samples = np.asarray(samples, dtype=np.int16).ravel()
        n = samples.size
        if n >= self._capacity:
            self.dropped += self._size + n - self._capacity
            self._buf[:] = samples[-self._capacity:]
            self._start, self._size = 0, self._capacity
            return
        overflow = self._size + n - self._capacity
        if overflow > 0:
            self._start = (self._start + overflow) % self._capacity
            self._size -= overflow
            self.dropped += overflow
        end = (self._start + self._size) % self._capacity
        first = min(n, self._capacity - end)
        self._buf[end:end + first] = samples[:first]
        if first < n:
            self._buf[: n - first] = samples[first:]
        self._size += n

    def read(self, n: int = BLOCK_SAMPLES) -> np.ndarray:
        """Take ``n`` samples, zero-padded if short; silence while (re)prebuffering."""
        if not self._primed:
            if self._size < self._prebuffer:
                return np.zeros(n, dtype=np.int16)
            self._primed = True
        out = np.zeros(n, dtype=np.int16)
        take = min(n, self._size)
        first = min(take, self._capacity - self._start)
        out[:first] = self._buf[self._start:self._start + first]
        if first < take:
            out[first:take] = self._buf[: take - first]
        self._start = (self._start + take) % self._capacity
        self._size -= take
        if take < n:
            # Ran dry: wait for a fresh prebuffer rather than playing every other packet.
            self.underruns += 1
            self._primed = False
        if self._drain is not None:
            self._discard(self._drain.after_read(self._size))
        return out

    def _discard(self, n: int) -> None:
        """Drop the ``n`` oldest queued samples (a standing backlog)."""
        if n > 0:
            self._start = (self._start + n) % self._capacity
            self._size -= n
            self.dropped += n
