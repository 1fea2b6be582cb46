"""Driving the sans-IO H.245 session (h323/h245_session.py) in unit tests: feed it encoded
PDUs, read back what it would send (decoded) and the events it raised."""

from __future__ import annotations

from typing import Any

from h323 import h245
from h323.h245_session import H245Session


def sent(s: H245Session) -> list[Any]:
    """The messages the session queued to send, decoded and typed."""
    return [m.typed() for pdu in s.pdus_to_send() for m in h245.decode_all(pdu)]


def events(s: H245Session) -> list[Any]:
    """Every event the session raised since the last call."""
    out = []
    while (e := s.next_event()) is not None:
        out.append(e)
    return out


def feed(s: H245Session, now: float, *msgs: object) -> None:
    """Hand the session ``msgs`` as one received PDU at time ``now``."""
    s.receive_pdu(b"".join(h245.encode(m) for m in msgs), now)
