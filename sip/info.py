"""SIP INFO bodies the gateway understands (RFC 6086 legacy usage, RFC 2976).

* ``application/dtmf-relay`` (Cisco/Polycom style): ``Signal=5`` and
  ``Duration=160`` lines; ``Signal`` may be a digit, ``*``, ``#``, ``A``-``D``
  or the RFC 4733 event number 10/11 for ``*``/``#`` (as some phones send).
* ``application/dtmf``: the body is the digit itself.
* ``application/media_control+xml`` (RFC 5168): ``<picture_fast_update/>``
  is a keyframe request.

These legacy INFO usages carry no ``Info-Package`` header (RFC 6086 9); a
request that names a package we do not support gets 469, a body of another
type 415 (:func:`classify`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: RFC 5168's content type (its XML schema: ``media_control``).
MEDIA_CONTROL_TYPE = "application/media_control+xml"
#: Content types accepted in INFO (sent in ``Accept`` of a 415, RFC 3261 21.4.13).
ACCEPTED_TYPES: tuple[str, ...] = (
    "application/dtmf-relay", "application/dtmf", MEDIA_CONTROL_TYPE,
)
_DIGITS = "0123456789*#ABCD"
#: RFC 4733 3.2 event codes 0-15 -> digits.
EVENT_DIGITS = {i: d for i, d in enumerate("0123456789*#ABCD")}
_FAST_UPDATE = re.compile(rb"<\s*picture_fast_update\s*/?\s*>", re.IGNORECASE)


class InfoBodyError(ValueError):
    """An INFO body of a known type that does not say anything usable (answered 400)."""


@dataclass(frozen=True)
class DtmfInfo:
    """One DTMF digit carried by INFO; ``duration_ms`` when the body gave one."""

    digit: str
    duration_ms: int | None = None


@dataclass(frozen=True)
class KeyframeRequest:
    """``picture_fast_update`` (RFC 5168 3)."""


def _digit(raw: str) -> str:
    s = raw.strip().upper()
    if len(s) == 1 and s in _DIGITS:
        return s
    # isascii: "²".isdigit() is True but int("²") raises a bare ValueError (not InfoBodyError).
    if s.isascii() and s.isdigit() and int(s) in EVENT_DIGITS:  # "10"/"11" for */# (RFC 4733 3.2)
        return EVENT_DIGITS[int(s)]
    raise InfoBodyError(f"not a DTMF digit: {raw!r}")


def parse_dtmf_relay(body: bytes) -> DtmfInfo:
    """``Signal=`` / ``Duration=`` lines (application/dtmf-relay)."""
    fields: dict[str, str] = {}
    for line in body.decode("utf-8", "replace").splitlines():
        name, sep, value = line.partition("=")
        if sep:
            fields[name.strip().lower()] = value.strip()
    if "signal" not in fields:
        raise InfoBodyError("dtmf-relay body without Signal=")
    duration: int | None = None
    if fields.get("duration", "").isdigit():
        duration = int(fields["duration"])
    return DtmfInfo(_digit(fields["signal"]), duration)


def dtmf_relay_body(digit: str, duration_ms: int) -> bytes:
    """The ``application/dtmf-relay`` body :func:`parse_dtmf_relay` reads, for INFO we send."""
    return f"Signal={_digit(digit)}\r\nDuration={int(duration_ms)}\r\n".encode()


#: RFC 5168 3 in the XML schema's full form: Cisco and Polycom parse ``vc_primitive/to_encoder``,
#: not a bare ``<picture_fast_update/>`` element (which :func:`classify` also accepts inbound).
_PICTURE_FAST_UPDATE_XML = (
    b'<?xml version="1.0" encoding="utf-8" ?>\r\n<media_control>\r\n <vc_primitive>\r\n'
    b"  <to_encoder>\r\n   <picture_fast_update/>\r\n  </to_encoder>\r\n </vc_primitive>\r\n"
    b"</media_control>\r\n"
)


def picture_fast_update_body() -> bytes:
    """The ``application/media_control+xml`` keyframe request (RFC 5168 3) for INFO we send,
    built here next to :func:`classify`, which reads it back as a :class:`KeyframeRequest`."""
    return _PICTURE_FAST_UPDATE_XML


def parse_dtmf(body: bytes) -> DtmfInfo:
    """The digit alone (application/dtmf)."""
    return DtmfInfo(_digit(body.decode("utf-8", "replace")))


def content_type(raw: str | None) -> str:
    """The media type of a Content-Type value, lower case, without parameters."""
    return (raw or "").split(";")[0].strip().lower()


def classify(ctype: str, body: bytes) -> DtmfInfo | KeyframeRequest | None:
    """What an INFO says; None for an empty body (a keep-alive INFO, RFC 6086 4.2.2).

    Raises :class:`InfoBodyError` for a known type with an unusable body and
    :class:`LookupError` for a type we do not accept (the caller answers 415).
    """
    if not body.strip():
        return None
    if ctype == "application/dtmf-relay":
        return parse_dtmf_relay(body)
    if ctype == "application/dtmf":
        return parse_dtmf(body)
    if ctype == MEDIA_CONTROL_TYPE:
        if _FAST_UPDATE.search(body):
            return KeyframeRequest()
        raise InfoBodyError("media_control body without picture_fast_update")
    raise LookupError(ctype)
