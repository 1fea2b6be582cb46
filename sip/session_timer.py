"""Session timers (RFC 4028) for the UAS side of an inbound call: negotiation arithmetic.

The endpoint (:mod:`sip.endpoint`) owns the timers; this module only decides
what a request asks for and what the 2xx says, so it can be tested alone.

* ``Session-Expires: delta[;refresher=uac|uas]`` (RFC 4028 4) and ``Min-SE``
  (RFC 4028 5) in a session refresh request; ``x`` = compact form.
* A delta below our minimum is refused with ``422 Session Interval Too Small``
  and our ``Min-SE`` (RFC 4028 8.1): never below 90 s (RFC 4028 4, 5).
* The UAS answers with ``Session-Expires`` and a ``refresher`` (RFC 4028 9):
  the UAC's choice when it made one, else ``uac`` when the UAC supports
  ``timer`` (it refreshes, we only watch), else ``uas`` (we refresh).
* The refresher refreshes at half the interval (RFC 4028 10); the other side
  gives up at ``interval - min(32, interval / 3)`` and sends BYE.
"""

from __future__ import annotations

from dataclasses import dataclass

from sip.headers import Headers

#: The smallest interval RFC 4028 allows (4, 5) and our default ``Min-SE``.
MIN_SE_FLOOR = 90
#: What we ask for when the caller supports timers but proposes nothing (RFC 4028 recommends 1800).
DEFAULT_INTERVAL = 1800


class SessionTimerError(ValueError):
    """A Session-Expires or Min-SE header that cannot be parsed (answered 400)."""


@dataclass(frozen=True)
class TimerRequest:
    """What a session refresh request asks for (RFC 4028 7.1, 8.1)."""

    interval: int | None  # Session-Expires delta, None when absent
    refresher: str | None  # "uac" | "uas" | None
    min_se: int  # the request's Min-SE (MIN_SE_FLOOR when absent)
    supported: bool  # "timer" in Supported or Require


@dataclass(frozen=True)
class TimerAnswer:
    """What we put in the 2xx and which side refreshes (RFC 4028 9)."""

    interval: int
    refresher: str  # "uac" (the caller) or "uas" (the gateway)
    require: bool  # add ``Require: timer`` (only when the UAC supports it, RFC 4028 9)

    @property
    def we_refresh(self) -> bool:
        """Whether the gateway is the refresher."""
        return self.refresher == "uas"

    def header(self) -> str:
        """The 2xx ``Session-Expires`` value."""
        return f"{self.interval};refresher={self.refresher}"

    def refresh_after(self) -> float:
        """When the refresher sends its refresh: half the interval (RFC 4028 10)."""
        return self.interval / 2

    def expire_after(self) -> float:
        """When the other side gives up: ``interval - min(32, interval/3)`` (RFC 4028 10)."""
        return self.interval - min(32.0, self.interval / 3)


def _delta(value: str, name: str) -> tuple[int, dict[str, str]]:
    head, *params = [p.strip() for p in value.split(";")]
    if not head.isdigit():
        raise SessionTimerError(f"bad {name}: {value!r}")
    out: dict[str, str] = {}
    for p in params:
        k, _, v = p.partition("=")
        out[k.strip().lower()] = v.strip().lower()
    return int(head), out


def parse_request(headers: Headers) -> TimerRequest:
    """Read ``Session-Expires``/``x``, ``Min-SE``, ``Supported``/``Require`` (RFC 4028 4, 5, 7)."""
    se = headers.get("Session-Expires") or headers.get("x")
    interval: int | None = None
    refresher: str | None = None
    if se:
        interval, params = _delta(se, "Session-Expires")
        refresher = params.get("refresher")
        if refresher not in (None, "uac", "uas"):
            raise SessionTimerError(f"bad refresher: {refresher!r}")
    min_se = MIN_SE_FLOOR
    raw_min = headers.get("Min-SE")
    if raw_min:
        min_se = max(MIN_SE_FLOOR, _delta(raw_min, "Min-SE")[0])
    tags = {t.lower() for t in headers.values("Supported") + headers.values("Require")}
    tags |= {t.lower() for t in headers.values("k")}
    return TimerRequest(interval, refresher, min_se, "timer" in tags)


def too_small(req: TimerRequest, our_min_se: int = MIN_SE_FLOOR) -> bool:
    """Whether to answer ``422`` with ``Min-SE: our_min_se`` (RFC 4028 8.1)."""
    return req.interval is not None and req.interval < our_min_se


def negotiate(req: TimerRequest, our_min_se: int = MIN_SE_FLOOR) -> TimerAnswer | None:
    """The UAS answer (RFC 4028 9); None when neither side asked for a session timer.

    We use timers only when the caller asked (Session-Expires present) or
    supports them; a caller without either gets no timer (RFC 4028 9, last case:
    the UAS may still refresh, we choose not to).
    """
    if req.interval is None and not req.supported:
        return None
    interval = req.interval if req.interval is not None else DEFAULT_INTERVAL
    interval = max(interval, req.min_se, our_min_se)
    refresher = req.refresher
    if refresher is None:
        refresher = "uac" if req.supported else "uas"
    if refresher == "uac" and not req.supported:
        refresher = "uas"  # RFC 4028 9: a UAC without timer support cannot be the refresher
    return TimerAnswer(interval, refresher, require=req.supported and refresher == "uac")
