"""Putting an answered legacy call on the roster and taking it off again, for SIP and H.323 alike.

Both call controllers do exactly this at the same two moments (the call is answered; the
call ends), and the metrics of an ended call come from the roster entry's last counters.
"""

from __future__ import annotations

from bridge.session import MediaSession
from gateway.metrics import Metrics
from gateway.roster import (
    LegacyEncryption,
    Protocol,
    Roster,
    RosterParticipant,
    Transport,
)


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
