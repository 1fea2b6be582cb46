"""Typed errors of the conference core, each carrying the HTTP status it maps to.

The core raises these from plain Python calls; ``gateway.core.http`` is the only
place that turns them into responses, so the status lives with the error (as
h11's ``LocalProtocolError`` carries its status hint) rather than in the handler.
"""

from __future__ import annotations


class CoreError(Exception):
    """Base of every error the core reports to a client; ``status`` is the HTTP status."""

    status: int = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadMeetingId(CoreError):
    """The meeting id is empty, too long, or uses characters outside the safe set."""

    status = 400


class BadParticipantId(CoreError):
    """A participant id (in a path or ``?exclude=``) uses characters no id of ours can contain."""

    status = 400


class BadSdp(CoreError):
    """The offer is not SDP aiortc can answer (unparsable, no usable media, no DTLS)."""

    status = 400


class UnknownParticipant(CoreError):
    """A DELETE named a resource that does not exist (never did, or already left)."""

    status = 404


class MeetingFull(CoreError):
    """The meeting already holds the configured maximum number of participants."""

    status = 503


class CoreClosed(CoreError):
    """The core is shutting down and accepts no new participants."""

    status = 503


class BadLegDescription(CoreError):
    """A WHIP ``?leg=``/``?enc=`` outside their vocabularies (the page's indicator depends on them)."""

    status = 400
