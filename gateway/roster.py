"""The in-memory roster of legacy participants, per meeting, under pseudonyms.

The control API and the metrics read what legacy callers are in which meeting
from here, not from the SIP or media layers, so that what is *shown* about a
participant is decided in one place:

- Each participant gets a random pseudonym ("Amber Otter 4821"). The SIP display
  name, the caller's address, its user agent and the dial string are never stored
  here, so no API response can leak them. The policy key ``anonymous_names``
  (issue 7) is not in policy v1 yet; until it is, everyone is pseudonymous, and
  the same pseudonym is what the conference core's roster shows to browsers.
- A meeting's entry exists only while it has a legacy participant: removing the
  last one drops the meeting (and its pseudonyms) from memory. Nothing is written
  to disk.

Counters and encryption come from a live ``stats()`` callable (normally
``MediaSession.stats``), read when someone asks, so the roster never holds a
stale copy.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

log = structlog.get_logger("gateway.roster")

Protocol = Literal["sip", "h323"]
Transport = Literal["udp", "tcp", "tls"]
LegacyEncryption = Literal["plain", "sdes-srtp"]
WebRtcEncryption = Literal["dtls-srtp"]

PROTOCOLS: tuple[Protocol, ...] = ("sip", "h323")
TRANSPORTS: tuple[Transport, ...] = ("udp", "tcp", "tls")
LEGACY_ENCRYPTIONS: tuple[LegacyEncryption, ...] = ("plain", "sdes-srtp")

_ADJECTIVES = (
    "Amber", "Azure", "Brave", "Bright", "Calm", "Clever", "Coral", "Crimson", "Curious", "Daring",
    "Eager", "Gentle", "Golden", "Happy", "Indigo", "Jade", "Jolly", "Kind", "Lively", "Lucky",
    "Mellow", "Misty", "Noble", "Olive", "Patient", "Quick", "Quiet", "Rapid", "Rosy", "Silver",
    "Steady", "Sunny", "Swift", "Teal", "Tidy", "Violet", "Warm", "Wise", "Witty", "Zesty",
)
_ANIMALS = (
    "Badger", "Beaver", "Bison", "Crane", "Dolphin", "Eagle", "Falcon", "Ferret", "Finch", "Fox",
    "Gecko", "Heron", "Ibis", "Koala", "Lark", "Lemur", "Lynx", "Marten", "Moose", "Newt",
    "Ocelot", "Orca", "Otter", "Owl", "Panda", "Puffin", "Quail", "Raven", "Robin", "Seal",
    "Stoat", "Swan", "Tapir", "Tern", "Toucan", "Viper", "Walrus", "Wombat", "Wren", "Yak",
)


class RosterError(Exception):
    """Base of the roster's errors."""


class DuplicateParticipant(RosterError):
    """A participant id is already on the roster (a programming error: ids are random)."""


def new_pseudonym(taken: set[str] | frozenset[str] = frozenset()) -> str:
    """A random "Adjective Animal NNNN" name, unique among ``taken``.

    Random (``secrets``), not derived from anything about the caller, so it cannot be
    reversed to a name, number or address; 1600 word pairs x 9000 numbers make a
    collision within one meeting rare, and ``taken`` rules it out.
    """
    while True:
        name = (f"{secrets.choice(_ADJECTIVES)} {secrets.choice(_ANIMALS)} "
                f"{1000 + secrets.randbelow(9000)}")
        if name not in taken:
            return name


def new_participant_id() -> str:
    """An opaque id, safe in URLs (``/meetings/{id}/participants/{pid}``)."""
    return "p-" + secrets.token_urlsafe(9)


