"""Standing-backlog shedding for a queue between two clocks (issue 4, issue 6).

Every audio hand-off in the gateway and the core is a FIFO between a producer's clock and a
consumer's 20 ms clock. A cap alone bounds the delay but never lowers it: after one event-loop
stall the producer's packets arrive as a burst, the consumer (which resynchronises rather than
bursting) takes one frame per tick, and the burst stays queued as added delay for the rest of the
call -- up to the cap at every hop. This was the "91 ms to 572 ms and never back" jump of the
calls benchmark.

:class:`BacklogDrain` tells such a backlog from jitter the way CoDel does: not by the queue's
depth, which jitter makes swing, but by its *minimum* depth over a window of consumer reads.
Jitter lets the queue run near empty at least once per window; a backlog keeps a floor under it.
When a whole window's floor stays above ``target``, that standing excess is shed (by the queue
that owns the samples), so a stall's backlog is gone one window after it appeared, while the
queue never sheds below ``target`` and so never causes an underrun of its own.

It counts consumer reads instead of reading a clock: each read is one tick of the consumer's
20 ms clock, so the logic is sans-IO and a unit test's loop of reads is the fake clock. Depths
are in whatever unit the owning queue counts (samples or blocks); one helper serves every FIFO.
"""

from __future__ import annotations

import structlog

log = structlog.get_logger("bridge.backlog")

PATIENCE_READS = 12
"""Consumer reads (20 ms each: 240 ms) a backlog must stand before it is shed."""


class BacklogDrain:
    """Decides, once per consumer read, how much of a queue's standing backlog to shed now."""

    def __init__(self, target: int, patience: int = PATIENCE_READS, *, queue: str = "fifo") -> None:
        if target < 0 or patience < 1:
            raise ValueError("target must be >= 0 and patience >= 1")
        self.target = target
        self.patience = patience
        self.queue = queue
        self._reads = 0
        self._floor: int | None = None
        self.shed = 0
        """Units shed so far (a counter for stats and tests)."""

    def after_read(self, depth: int) -> int:
        """Report the depth left after one consumer read; returns how many units to shed now
        (0 unless the window just closed with its floor above ``target``)."""
        self._floor = depth if self._floor is None else min(self._floor, depth)
        self._reads += 1
        if self._reads < self.patience:
            return 0
        excess = self._floor - self.target
        self._reads, self._floor = 0, None
        if excess <= 0:
            return 0
        self.shed += excess
        log.info("bridge.backlog.shed", queue=self.queue, units=excess, target=self.target,
                 shed_total=self.shed)
        return excess

    def reset(self) -> None:
        """Forget the current window (the queue was cleared or restarted)."""
        self._reads, self._floor = 0, None
