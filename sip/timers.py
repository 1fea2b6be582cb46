"""RFC 3261 timer values (17.1.1.1, table 4) and a deadline queue driven by an injected clock.

Nothing here reads the wall clock: callers pass ``now`` in, so unit tests run
whole transactions (64*T1 = 32 s) in microseconds with a fake clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class TimerValues:
    """T1 (RTT estimate), T2 (max non-INVITE retransmit interval), T4 (max network lifetime)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def transaction_timeout(self) -> float:
        """64*T1: Timers B, F, H, J (unreliable), L, and the 2xx give-up (RFC 3261 13.3.1.4)."""
        return 64 * self.t1


class TimerQueue:
    """Deadlines keyed by (owner, timer name); restarting a key replaces its deadline."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Hashable]] = []
        self._live: dict[Hashable, tuple[float, int]] = {}
        self._seq = itertools.count()

    def start(self, key: Hashable, deadline: float) -> None:
        """(Re)arm ``key`` to fire at ``deadline``."""
        seq = next(self._seq)
        self._live[key] = (deadline, seq)
        heapq.heappush(self._heap, (deadline, seq, key))

    def cancel(self, key: Hashable) -> None:
        """Disarm ``key`` (no error if it is not armed)."""
        self._live.pop(key, None)

    def is_armed(self, key: Hashable) -> bool:
        """Whether ``key`` is armed."""
        return key in self._live

    def _prune(self) -> None:
        while self._heap:
            deadline, seq, key = self._heap[0]
            if self._live.get(key) == (deadline, seq):
                return
            heapq.heappop(self._heap)

    def next_deadline(self) -> float | None:
        """The earliest armed deadline, or None."""
        self._prune()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[Hashable]:
        """Disarm and return every key whose deadline is at or before ``now``, earliest first."""
        due: list[Hashable] = []
        while True:
            self._prune()
            if not self._heap or self._heap[0][0] > now:
                return due
            _, _, key = heapq.heappop(self._heap)
            del self._live[key]
            due.append(key)

    def __len__(self) -> int:
        return len(self._live)
