"""Structured logging: one structlog event per call step, console in development, JSON in production.

Event names are dotted and stable (``sip.invite.received``, ``call.admitted``,
``bridge.leg.up``): operators grep and alert on them, so they are part of the interface.

Logs hold no personal data by default (``log.pii: redact``): :class:`PiiRedactor` replaces
IP addresses, display names, user agents and Call-IDs (which often embed the caller's host)
with a keyed hash.  The key is random and made at start, so within one run the same address
always maps to the same token (a call can still be followed through the log) but a token cannot
be reversed, nor matched with the logs of another run or another node.

What counts as an address: *everything* IP-like in a log value, the gateway's own listen
addresses included.  Telling "ours" from "the caller's" would need every log call site to be
right forever; redacting all of them is the rule that cannot leak.  The operator knows the
gateway's own addresses from its configuration, and the start-up banner on stdout (not a
log) still prints where to dial.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

LogFormat = Literal["console", "json"]
LogPii = Literal["redact", "show"]

#: Event keys whose whole value is personal (or can carry an address): always hashed.
PII_KEYS: frozenset[str] = frozenset({
    "source", "address", "addresses", "ip", "remote", "remote_address", "remote_rtp", "peer", "host",
    "display", "display_name", "from", "from_display", "to", "contact", "user_agent", "call_id",
    "via", "uri", "request_uri", "digit", "digits", "pin",
})
#: Keys never touched (structlog's own, and event names, which are constants).
_SKIP_KEYS = frozenset({"event", "level", "timestamp", "logger"})

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
# Candidates only: anything hex-and-colons with at least two colons; ipaddress decides.
_IPV6 = re.compile(r"(?<![\w:])([0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?)(?![\w:])")


class PiiRedactor:
    """A structlog processor (and the same rules for stdlib log records) that hashes PII.

    ``token(kind, text)`` is ``<kind>-<10 hex>``: HMAC-SHA256 under a per-run random key.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)

    def token(self, kind: str, text: str) -> str:
        digest = hmac.new(self._key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return f"{kind}-{digest[:10]}"

    def text(self, value: str) -> str:
        """``value`` with every IPv4/IPv6 address in it replaced by its token."""
        value = _IPV4.sub(self._ipv4, value)
        if value.count(":") >= 2:
            value = _IPV6.sub(self._ipv6, value)
        return value

    def _ipv4(self, match: re.Match[str]) -> str:
        found = match.group(0)
        try:
            ipaddress.IPv4Address(found)
        except ValueError:
            return found
        return self.token("ip", found)

    def _ipv6(self, match: re.Match[str]) -> str:
        found = match.group(1)
        try:
            ipaddress.IPv6Address(found.split("%", 1)[0])
        except ValueError:
            return match.group(0)
        return self.token("ip", found)

    def value(self, value: Any) -> Any:
        """Redact addresses inside ``value`` (strings, and strings nested in lists and dicts)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, (list, tuple)):
            return type(value)(self.value(v) for v in value)
        if isinstance(value, dict):
            return {k: self.whole(v) if k in PII_KEYS else self.value(v) for k, v in value.items()}
        return value

    def whole(self, value: Any) -> Any:
        """A value that is personal as a whole (a display name, a Call-ID): hashed entirely."""
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, (list, tuple)):
            return [self.whole(v) for v in value]
        text = str(value)
        try:
            ipaddress.ip_address(text)
        except ValueError:
            return self.token("pii", text)
        return self.token("ip", text)

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key in list(event):
            if key in _SKIP_KEYS:
                continue
            event[key] = self.whole(event[key]) if key in PII_KEYS else self.value(event[key])
        return event


class _StdlibRedactFilter(logging.Filter):
    """The same redaction for stdlib records (aiortc/aioice log candidate addresses)."""

    def __init__(self, redactor: PiiRedactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redactor.text(record.getMessage())
        record.args = None
        return True


def configure_logging(fmt: LogFormat = "console", level: str = "info", *, pii: LogPii = "redact",
                      redactor: PiiRedactor | None = None) -> PiiRedactor | None:
    """Route structlog (and stdlib logging, which aiortc/aioice use) to stderr in ``fmt``.

    Returns the redactor in use (None with ``pii: show``), so tests can compute tokens.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: structlog.types.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    active = (redactor or PiiRedactor()) if pii == "redact" else None
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,  # before redaction: tracebacks carry addresses too
    ]
    if active is not None:
        processors.append(active)
    processors += [structlog.processors.TimeStamper(fmt="iso", utc=True), renderer]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Third-party libraries log through stdlib logging; keep them quiet unless debugging.
    logging.basicConfig(level=logging.WARNING if numeric > logging.DEBUG else logging.DEBUG,
                        stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, _StdlibRedactFilter)]:
            handler.removeFilter(old)
        if active is not None:
            handler.addFilter(_StdlibRedactFilter(active))
    if active is None:
        structlog.get_logger("gateway.logs").warning(
            "log.pii.shown", detail="log.pii: show -- logs carry IP addresses and names; debugging only")
    return active

