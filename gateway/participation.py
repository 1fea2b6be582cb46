"""What the SIP and the H.323 call controllers share, so each holds only its protocol's logic.

Putting an answered legacy call on the roster and taking it off again: both controllers do
exactly this at the same two moments (the call is answered; the call ends), and the metrics of an
ended call come from the roster entry's last counters.  The meeting-wide DTMF relay
(``dtmf_relay: true``) lives here too: a digit keyed by a SIP caller may go to an H.323
participant of the same meeting and the other way round.  :class:`LegacyCallController` is the
base both controllers extend: wiring, the PIN-counting admission check, the policy re-check on
reload, media teardown and the control API's commands.
"""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Callable, Iterable

import structlog

from bridge.dtmf_sender import DEFAULT_DURATION_MS, DtmfError, validate_digits
from bridge.legacy_leg import LegacyAudioLeg
from bridge.ports import PortAllocator
from bridge.session import MediaSession
from gateway.admission import Admit, Refuse
from gateway.ivr.detour import Detouring, admit_waiting, waiting
from gateway.live_meeting import LiveOverrides, set_muted
from gateway.metrics import Metrics
from gateway.pinlock import PinAttempts
from gateway.policy import MeetingPolicy, Policy
from gateway.roster import (
    LegacyEncryption,
    Protocol,
    Roster,
    RosterParticipant,
    Transport,
)
from sip.offer_answer import PASSTHROUGH_VIDEO_CODECS

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


def passthrough_video_codecs(mp: MeetingPolicy) -> tuple[str, ...]:
    """The video codecs a legacy call to this meeting may carry, in the policy's order: none
    under ``video: false``, else those of ``video_codecs`` the bridge passes through untranscoded
    (H.264).  SIP picks the offer's line among them, H.323 advertises and accepts them."""
    if not mp.video:
        return ()
    return tuple(c for c in mp.video_codecs if c in PASSTHROUGH_VIDEO_CODECS)


def wire_video(session: MediaSession, *, sip_info: Callable[[], object] | None = None,
               h245_fast_update: Callable[[], object] | None = None) -> None:
    """Wire a call's video leg (if it has one) the same way for SIP and H.323: the keyframe
    requests the leg's translator sends by signalling (SIP INFO ``picture_fast_update``, H.245
    ``videoFastUpdatePicture``) go to the protocol's hook, and the room system's receive limit
    (SDP/H.245 cap, REMB, TMMBR, flowControlCommand: the leg's ``BitrateGovernor``) caps the REMB
    our WHEP receiver reports to the core, whose encoder feeds the room system."""
    leg = session.video
    if leg is None:
        return
    leg.on_sip_info = sip_info
    leg.on_h245_fast_update = h245_fast_update
    session.webrtc.video_bitrate_cap = lambda: leg.bitrate.target_bps


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


class LegacyCallEntry(Detouring, typing.Protocol):
    """What :class:`LegacyCallController` reads and sets on a call record (``LegacyCall``,
    ``H323LegacyCall``), beyond what the IVR/lobby detour does: the steps below are the same
    for every protocol."""

    session: MediaSession | None
    participant: RosterParticipant | None
    legacy: LegacyAudioLeg | None
    tasks: set[asyncio.Task[typing.Any]]
    #: Where the call's digits go while the IVR or the lobby holds it (None once joined).
    on_digit: typing.Any
    #: The name the core and the roster show (never logged).
    pseudonym: str


E = typing.TypeVar("E", bound=LegacyCallEntry)


