"""Legacy calls: from an inbound SIP INVITE to a participant in a meeting.

This is the one place where the SIP core, the policy and the media bridge meet.
For each INVITE it decides admission (``gateway.admission``), negotiates audio
(``sip.offer_answer``), opens the call's media (``bridge.session``), and only
then answers 200 OK, so the caller hears the meeting from the first packet.
Either side may end the call; whichever does, the other is torn down too.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

import structlog

from bridge.ports import NoFreePort, PortAllocator
from bridge.session import MediaSession
from gateway.admission import Refuse, decide
from gateway.metrics import Metrics
from gateway.participation import join_roster, leave_roster
from gateway.policy import Policy
from gateway.roster import LegacyEncryption, Roster, RosterParticipant, Transport
from sip.calls import EndReason, InboundCall
from sip.offer_answer import OfferRejected, build_answer, choose_audio, media_security

log = structlog.get_logger("gateway.calls")

#: Codecs the legacy leg can carry, in the order we prefer when the offer leaves us the choice.
LEGACY_AUDIO_PREFERENCE = ("PCMU", "PCMA", "G722")


def call_label(call_id: str) -> str:
    """A short, stable, non-reversible label for a SIP Call-ID, for logs.

    Call-IDs often embed the caller's host or IP address; logs carry this hash instead.
    """
    return hashlib.blake2s(call_id.encode(), digest_size=5).hexdigest()


@dataclass
class LegacyCall:
    """One admitted (or being admitted) legacy call and its media."""

    call: InboundCall
    meeting: str
    label: str
    session: MediaSession | None = None
    ended: bool = False
    pseudonym: str = ""
    #: On the roster from the 200 OK until the call ends (what the control API shows).
    participant: RosterParticipant | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class CallController:
    """The SIP core's ``CallHandler``: admits, bridges and ends legacy calls.

    Holds no per-meeting state beyond the live calls; when a call ends its entry is
    dropped, so nothing about a finished call stays in memory.
    """

    def __init__(
        self,
        *,
        reactor: Any,
        policy: Policy,
        core_url: str,
        media_address: str,
        ports: PortAllocator,
        roster: Roster | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._reactor = reactor
        self.roster = roster if roster is not None else Roster()
        self.metrics = metrics
        self.policy = policy
        self._core_url = core_url
        self._media_address = media_address
        self._ports = ports
        self._calls: dict[str, LegacyCall] = {}

    # -- CallHandler -------------------------------------------------------------------

    def incoming_call(self, call: InboundCall) -> None:
        meeting = call.request_uri.user or ""
        entry = LegacyCall(call=call, meeting=meeting, label=call_label(call.call_id))
        self._calls[call.call_id] = entry
        task = asyncio.ensure_future(self._admit_and_bridge(entry))
        entry.tasks.add(task)
        task.add_done_callback(entry.tasks.discard)

    def call_ended(self, call: InboundCall, reason: EndReason) -> None:
        entry = self._calls.pop(call.call_id, None)
        if entry is None:
            return
        entry.ended = True
        log.info("call.ended", call=entry.label, meeting=entry.meeting, by=str(reason.value))
        self._leave_roster(entry, str(reason.value))
        self._close_media(entry)

    # -- application -------------------------------------------------------------------

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    async def hangup_all(self, reason: str = "gateway shutting down") -> None:
        """End every call (BYE to each caller), e.g. at shutdown."""
        for entry in list(self._calls.values()):
            self._end_from_gateway(entry, reason, by="shutdown")
        pending = [t for e in self._calls.values() for t in e.tasks]
        if pending:
            await asyncio.wait(pending, timeout=2)

    async def _admit_and_bridge(self, entry: LegacyCall) -> None:
        call = entry.call
        bound = log.bind(call=entry.label, meeting=entry.meeting, transport=call.transport)
        offer = call.offer
        if offer is None:
            bound.info("call.refused", status=488, rule="offer-required")
            call.reject(488, "Not Acceptable Here",
                        warning="roomgate needs an SDP offer in the INVITE (delayed offer is not supported yet)")
            self._forget(entry, refused="offer-required")
            return
        security = media_security(offer)
        decision = decide(self.policy, meeting=entry.meeting, protocol="sip",
                          transport=call.transport, media_security=security)
        if isinstance(decision, Refuse):
            bound.info("call.refused", status=decision.sip_status, rule=decision.rule,
                       media_security=security)
            call.reject(decision.sip_status, decision.reason, warning=decision.warning)
            self._forget(entry, refused=decision.rule)
            return
        # SRTP is used whenever the offer has usable SDES keys, whatever legacy_media says
        # (never a downgrade); require-srtp also refuses an offer without them (RFC 4568).
        require_srtp = decision.policy.legacy_media == "require-srtp"
        try:
            choice = choose_audio(offer, preferred=LEGACY_AUDIO_PREFERENCE, require_srtp=require_srtp)
        except OfferRejected as exc:
            rule = decision.rule if require_srtp else "audio-codec"
            warning = (f"meeting '{entry.meeting}' requires encrypted media and the offer has no "
                       f"usable SDES-SRTP: {exc.reason} (rule {rule})") if require_srtp else exc.reason
            bound.info("call.refused", status=exc.status, rule=rule, detail=exc.reason)
            call.reject(exc.status, "Not Acceptable Here", warning=warning)
            self._forget(entry, refused="audio-codec")
            return
        legacy_encryption = "sdes-srtp" if choice.secure else "plain"
        bound.info("call.admitted", rule=decision.rule, codec=choice.encoding, media_security=security,
                   legacy_encryption=legacy_encryption, srtp_suite=choice.srtp_suite,
                   notes=list(decision.notes) or None)
        if not choice.secure and decision.policy.legacy_media == "prefer-srtp":
            bound.warning("call.media_plain", rule=decision.rule,
                          detail="prefer-srtp: no usable SRTP offered, the call's media is plain RTP")
        if self.metrics is not None:
            self.metrics.call_admitted("sip", call.transport)
        # The core (and so every browser) sees a pseudonym, never the SIP display name.
        entry.pseudonym = self.roster.new_pseudonym(entry.meeting)
        call.ring()
        try:
            session = MediaSession.allocate(
                reactor=self._reactor,
                meeting=entry.meeting,
                core_url=self._core_url,
                media_address=self._media_address,
                port_allocator=self._ports,
                encoding=choice.encoding,
                payload_type=choice.payload_type,
                remote_address=choice.remote_address,
                remote_port=choice.remote_port,
                telephone_event_pt=choice.telephone_event_pt,
                display_name=entry.pseudonym,
                srtp_suite=choice.srtp_suite,
                srtp_remote_key=choice.srtp_remote_key,
                srtp_local_key=choice.srtp_local_key,
            )
        except (NoFreePort, OSError, ValueError, KeyError) as exc:  # the caller gets a clean 503
            bound.error("call.media_failed", stage="allocate", error=str(exc))
            call.reject(503, "Service Unavailable", warning="no media port available")
            self._forget(entry, refused="media-port")
            return
        entry.session = session
        session.on_ended = lambda why: self._media_ended(entry, why)
        try:
            await session.start()
        except Exception as exc:  # noqa: BLE001 - any failure to join must give the caller a clean 503
            bound.error("call.media_failed", stage="join", error=str(exc))
            self._close_media(entry)
            if not entry.ended:
                call.reject(503, "Service Unavailable", warning="the meeting could not be joined")
                self._forget(entry, refused="join-failed")
            return
        if entry.ended:  # CANCEL or transport error while we were joining
            self._close_media(entry)
            return
        answer = build_answer(offer, choice, self._media_address, session.local_port)
        call.accept(str(answer))
        self._join_roster(entry, session, choice.encoding)
        bound.info("call.answered", local_port=session.local_port,
                   participant=entry.participant.id if entry.participant else None)

    def _media_ended(self, entry: LegacyCall, why: str) -> None:
        if not entry.ended:
            log.info("call.media_ended", call=entry.label, meeting=entry.meeting, why=why)
            self._end_from_gateway(entry, why, by="media")

    def _end_from_gateway(self, entry: LegacyCall, reason: str, *, by: str) -> None:
        entry.ended = True
        self._calls.pop(entry.call.call_id, None)
        entry.call.hangup(reason=reason)
        self._leave_roster(entry, by)
        self._close_media(entry)

    # -- roster and commands (control API) --------------------------------------------------------

    def _join_roster(self, entry: LegacyCall, session: MediaSession, codec: str) -> None:
        legacy_encryption: LegacyEncryption = (
            "sdes-srtp" if session.stats().get("legacy", {}).get("encryption") == "sdes-srtp" else "plain")
        transport: Transport = {"udp": "udp", "tcp": "tcp", "tls": "tls"}.get(entry.call.transport, "udp")  # type: ignore[assignment]
        entry.participant = join_roster(
            self.roster, entry.meeting, session, protocol="sip", transport=transport, codec=codec,
            legacy_encryption=legacy_encryption, pseudonym=entry.pseudonym)

    def _leave_roster(self, entry: LegacyCall, by: str) -> None:
        participant, entry.participant = entry.participant, None
        leave_roster(self.roster, self.metrics, participant, by)

    def end_participant(self, meeting: str, participant_id: str, reason: str) -> bool:
        """Hang up the legacy call of roster participant ``participant_id`` (BYE with ``Reason:``)."""
        for entry in list(self._calls.values()):
            if entry.meeting == meeting and entry.participant is not None \
                    and entry.participant.id == participant_id:
                self._end_from_gateway(entry, reason, by="api")
                return True
        return False

    async def end_meeting(self, meeting: str, reason: str) -> int:
        """Hang up every legacy call to ``meeting`` (answered or still joining) and wait, briefly,
        for their media to leave the core; returns how many calls were ended."""
        entries = [e for e in self._calls.values() if e.meeting == meeting]
        for entry in entries:
            self._end_from_gateway(entry, reason, by="api")
        pending = [t for e in entries for t in e.tasks]
        if pending:
            await asyncio.wait(pending, timeout=5)
        return len(entries)

    def _close_media(self, entry: LegacyCall) -> None:
        session, entry.session = entry.session, None
        if session is not None:
            task = asyncio.ensure_future(session.close())
            entry.tasks.add(task)
            task.add_done_callback(entry.tasks.discard)

    def _forget(self, entry: LegacyCall, *, refused: str | None = None) -> None:
        if refused is not None and self.metrics is not None:
            self.metrics.call_refused("sip", refused)
        entry.ended = True
        self._calls.pop(entry.call.call_id, None)
