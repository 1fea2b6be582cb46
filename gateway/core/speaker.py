"""Active-speaker selection with hysteresis, without I/O (the video switch's brain).

The meeting feeds one energy value per publisher per tick; each subscriber's
video track owns a :class:`SpeakerSelector` because its choice excludes its own
publisher. Hysteresis keeps the picture from flapping between two people who
talk over each other: a challenger must be clearly louder and the current
speaker must have held the picture for ``hold`` seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

SMOOTHING = 0.2
"""Weight of the newest block in the energy moving average (about 100 ms memory at 20 ms ticks)."""


def smooth(previous: float, block_energy: float, alpha: float = SMOOTHING) -> float:
    """Exponential moving average of block energy; what "recent audio energy" means here."""
    return (1.0 - alpha) * previous + alpha * block_energy


@dataclass
class SpeakerSelector:
    """Chooses one video source among candidates by recent energy, holding each choice >= ``hold`` s.

    ``margin`` is how many times louder a challenger must be than the current
    speaker to take over once the hold has expired.
    """

    hold: float = 1.0
    margin: float = 2.0
    current: str | None = None
    since: float = field(default=float("-inf"))

    def choose(self, energies: Mapping[str, float], now: float) -> str | None:
        """The source to show now, given candidates' smoothed energies (already without the excluded one)."""
        if not energies:
            self.current = None
            return None
        loudest = max(energies, key=lambda k: energies[k])
        if self.current is None or self.current not in energies:
            # First pick, or the shown speaker stopped sending video or left: switch at once.
            self.current, self.since = loudest, now
        elif (
            loudest != self.current
            and now - self.since >= self.hold
            and energies[loudest] > self.margin * energies[self.current]
        ):
            self.current, self.since = loudest, now
        return self.current
