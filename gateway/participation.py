"""Putting an answered legacy call on the roster and taking it off again, for SIP and H.323 alike.

Both call controllers do exactly this at the same two moments (the call is answered; the
call ends), and the metrics of an ended call come from the roster entry's last counters.
The meeting-wide DTMF relay (``dtmf_relay: true``) lives here too: a digit keyed by a SIP caller
may go to an H.323 participant of the same meeting and the other way round.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable

import structlog

from bridge.dtmf_sender import DtmfError, validate_digits
from bridge.session import MediaSession
from gateway.metrics import Metrics
from gateway.policy import Policy
from gateway.roster import (
    LegacyEncryption,
    Protocol,
    Roster,
    RosterParticipant,
    Transport,
)

log = structlog.get_logger("gateway.participation")


def join_roster(roster: Roster, meeting: str, session: MediaSession, *, protocol: Protocol,
                transport: Transport, codec: str, legacy_encryption: LegacyEncryption,
                pseudonym: str) -> RosterParticipant:
    """Register the answered call's participant; its live counters are read from ``session``."""
    return roster.add(meeting, protocol=protocol, transport=transport, codec=codec,
                      legacy_encryption=legacy_encryption, stats=session.stats,
                      pseudonym=pseudonym, core_ids=session.core_resource_ids)


def leave_roster(roster: Roster, metrics: Metrics | None, participant: RosterParticipant | None,
                 by: str) -> None:
    """Take ``participant`` off the roster (if it was on it) and count the call's end."""
    if participant is None:
        return
    gone = roster.remove(participant.meeting, participant.id)
    if metrics is not None:
        metrics.call_ended(participant.protocol, by, gone.final_counters if gone else None)


class DtmfRelayTarget(typing.Protocol):
    """A call controller that can key digits toward its answered calls in a meeting."""

    def send_dtmf_to_meeting(self, meeting: str, digits: str, *, besides: str | None) -> int: ...


def relay_dtmf(policy: Policy, meeting: str, digit: str, *, sender: str,
               targets: Iterable[DtmfRelayTarget]) -> int:
    """Pass a digit a *joined* participant keyed (roster id ``sender``) on to the meeting's other
    legacy participants, when the meeting's policy says ``dtmf_relay: true``; returns to how many.

    The use: a meeting cascaded into another conference bridge through a SIP room connector,
    whose PIN someone in the meeting has to key in.  Digits keyed to the gateway's own IVR
    (PIN, meeting number, lobby) never come here.  Logs the count, never the digit.
    """
    mp = policy.for_meeting(meeting)
    if mp is None or not mp.dtmf_relay:
        return 0
    try:
        validate_digits(digit)
    except DtmfError:  # e.g. an H.323 hookflash ("!"): no RFC 4733 key to pass on
        log.info("dtmf.not_relayed", meeting=meeting, sender=sender, why="not-a-key")
        return 0
    sent = sum(target.send_dtmf_to_meeting(meeting, digit, besides=sender) for target in targets)
    log.info("dtmf.relayed", meeting=meeting, sender=sender, targets=sent, count=len(digit))
    return sent
