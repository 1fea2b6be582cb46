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
import itertools
from dataclasses import dataclass, field
from typing import Any

import structlog

from bridge.ports import NoFreePort, PortAllocator
from bridge.session import MediaSession
from gateway.admission import Refuse, decide
from gateway.policy import Policy
from sip.calls import EndReason, InboundCall
from sip.offer_answer import OfferRejected, build_answer, choose_audio, media_security

log = structlog.get_logger("gateway.calls")

#: Codecs the legacy leg can carry, in the order we prefer when the offer leaves us the choice.
LEGACY_AUDIO_PREFERENCE = ("PCMU", "PCMA", "G722")

_call_numbers = itertools.count(1)


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
    ) -> None:
        self._reactor = reactor
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
        self._close_media(entry)

    # -- application -------------------------------------------------------------------

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    async def hangup_all(self, reason: str = "gateway shutting down") -> None:
        """End every call (BYE to each caller), e.g. at shutdown."""
        for entry in list(self._calls.values()):
            self._end_from_gateway(entry, reason)
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
            self._forget(entry)
            return
        security = media_security(offer)
        decision = decide(self.policy, meeting=entry.meeting, protocol="sip",
                          transport=call.transport, media_security=security)
        if isinstance(decision, Refuse):
            bound.info("call.refused", status=decision.sip_status, rule=decision.rule,
                       media_security=security)
            call.reject(decision.sip_status, decision.reason, warning=decision.warning)
            self._forget(entry)
            return
        try:
            choice = choose_audio(offer, preferred=LEGACY_AUDIO_PREFERENCE)
        except OfferRejected as exc:
            bound.info("call.refused", status=exc.status, rule="audio-codec", detail=exc.reason)
            call.reject(exc.status, "Not Acceptable Here", warning=exc.reason)
            self._forget(entry)
            return
        bound.info("call.admitted", rule=decision.rule, codec=choice.encoding, media_security=security)
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
                display_name=call.from_display or "SIP caller",
            )
        except (NoFreePort, OSError, ValueError, KeyError) as exc:  # the caller gets a clean 503
            bound.error("call.media_failed", stage="allocate", error=str(exc))
            call.reject(503, "Service Unavailable", warning="no media port available")
            self._forget(entry)
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
                self._forget(entry)
            return
        if entry.ended:  # CANCEL or transport error while we were joining
            self._close_media(entry)
            return
        answer = build_answer(offer, choice, self._media_address, session.local_port)
        call.accept(str(answer))
        bound.info("call.answered", local_port=session.local_port)

    def _media_ended(self, entry: LegacyCall, why: str) -> None:
        if not entry.ended:
            log.info("call.media_ended", call=entry.label, meeting=entry.meeting, why=why)
            self._end_from_gateway(entry, why)

    def _end_from_gateway(self, entry: LegacyCall, reason: str) -> None:
        entry.ended = True
        self._calls.pop(entry.call.call_id, None)
        entry.call.hangup(reason=reason)
        self._close_media(entry)

    def _close_media(self, entry: LegacyCall) -> None:
        session, entry.session = entry.session, None
        if session is not None:
            task = asyncio.ensure_future(session.close())
            entry.tasks.add(task)
            task.add_done_callback(entry.tasks.discard)

    def _forget(self, entry: LegacyCall) -> None:
        entry.ended = True
        self._calls.pop(entry.call.call_id, None)
