"""Per-source limits on new INVITEs and OPTIONS: token buckets, sans-IO (clock passed in).

A flood of out-of-dialog requests from one address must not starve established calls
(issue 3, robustness).  Each source IP gets one bucket per method: ``rate`` requests per
second sustained, ``burst`` at once.  Over the bucket the request is refused with
``503 Service Unavailable`` and ``Retry-After`` (RFC 3261 21.5.4, 20.33) -- cheap and
stateless; once a source has been refused ``hard_limit`` times within one refill of the
bucket it is ignored outright (dropped, no answer: RFC 3261 allows silently discarding
requests under overload, and answering a flood is work too).  Only requests that would create
state count: retransmissions, in-dialog requests and ACK/CANCEL/BYE are never limited.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

import structlog

log = structlog.get_logger("sip.ratelimit")


class Verdict(Enum):
    """What to do with a request: go on, answer 503 + Retry-After, or drop silently."""

    ALLOW = "allow"
    REFUSE = "refuse"
    DROP = "drop"


@dataclass(frozen=True)
class Limit:
    """One method's budget per source: ``rate`` per second sustained, ``burst`` at once,
    and ``hard_limit`` refusals (503s) per refill before the source is dropped silently."""

    rate: float
    burst: int
    hard_limit: int = 20

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.burst >= 1 and self.hard_limit >= 0):
            raise ValueError(f"invalid rate limit {self}: rate > 0, burst >= 1, hard_limit >= 0")


#: Defaults: a room system places a handful of calls; monitoring may OPTIONS-ping often.
DEFAULT_LIMITS: dict[str, Limit] = {
    "INVITE": Limit(rate=5.0, burst=10, hard_limit=20),
    "OPTIONS": Limit(rate=10.0, burst=20, hard_limit=40),
}


@dataclass
class _Bucket:
    tokens: float
    updated: float
    refused: float = 0.0  # leaky count of recent refusals (drains at `rate` per second)
    dropped: int = field(default=0)


class SourceLimiter:
    """Token buckets keyed by (source IP, method).  ``check(ip, method, now)`` spends a token.

    Memory is bounded: at most ``max_sources`` buckets; full ones (idle, refilled) are
    forgotten first, then the oldest.
    """

    def __init__(self, limits: dict[str, Limit] | None = None, *, max_sources: int = 10000) -> None:
        self.limits = dict(DEFAULT_LIMITS if limits is None else limits)
        self.max_sources = max_sources
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self.refused = 0
        self.dropped = 0

    def retry_after(self, method: str) -> int:
        """Seconds a refused source should wait for a token (RFC 3261 20.33), at least 1."""
        limit = self.limits[method]
        return max(1, math.ceil(1.0 / limit.rate))

    def check(self, source_ip: str, method: str, now: float) -> Verdict:
        """Spend one of ``source_ip``'s ``method`` tokens, or say how to refuse."""
        limit = self.limits.get(method)
        if limit is None:
            return Verdict.ALLOW
        key = (source_ip, method)
        b = self._buckets.get(key)
        if b is None:
            self._evict()
            b = self._buckets[key] = _Bucket(tokens=float(limit.burst), updated=now)
        elapsed = max(0.0, now - b.updated)
        b.tokens = min(float(limit.burst), b.tokens + elapsed * limit.rate)
        b.refused = max(0.0, b.refused - elapsed * limit.rate)
        b.updated = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return Verdict.ALLOW
        if b.refused >= limit.hard_limit:
            b.dropped += 1
            self.dropped += 1
            if b.dropped == 1:
                log.warning("sip.ratelimit.dropping", method=method, hard_limit=limit.hard_limit)
            return Verdict.DROP
        b.refused += 1.0
        b.dropped = 0
        self.refused += 1
        return Verdict.REFUSE

    def _evict(self) -> None:
        if len(self._buckets) < self.max_sources:
            return
        victim = next(iter(self._buckets))
        del self._buckets[victim]
