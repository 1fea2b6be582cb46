"""What the sans-IO core hands out: bytes to transmit and events for the application.

Frozen dataclasses (as h11 and aioquic do), so an event is a value that
cannot be changed on its way from the core to the handler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sip.calls import EndReason, InboundCall


@dataclass(frozen=True)
class Transmit:
    """Bytes to send: to ``addr`` over ``transport``; on TCP over connection ``connection``.

    ``close`` asks the transport to close that connection after sending (a
    stream that can no longer be framed).
    """

    data: bytes
    addr: tuple[str, int]
    transport: str
    connection: int | None = None
    close: bool = False


@dataclass(frozen=True)
class Event:
    """Base class of core events."""


@dataclass(frozen=True)
class CallOffered(Event):
    """A new INVITE was accepted for processing (100 Trying already sent)."""

    call: InboundCall


@dataclass(frozen=True)
class CallEnded(Event):
    """A call handed out by :class:`CallOffered` is over (exactly once per call)."""

    call: InboundCall
    reason: EndReason


@dataclass(frozen=True)
class CallDtmf(Event):
    """A DTMF digit from the dialog: SIP INFO (RFC 6086 legacy usage).

    ``source`` is ``"sip-info"``; RFC 4733 digits come from the media path and
    meet these in the application's one DTMF stream (:mod:`gateway.calls`).
    """

    call: InboundCall
    digit: str
    source: str
    duration_ms: int | None = None


@dataclass(frozen=True)
class CallKeyframeRequested(Event):
    """The peer asked for a keyframe (SIP INFO ``picture_fast_update``, RFC 5168)."""

    call: InboundCall
