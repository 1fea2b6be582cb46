"""PIN attempt counting and lockout, per meeting and caller source.

A wrong PIN (dialled in the dial string or entered in the IVR) counts one attempt for the pair
(meeting, source address); after ``pin_attempts`` wrong ones that source is locked out of that
meeting for ``window`` seconds, so guessing a 4-digit PIN by redialling is slow.  Keyed by source
so one caller's typos never lock out the others.  Only counters live here: no PIN, and the source
address is held in memory only (never logged).  The clock is injected for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

#: How long a locked-out source stays locked out (and how long wrong attempts are remembered).
DEFAULT_WINDOW = 300.0


@dataclass
class _Attempts:
    wrong: int
    since: float


class PinAttempts:
    """Counts wrong PINs per (meeting, source) within a sliding window."""

    def __init__(self, *, window: float = DEFAULT_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._wrong: dict[tuple[str, str], _Attempts] = {}

    def _current(self, key: tuple[str, str]) -> _Attempts | None:
        found = self._wrong.get(key)
        if found is not None and self._clock() - found.since >= self.window:
            del self._wrong[key]
            return None
        return found

    def wrong(self, meeting: str, source: str) -> int:
        """Record one wrong PIN; returns the number of wrong ones in the window so far."""
        key = (meeting, source)
        found = self._current(key)
        if found is None:
            found = self._wrong[key] = _Attempts(0, self._clock())
        found.wrong += 1
        return found.wrong

    def locked(self, meeting: str, source: str, limit: int) -> bool:
        """Whether ``source`` has used up its ``limit`` attempts for ``meeting``."""
        found = self._current((meeting, source))
        return found is not None and found.wrong >= limit

    def succeeded(self, meeting: str, source: str) -> None:
        """A right PIN clears the count (typos before it are forgiven)."""
        self._wrong.pop((meeting, source), None)