class LegacyCallController(typing.Generic[E]):
    """What the SIP and the H.323 call controllers share: their wiring (policy, roster, live
    edits, PIN counts, ports), the live calls by key, and the steps that do not depend on the
    signalling (roster, media teardown, mute, DTMF targets, lobby, ending calls by API or at
    shutdown).  Each subclass holds only its protocol: answering, refusing, hanging up
    (:meth:`_hang_up`) and keying DTMF (:meth:`_send_dtmf`)."""

    #: ``sip`` or ``h323``: the roster's and the lobby's protocol name.
    protocol: Protocol
    #: The subclass's module logger, so events keep their logger name (``gateway.calls``, ...).
    _log: typing.Any = log

    def __init__(self, *, reactor: typing.Any, policy: Policy, core_url: str, media_address: str,
                 ports: PortAllocator, roster: Roster | None, metrics: Metrics | None,
                 pins: PinAttempts | None, live: LiveOverrides | None,
                 has_participants: typing.Callable[[str], bool]) -> None:
        self._reactor = reactor
        #: Operator edits of running meetings (lock, PIN), shared by the SIP and H.323 controllers.
        self.live = live if live is not None else LiveOverrides(has_participants)
        #: Wrong-PIN counts per (meeting, source), shared by the SIP and H.323 controllers.
        self.pins = pins if pins is not None else PinAttempts()
        self.policy = policy
        self.roster = roster if roster is not None else Roster()
        self.metrics = metrics
        self._core_url = core_url
        self._media_address = media_address
        #: ``media.passthrough`` (``auto``: G.711 calls take the fast path, bridge/fastpath.py).
        self.passthrough = "off"
        self._ports = ports
        self._calls: dict[typing.Any, E] = {}
        #: Controllers a relayed digit (``dtmf_relay: true``) goes to: this one and, when the
        #: gateway runs both, the other protocol's (``Gateway`` links them).
        self.dtmf_relay_targets: list[DtmfRelayTarget] = [self]

    # -- what each protocol does its own way ----------------------------------------------------

    def _hang_up(self, entry: E, reason: str, *, by: str) -> None:
        """End an answered (or joining) call from the gateway's side, ``reason`` for the caller."""
        raise NotImplementedError

    def _send_dtmf(self, entry: E, digits: str, duration_ms: int, *, why: str) -> None:
        """Key ``digits`` toward the caller; :class:`DtmfError` when they cannot be sent."""
        raise NotImplementedError

    def _join_roster(self, entry: E, session: MediaSession, codec: str) -> None:
        """Put the answered call on the roster (:func:`join_roster`, with the protocol's view)."""
        raise NotImplementedError

    # -- admission and reload ------------------------------------------------------------------

    def _decide(self, entry: E, meeting: str, pin: str | None, *, source: str,
                **call: typing.Any) -> Admit | Refuse:
        """The policy decision for ``entry`` joining ``meeting`` with ``pin`` (live edits applied;
        ``call``: the rest of :meth:`LiveOverrides.decide`'s arguments, the protocol's view of the
        call); counts a wrong PIN against the caller's ``source`` (lockout after the meeting's
        ``pin_attempts``), shared by SIP and H.323 callers."""
        mp = self.live.effective_policy(self.policy, meeting).for_meeting(meeting)
        locked = mp is not None and mp.pin is not None and self.pins.locked(meeting, source, mp.pin_attempts)
        decision = self.live.decide(self.policy, meeting=meeting, source=source, pin=pin,
                                    locked_out=locked, **call)
        if isinstance(decision, Refuse) and decision.policy is not None \
                and decision.rule == decision.policy.rule("pin"):
            self._log.info("call.pin_wrong", call=entry.label, meeting=meeting, wrong=self.pins.wrong(meeting, source),
                     limit=decision.policy.pin_attempts)
        elif isinstance(decision, Admit) and pin is not None and decision.policy.pin is not None:
            self.pins.succeeded(meeting, source)
        return decision

    def _apply_policy(self, policy: Policy, *, joining: Callable[[E], Refuse | None],
                      joined: Callable[[E], Refuse | None], end: Callable[[E, Refuse], None]) -> int:
        """Use a reloaded ``policy`` for new calls at once; end the calls still in the IVR (meeting
        chosen) or the lobby that ``joining`` says it now refuses, whatever ``on_tighten``; under
        ``on_tighten: end`` also the answered ones ``joined`` says it no longer admits.  ``end``
        hangs up with the protocol's reason; returns how many were ended."""
        self.policy = policy
        ended = 0
        for entry in list(self._calls.values()):
            if entry.ended or entry.participant is not None or entry.legacy is None or not entry.meeting:
                continue
            refusal = joining(entry)
            if refusal is not None:
                self._log.info("call.ended_by_policy", call=entry.label, meeting=entry.meeting, rule=refusal.rule,
                         stage="lobby" if entry.lobby_id is not None else "ivr")
                end(entry, refusal)
                ended += 1
        if policy.on_tighten != "end":
            return ended
        for entry in list(self._calls.values()):
            if entry.ended or entry.participant is None:
                continue
            refusal = joined(entry)
            if refusal is not None:
                self._log.info("call.ended_by_policy", call=entry.label, meeting=entry.meeting, rule=refusal.rule)
                end(entry, refusal)
                ended += 1
        return ended

    # -- shared steps ---------------------------------------------------------------------------

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    def _answered(self, meeting: str, participant_id: str) -> E | None:
        """The live, answered call of roster participant ``participant_id`` in ``meeting``."""
        for entry in list(self._calls.values()):
            if entry.meeting == meeting and not entry.ended and entry.participant is not None \
                    and entry.participant.id == participant_id:
                return entry
        return None

    def _leave_roster(self, entry: E, by: str) -> None:
        participant, entry.participant = entry.participant, None
        leave_roster(self.roster, self.metrics, participant, by)

    def _close_media(self, entry: E) -> None:
        """Stop the IVR/lobby step, close the IVR's leg or the call's session (in the background:
        leaving the core takes a round trip) and forget live edits of meetings now empty."""
        if entry.ivr_task is not None:
            entry.ivr_task.cancel()
        legacy, entry.legacy = entry.legacy, None
        if legacy is not None:
            legacy.close()
        session, entry.session = entry.session, None
        if session is not None:
            task = asyncio.ensure_future(session.close())
            entry.tasks.add(task)
            task.add_done_callback(entry.tasks.discard)
            task.add_done_callback(lambda _t: self.live.prune())  # the meeting may have ended
        self.live.prune()

    async def _join_on_leg(self, entry: E, legacy: LegacyAudioLeg, *, codec: str,
                           publish: dict[str, typing.Any], bound: typing.Any,
                           on_dtmf: Callable[[str], None] | None = None) -> MediaSession | None:
        """Join ``entry``'s meeting on the running leg the IVR, the lobby or a delayed offer set up
        (a :class:`MediaSession` takes it over; ``publish``: what the meeting page shows of the
        leg), then the roster.  None when joining failed (the call is hung up) or the call ended
        meanwhile (its media closed)."""
        session = MediaSession.around_legacy(legacy, passthrough=self.passthrough, reactor=self._reactor,
                                             meeting=entry.meeting, core_url=self._core_url,
                                             display_name=entry.pseudonym)
        entry.legacy, entry.session, entry.on_digit = None, session, None
        if on_dtmf is not None:
            session.on_dtmf = on_dtmf
        session.on_ended = lambda why: self._media_ended(entry, why)
        session.webrtc.publish_params = publish
        try:
            await session.start()
        except Exception as exc:  # noqa: BLE001 - the call is answered: end it cleanly
            bound.error("call.media_failed", stage="join", error=str(exc))
            if not entry.ended:
                self._hang_up(entry, "the meeting could not be joined", by="media")
            return None
        if entry.ended:
            self._close_media(entry)
            return None
        self._join_roster(entry, session, codec)
        return session

    def _media_ended(self, entry: E, why: str) -> None:
        if not entry.ended:
            self._log.info("call.media_ended", call=entry.label, meeting=entry.meeting, why=why)
            self._hang_up(entry, why, by="media")

    async def _end_all(self, entries: list[E], reason: str, *, by: str, timeout: float) -> int:
        """Hang up ``entries`` and wait, at most ``timeout`` seconds, for their media to leave."""
        for entry in entries:
            self._hang_up(entry, reason, by=by)
        pending = [t for e in entries for t in e.tasks]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        return len(entries)

    async def hangup_all(self, reason: str = "gateway shutting down") -> None:
        """End every call, e.g. at shutdown."""
        await self._end_all(list(self._calls.values()), reason, by="shutdown", timeout=2)

    async def end_meeting(self, meeting: str, reason: str) -> int:
        """Hang up every legacy call to ``meeting`` (answered or still joining) and wait, briefly,
        for their media to leave the core; returns how many calls were ended."""
        return await self._end_all([e for e in self._calls.values() if e.meeting == meeting], reason,
                                   by="api", timeout=5)

    def end_participant(self, meeting: str, participant_id: str, reason: str) -> bool:
        """Hang up the call of roster participant ``participant_id`` (or of the caller waiting in
        the lobby as ``participant_id``); False: no such call."""
        for entry in list(self._calls.values()):
            if entry.meeting == meeting and ((entry.participant is not None and entry.participant.id
                                              == participant_id) or entry.lobby_id == participant_id):
                self._hang_up(entry, reason, by="api")
                return True
        return False

    def set_participant_muted(self, meeting: str, participant_id: str, muted: bool) -> bool:
        """Stop (or resume) forwarding an answered caller's audio to the core; False: no such call."""
        for entry in self._calls.values():
            if entry.meeting == meeting and entry.participant is not None \
                    and entry.participant.id == participant_id and entry.session is not None:
                set_muted(entry.session, muted)
                entry.participant.muted = muted
                self._log.info("call.muted" if muted else "call.unmuted", call=entry.label, meeting=meeting)
                return True
        return False

    def lobby(self, meeting: str) -> list[dict[str, str]]:
        """Callers waiting in ``meeting``'s lobby, for the control API (ids only)."""
        return waiting(self._calls.values(), meeting, self.protocol)

    def admit_participant(self, meeting: str, participant_id: str) -> bool:
        """Let a caller waiting in the lobby join (the control API's admit command)."""
        return admit_waiting(self._calls.values(), meeting, participant_id)

    # -- DTMF toward callers (relay, control API) -----------------------------------------------

    def _relay(self, entry: E, digit: str) -> None:
        """A joined caller's digit to the meeting's other legacy participants (``dtmf_relay``);
        never the IVR's/lobby's digits nor a caller not yet on the roster."""
        if entry.on_digit is None and entry.participant is not None and not entry.ended:
            relay_dtmf(self.policy, entry.meeting, digit, sender=entry.participant.id,
                       targets=self.dtmf_relay_targets)

    def send_dtmf(self, meeting: str, participant_id: str, digits: str,
                  duration_ms: int = DEFAULT_DURATION_MS) -> bool:
        """Key ``digits`` toward the answered caller ``participant_id`` (the control API's command);
        False if no such caller, :class:`DtmfError` if they cannot be sent (nothing is sent then)."""
        entry = self._answered(meeting, participant_id)
        if entry is None:
            return False
        self._send_dtmf(entry, digits, duration_ms, why="api")
        return True

    def send_dtmf_to_meeting(self, meeting: str, digits: str, *, besides: str | None) -> int:
        """Key ``digits`` toward every answered caller in ``meeting`` but ``besides`` (the relay);
        returns to how many they went. A caller that cannot take them is logged and skipped."""
        sent = 0
        for entry in list(self._calls.values()):
            if entry.meeting != meeting or entry.ended or entry.participant is None \
                    or entry.participant.id == besides:
                continue
            try:
                self._send_dtmf(entry, digits, DEFAULT_DURATION_MS, why="relay")
            except DtmfError as exc:
                self._log.info("call.dtmf_not_sent", call=entry.label, meeting=meeting, why="relay",
                         detail=str(exc))
                continue
            sent += 1
        return sent
