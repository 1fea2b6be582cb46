"""Typed errors of the H.323 codecs.

Every error carries ``cause``, the Q.931 cause value (Q.850 / Q.931 4.5.12, table 4-13) a
signalling core would put into the ReleaseComplete it answers a broken peer with, so the
transport never needs to know which codec failed (the h11 idea of an error with a status hint).
"""

from __future__ import annotations

#: Q.931 cause values used as hints (Q.850 section 2.2.7).
CAUSE_INVALID_MESSAGE = 95
CAUSE_MANDATORY_IE_MISSING = 96
CAUSE_MESSAGE_TYPE_NONEXISTENT = 97
CAUSE_INVALID_IE_CONTENTS = 100
CAUSE_PROTOCOL_ERROR = 111


class H323Error(ValueError):
    """Base class: input or a value the H.323 codecs cannot handle."""

    default_cause = CAUSE_PROTOCOL_ERROR

    def __init__(self, message: str, *, cause: int | None = None) -> None:
        super().__init__(message)
        self.cause = self.default_cause if cause is None else cause


class TpktError(H323Error):
    """A TPKT header is bad (RFC 1006 section 6): the stream cannot be framed any more."""

    default_cause = CAUSE_INVALID_MESSAGE


class Q931Error(H323Error):
    """A Q.931 message or information element is malformed (Q.931 section 5.8)."""

    default_cause = CAUSE_INVALID_MESSAGE


class Asn1Error(H323Error):
    """PER decoding or encoding through the ASN.1 library failed."""

    default_cause = CAUSE_INVALID_IE_CONTENTS


class H225Error(Asn1Error):
    """An H323-UserInformation (H.225.0 section 7.6) is malformed or unsupported."""


class H245Error(Asn1Error):
    """A MultimediaSystemControlMessage (H.245 annex A) is malformed or unsupported."""


class RasError(Asn1Error):
    """A datagram is not a RAS message (H.225.0 section 7.7) or a RAS value is unusable."""