def _ms(value: object) -> float | None:
    """A milliseconds figure from the leg's stats, or None when not (yet) known."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return round(float(value), 1)
    return None


@dataclass
class RosterParticipant:
    """One legacy participant as the API may show it. No IP, display name or user agent here."""

    id: str
    meeting: str
    pseudonym: str
    protocol: Protocol
    transport: Transport
    codec: str
    legacy_encryption: LegacyEncryption = "plain"
    stats: Callable[[], dict[str, Any]] | None = field(default=None, repr=False)
    """Live counters (``MediaSession.stats``); None when the media is already gone."""
    final_counters: dict[str, int] = field(default_factory=dict, repr=False)
    """The legacy leg's counters as they were when the participant left (for node totals)."""
    core_ids: tuple[str, ...] = ()
    """The conference core's ids of this participant's WHIP/WHEP resources (so the API can tell
    legacy participants from browsers in the core's roster)."""
    muted: bool = False
    """An operator muted it (control API): its audio no longer reaches the meeting."""

    def _raw(self) -> dict[str, Any]:
        if self.stats is None:
            return {}
        try:
            raw = self.stats()
        except Exception as exc:  # noqa: BLE001 - a closing session must not break a listing
            log.warning("roster.stats_failed", participant=self.id, error=type(exc).__name__)
            return {}
        return raw if isinstance(raw, dict) else {}

    def legacy_counters(self) -> dict[str, int]:
        """The legacy leg's integer counters (live, or the last ones once the participant left)."""
        if self.stats is None:
            return dict(self.final_counters)
        legacy = self._raw().get("legacy", {})
        return {k: v for k, v in legacy.items() if isinstance(v, int) and not isinstance(v, bool)}

    def snapshot(self) -> dict[str, Any]:
        """The JSON-ready view the control API returns (see ``docs/openapi.yaml``)."""
        raw = self._raw()
        legacy = raw.get("legacy", {}) or dict(self.final_counters)
        webrtc = raw.get("webrtc", {})
        received = int(legacy.get("packets_in", 0))
        lost = int(legacy.get("packets_lost", 0))
        expected = received + lost
        return {
            "id": self.id,
            "pseudonym": self.pseudonym,
            "protocol": self.protocol,
            "transport": self.transport,
            "codec": self.codec,
            "encryption": {
                "legacy": str(legacy.get("encryption", self.legacy_encryption)),
                "webrtc": str(webrtc.get("encryption", "dtls-srtp")),
            },
            "packets": {
                "received": received,
                "sent": int(legacy.get("packets_out", 0)),
                "lost": lost,
                "dropped": int(legacy.get("dropped", 0)),
            },
            "packet_loss": round(lost / expected, 4) if expected else 0.0,
            "jitter_ms": _ms(legacy.get("jitter_ms")),
            "rtt_ms": _ms(legacy.get("rtt_ms")),
            "muted": self.muted,
        }


class Roster:
    """Legacy participants by meeting; a meeting's entry lives exactly as long as its participants."""

    def __init__(self) -> None:
        self._meetings: dict[str, dict[str, RosterParticipant]] = {}

    def add(self, meeting: str, *, protocol: Protocol, transport: Transport, codec: str,
            legacy_encryption: LegacyEncryption = "plain",
            stats: Callable[[], dict[str, Any]] | None = None, pseudonym: str | None = None,
            core_ids: tuple[str, ...] = ()) -> RosterParticipant:
        """Register a participant who just joined ``meeting``; returns it with its id and pseudonym.

        ``pseudonym`` is one from :meth:`new_pseudonym` when the caller needed it before the
        participant was answered (it is what the conference core was told); else one is made.
        """
        members = self._meetings.setdefault(meeting, {})
        participant = RosterParticipant(
            id=new_participant_id(), meeting=meeting,
            pseudonym=pseudonym or self.new_pseudonym(meeting),
            protocol=protocol, transport=transport, codec=codec,
            legacy_encryption=legacy_encryption, stats=stats, core_ids=core_ids)
        if participant.id in members:  # pragma: no cover - 72 random bits
            raise DuplicateParticipant(participant.id)
        members[participant.id] = participant
        log.info("roster.joined", meeting=meeting, participant=participant.id, protocol=protocol,
                 transport=transport)
        return participant

    def remove(self, meeting: str, participant_id: str) -> RosterParticipant | None:
        """Take a participant off; drop the meeting when it was the last. Unknown ids are ignored."""
        members = self._meetings.get(meeting)
        if members is None:
            return None
        participant = members.pop(participant_id, None)
        if participant is not None:
            participant.final_counters = participant.legacy_counters()
            participant.stats = None
            log.info("roster.left", meeting=meeting, participant=participant_id)
        if not members:
            del self._meetings[meeting]
            log.info("roster.meeting_dropped", meeting=meeting)
        return participant

    def new_pseudonym(self, meeting: str) -> str:
        """A pseudonym not yet used in ``meeting``."""
        return new_pseudonym({p.pseudonym for p in self._meetings.get(meeting, {}).values()})

    def get(self, meeting: str, participant_id: str) -> RosterParticipant | None:
        return self._meetings.get(meeting, {}).get(participant_id)

    def participants(self, meeting: str) -> list[RosterParticipant]:
        """The meeting's legacy participants in join order (empty for an unknown meeting)."""
        return list(self._meetings.get(meeting, {}).values())

    def meeting_ids(self) -> list[str]:
        return list(self._meetings)

    def __iter__(self) -> Iterator[RosterParticipant]:
        for members in list(self._meetings.values()):
            yield from list(members.values())

    def __len__(self) -> int:
        return sum(len(m) for m in self._meetings.values())

    def __contains__(self, meeting: object) -> bool:
        return meeting in self._meetings
