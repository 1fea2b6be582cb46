"""Per-source limits on new INVITEs and OPTIONS: token buckets, sans-IO (clock passed in).

A flood of out-of-dialog requests from one address must not starve established calls
(issue 3, robustness).  Each source IP gets one bucket per method: ``rate`` requests per
second sustained, ``burst`` at once.  Over the bucket the request is refused with
``503 Service Unavailable`` and ``Retry-After`` (RFC 3261 21.5.4, 20.33) -- cheap and
stateless; once a source has been refused ``hard_limit`` times within one refill of the
bucket it is ignored outright (dropped, no answer: RFC 3261 allows silently discarding
requests under overload, and answering a flood is work too).  Only requests that would create
state count: retransmissions, in-dialog requests and ACK/CANCEL/BYE are never limited.

In front of the parser, :class:`PreParseGate` keeps a looser bucket per source that reads only
the start line (and, for sources with an established call, the Call-ID), so a flood is mostly
dropped before the costly parse.  :class:`SipLimits` gathers every limit for ``sip.limits``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
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


#: Requests that never spend a pre-parse token: an ACK creates no state and cannot be answered,
#: so dropping one only makes a peer retransmit; everything else from a quiet source counts.
_PREPARSE_FREE = frozenset({b"ACK"})
#: The pre-parse gate's default per source: well above what the per-method limits let through
#: (INVITE 5/s, OPTIONS 10/s), so those still answer 503 first; beyond it packets are not parsed.
DEFAULT_PREPARSE = Limit(rate=30.0, burst=60, hard_limit=0)


class PreParseGate:
    """A per-source token bucket in front of the parser: reads only the first line.

    Parsing is the expensive part of a flood (RFC 3261 messages are text with many headers), and
    :class:`SourceLimiter` sees a request only once it was parsed.  This gate reads the start
    line: responses and ACKs always pass; any other request spends one token of its source's
    bucket, unless ``in_dialog(data)`` says it belongs to an established call (the endpoint asks
    only for sources that have one, and then reads just the Call-ID header: :func:`call_id_of`),
    so BYE, re-INVITE and INFO DTMF of live calls are never throttled even when a flood comes from
    the same address.  A request without a token is dropped unparsed (``sip.ratelimit.dropping``
    once per source and episode, ``sip.flood.gated`` on the first and every 1000th drop).
    The buckets are :class:`SourceLimiter`'s, under the pseudo-method ``*`` with no refusals.
    """

    def __init__(self, limit: Limit = DEFAULT_PREPARSE, *, max_sources: int = 10000) -> None:
        self.limit = Limit(limit.rate, limit.burst, hard_limit=0)
        self._buckets = SourceLimiter({"*": self.limit}, max_sources=max_sources)
        self.dropped = 0

    def admit(self, data: bytes, source_ip: str, now: float, *,
              in_dialog: Callable[[bytes], bool] | None = None) -> bool:
        """Whether to parse ``data`` from ``source_ip`` (False: drop it unparsed)."""
        if data.startswith(b"SIP/"):
            return True
        method = data[:data.find(b" ", 0, 32)] if b" " in data[:32] else data[:32]
        if method in _PREPARSE_FREE or (in_dialog is not None and in_dialog(data)):
            return True
        if self._buckets.check(source_ip, "*", now) is Verdict.ALLOW:
            return True
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.info("sip.flood.gated", method=method.decode("ascii", "replace")[:16],
                     dropped_total=self.dropped)
        return False


_CALL_ID = re.compile(rb"\r?\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)


def call_id_of(data: bytes) -> str | None:
    """The Call-ID of a raw message, read from its header section without parsing the rest
    (RFC 3261 20.8, compact form ``i``); None when there is none."""
    head = data[:8192].split(b"\r\n\r\n", 1)[0]
    found = _CALL_ID.search(head)
    return found.group(1).strip().decode("utf-8", "replace") if found else None


@dataclass(frozen=True)
class SipLimits:
    """Every flood and size limit of one endpoint (``sip.limits`` in gateway.yaml).

    ``preparse`` None turns the pre-parse gate off; ``max_message_bytes`` None keeps only the
    framing's own bounds (64 KiB of headers, 1 MiB of body on streams); ``max_transactions`` None
    keeps server transactions unbounded (they end on their own timers, 32 s at most on UDP).
    """

    invite: Limit = DEFAULT_LIMITS["INVITE"]
    options: Limit = DEFAULT_LIMITS["OPTIONS"]
    preparse: Limit | None = DEFAULT_PREPARSE
    max_message_bytes: int | None = None
    max_transactions: int | None = None

    def __post_init__(self) -> None:
        if self.max_message_bytes is not None and self.max_message_bytes < 512:
            raise ValueError("max_message_bytes below 512 would refuse ordinary requests")
        if self.max_transactions is not None and self.max_transactions < 1:
            raise ValueError("max_transactions must be at least 1")
