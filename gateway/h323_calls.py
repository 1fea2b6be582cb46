"""Legacy calls over H.323: from an incoming Setup to a participant in a meeting.

The H.323 twin of :mod:`gateway.calls` (which does this for SIP): for each call the H.323
transport (:mod:`h323.transport`) offers, it finds the meeting in what the caller dialled,
decides admission with the same policy (``gateway.admission.decide(..., protocol="h323")``),
opens the call's media with the same :class:`bridge.session.MediaSession`, and only then sends
Connect, so the caller hears the meeting from the first packet.

- **Meeting id** (H.225.0 section 7.3.1): the Q.931 Called party number, else the
  ``dialledDigits`` alias, else the ``h323-ID`` alias.  ``meeting#pin`` keeps the meeting part
  (the PIN is never logged), and so does ``IP##meeting``, the form endpoints use when they dial
  an address.
- **Refusals**: ReleaseComplete with a ``ReleaseCompleteReason`` and a Q.931 cause, plus a
  Display element with the rule's text (what SIP puts in ``Warning:``): unknown meeting and
  protocol not allowed -> ``calledPartyNotRegistered`` (causes 1 and 21); ``legacy_media:
  require-srtp`` -> ``securityDenied`` (H.323 legs are plain RTP); no media port or the meeting
  cannot be joined -> ``gatewayResources``; a meeting locked by an operator (control API) ->
  ``destinationRejection`` (cause 21).  Each refusal logs ``call.refused``.
- **IVR and lobby** (like SIP callers): only the IP dialled, a PIN missing, or ``lobby: true`` ->
  the call is connected with its own RTP leg, :mod:`gateway.ivr` asks by voice (digits by H.245
  userInputIndication or RFC 4733 on the leg), the lobby waits for the control API's admit, and
  the call joins on the same leg (:meth:`MediaSession.around_legacy`) -- or is released with
  :func:`release_for_ivr`'s reason and the rule in Display.
- **Media**: with Fast Start the caller's first G.711 proposal (PCMU, PCMA) is bridged and
  answered in Connect; otherwise Connect starts H.245 (tunnelled or separate) and the bridge
  opens when both logical channels are (``MediaReady``).  The RTP port pair is taken before
  Connect either way, since the OpenLogicalChannelAck must name it.
- **Video** (H.264 passthrough, like SIP calls): when the meeting's policy carries it
  (:func:`gateway.participation.passthrough_video_codecs`), a second port pair is taken before
  Connect, our TCS lists H.264 (H.241) and the video channels open (Fast Start: the caller's
  H.264 proposal pair is answered with the audio one); the call's :class:`MediaSession` then gets
  a :class:`bridge.video_leg.LegacyVideoLeg` wired as SIP's (:func:`gateway.participation.
  wire_video`): the leg's keyframe translator asks the caller by H.245 videoFastUpdatePicture,
  the caller's videoFastUpdatePicture forces an IDR from the core, flowControlCommand moves the
  leg's bitrate governor.  The caller's CloseLogicalChannel of its video closes the video leg.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from bridge.bitrate import CEILING_BPS, BitrateGovernor
from bridge.dtmf_sender import (
    DEFAULT_GAP_MS,
    check_duration,
    validate_digits,
)
from bridge.keyframe import KeyframeTranslator, Method, Side, h323_caps
from bridge.legacy_leg import LegacyAudioLeg
from bridge.ports import NoFreePort, PortAllocator, PortLease
from bridge.session import MediaSession, allocate_legacy_leg
from bridge.video_leg import VideoLegParams
from gateway.admission import Admit, Refuse
from gateway.dialstring import DialString, parse_dial_string
from gateway.ivr import IvrHangup, LegIO
from gateway.ivr.detour import converse, wait_in_lobby
from gateway.live_meeting import LOCK_RULE, LiveOverrides
from gateway.metrics import Metrics
from gateway.participation import (
    LegacyCallController,
    join_roster,
    passthrough_video_codecs,
    wire_video,
)
from gateway.pinlock import PinAttempts
from gateway.policy import Policy
from gateway.roster import Roster, RosterParticipant
from h323.call import (
    FIRST_LOCAL_CHANNEL,
    CallOffered,
    CallReleased,
    ChannelClosed,
    DtmfReceived,
    FastStartOffer,
    FlowControl,
    KeyframeRequested,
    MediaReady,
    VideoChannel,
    choose_fast_start,
)
from h323.h245 import H264Capability
from h323.transport import H323Connection

log = structlog.get_logger("gateway.h323_calls")

#: Codecs we answer Fast Start with, in the order we accept them (the caller's order decides).
FAST_START_CODECS = ("PCMU", "PCMA")
#: RTP payload types of the codecs an H.323 leg may carry (RFC 3551 static types; H.323 uses them).
PAYLOAD_TYPES = {"PCMU": 0, "PCMA": 8, "G722": 9}



def meeting_part(text: str) -> str:
    """The meeting id in one dialled string: ``1000``, ``1000#4321`` (meeting#pin),
    ``192.0.2.1##1000`` (IP##meeting) and ``1000@host`` all give ``1000``
    (:func:`gateway.dialstring.parse_dial_string`, shared with SIP)."""
    return parse_dial_string(text, ivr_users=()).meeting


def dial_from_offer(offer: CallOffered) -> DialString:
    """Meeting and PIN a Setup asks for: called party number, dialledDigits, then h323-ID."""
    for candidate in (offer.called_number or "", *offer.dialled_digits, *offer.h323_ids):
        dialled = parse_dial_string(candidate, ivr_users=())
        if dialled.meeting:
            return dialled
    return DialString("")


def meeting_from_offer(offer: CallOffered) -> str:
    """The meeting a Setup asks for: called party number, dialledDigits, then h323-ID."""
    for candidate in (offer.called_number or "", *offer.dialled_digits, *offer.h323_ids):
        meeting = meeting_part(candidate)
        if meeting:
            return meeting
    return ""


def release_for(decision: Refuse) -> tuple[str, int]:
    """The ReleaseCompleteReason and Q.931 cause for a policy refusal (H.225.0 table 5)."""
    if decision.rule == LOCK_RULE:  # the meeting itself turns the caller away: cause 21, call rejected
        return "destinationRejection", 21
    if decision.sip_status == 404:
        return "calledPartyNotRegistered", 1  # unallocated (unassigned) number
    if decision.sip_status == 488:
        return "securityDenied", 31
    return "calledPartyNotRegistered", 21  # call rejected


def release_for_ivr(hangup: IvrHangup) -> tuple[str, int]:
    """The ReleaseCompleteReason and Q.931 cause when the IVR (or a reload) gives up on an answered
    call: wrong PINs -> ``securityDenied``; a locked meeting -> ``destinationRejection``; nothing
    entered -> ``undefinedReason`` with normal clearing; any other rule -> ``calledPartyNotRegistered``."""
    if hangup.rule == LOCK_RULE:
        return "destinationRejection", 21
    if ".pin=" in hangup.rule or ".pin_attempts=" in hangup.rule:
        return "securityDenied", 21
    if hangup.rule == "ivr.attempts":
        return "undefinedReason", 16
    return "calledPartyNotRegistered", 21


#: RFC 4733 events on an H.323 RTP leg: the payload type endpoints use for them by convention
#: (H.245 does not negotiate it here; the leg drops other unknown payload types as before).
H323_TELEPHONE_EVENT_PT = 101


#: What we take of H.264 (H.241): Baseline, level 3.1, up to the bridge's video ceiling.
VIDEO_CAPABILITY = H264Capability(max_bit_rate=CEILING_BPS // 100)


def video_leg_params(video: VideoChannel) -> VideoLegParams:
    """The bridge's view of an H.323 call's H.264 channels (bridge never imports h323): our
    channel's payload type and the caller's RTP address, its H.245 ``maxBitRate`` as the
    receive cap, and keyframes asked for by H.245 (:func:`bridge.keyframe.h323_caps`)."""
    return VideoLegParams(payload_type=video.payload_type, remote_address=video.remote_rtp[0],
                          remote_port=video.remote_rtp[1], packetization_mode=1,
                          bitrate_cap_bps=video.capability.max_bps or None, keyframe_caps=h323_caps())


@dataclass(frozen=True)
class _Media:
    """What :meth:`H323CallController._media_for` settled: our RTP address, the codec, the
    caller's RTP address, the video channel (None: audio only) and, for Fast Start, the video
    keywords of ``conn.accept``."""

    local_rtp: tuple[str, int]
    codec: str
    remote: tuple[str, int]
    video: VideoChannel | None = None
    answer: dict[str, Any] = field(default_factory=dict)


class _PreparedPorts:
    """Hands already taken leases, in order (audio, then video), to :meth:`MediaSession.allocate`
    (same interface as :class:`PortAllocator` there): the ports must be known before the codec is."""

    def __init__(self, address: str, *leases: PortLease | None) -> None:
        self._leases = [lease for lease in leases if lease is not None]
        self.address = address

    def allocate(self) -> PortLease:
        if not self._leases:
            raise NoFreePort("the prepared lease was already used")
        return self._leases.pop(0)


@dataclass
class H323LegacyCall:
    """One admitted (or being admitted) H.323 call and its media."""

    conn: H323Connection
    offer: CallOffered
    meeting: str
    label: str
    lease: PortLease | None = None
    session: MediaSession | None = None
    media: asyncio.Future[MediaReady] | None = None
    ended: bool = False
    answered: bool = False
    #: What the caller dialled (``meeting#pin``); the PIN is never logged.
    dialled: DialString = field(default_factory=lambda: DialString(""))
    pseudonym: str = ""
    participant: RosterParticipant | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    #: Where this call's DTMF digits go, like ``gateway.calls.LegacyCall.on_digit`` (e.g. an IVR's
    #: collector, ``on_digit(digit)``); None: only ``H323CallController.on_dtmf`` hears them.
    on_digit: Any = None
    #: The RTP leg while the IVR or the lobby holds the call (before a MediaSession takes it over).
    legacy: LegacyAudioLeg | None = None
    ivr_task: asyncio.Task[Any] | None = None
    #: Waiting in the lobby: the id the control API admits it by (None otherwise).
    lobby_id: str | None = None
    admitted: asyncio.Event | None = None
    #: Keyframe requests both ways through the one translator (made on first use).
    keyframes: KeyframeTranslator | None = None
    #: Our video channel toward the caller and its encoder target (flowControlCommand feeds it);
    #: None while the call carries no video.
    video_channel: int | None = None
    bitrate: BitrateGovernor | None = None
    #: The video port pair taken before Connect (a call whose meeting carries video).
    video_lease: PortLease | None = None


class H323CallController(LegacyCallController[H323LegacyCall]):
    """The H.323 transport's ``H323CallHandler``: admits, bridges and ends H.323 calls (what
    does not depend on H.323 is :class:`gateway.participation.LegacyCallController`'s)."""

    protocol = "h323"
    _log = log

    def __init__(self, *, reactor: Any, policy: Policy, core_url: str, media_address: str,
                 ports: PortAllocator, roster: Roster | None = None, metrics: Metrics | None = None,
                 pins: PinAttempts | None = None, live: LiveOverrides | None = None) -> None:
        super().__init__(reactor=reactor, policy=policy, core_url=core_url, media_address=media_address,
                         ports=ports, roster=roster, metrics=metrics, pins=pins, live=live,
                         has_participants=lambda m: bool(self.roster.participants(m)))
        #: RAS registration (``gateway.h323_ras.RasRegistration``): ARQ before answering, DRQ at the end.
        self.ras: Any = None
        #: DTMF hook ``on_dtmf(meeting, participant_id_or_label, digit)`` (userInputIndication).
        self.on_dtmf: Callable[[str, str, str], None] | None = None
        #: Monotonic seconds for the keyframe translator's coalescing (tests inject a fake).
        self.clock: Callable[[], float] = time.monotonic

    # -- H323CallHandler ----------------------------------------------------------------------

    def incoming_call(self, conn: H323Connection, offer: CallOffered) -> None:
        dialled = dial_from_offer(offer)
        entry = H323LegacyCall(conn=conn, offer=offer, meeting=dialled.meeting,
                               label=conn.label, dialled=dialled)
        self._calls[conn.id] = entry
        task = asyncio.ensure_future(self._admit_and_bridge(entry))
        entry.tasks.add(task)
        task.add_done_callback(entry.tasks.discard)

    def media_ready(self, conn: H323Connection, media: MediaReady) -> None:
        entry = self._calls.get(conn.id)
        if entry is not None and entry.media is not None and not entry.media.done():
            entry.media.set_result(media)

    def dtmf(self, conn: H323Connection, event: DtmfReceived) -> None:
        entry = self._calls.get(conn.id)
        if entry is not None:
            self._digit(entry, event.digit, "h245-uii")

    def _leg_digit(self, entry: H323LegacyCall, digit: str) -> None:
        """An RFC 4733 digit from the call's RTP leg: the same path as userInputIndication."""
        if not entry.ended:
            self._digit(entry, digit, "rfc4733")

    def _digit(self, entry: H323LegacyCall, digit: str, by: str) -> None:
        """One digit, whichever way it came: the per-call hook (IVR collector), ``on_dtmf``, the
        meeting's relay. The digit itself may be a PIN: it is never logged."""
        log.info("h323.dtmf", call=entry.label, meeting=entry.meeting, by=by)
        if entry.on_digit is not None:  # the same per-call digit hook as SIP calls
            entry.on_digit(digit)
        if self.on_dtmf is not None:
            who = entry.participant.id if entry.participant is not None else entry.label
            self.on_dtmf(entry.meeting, who, digit)
        self._relay(entry, digit)

    # -- DTMF toward callers (relay, control API) ---------------------------------------------

    def _send_dtmf(self, entry: H323LegacyCall, digits: str, duration_ms: int, *, why: str) -> None:
        """userInputIndication, the way H.245 negotiated (``signal`` when the peer's TCS lists
        ``dtmf``, else ``alphanumeric``), one per digit paced like RFC 4733 events (duration +
        gap). Logs the count, never the digits."""
        text, pace = validate_digits(digits), (check_duration(duration_ms) + DEFAULT_GAP_MS) / 1000
        loop = asyncio.get_running_loop()
        for i, digit in enumerate(text):
            loop.call_later(i * pace, self._send_user_input, entry, digit, duration_ms)
        log.info("call.dtmf_sent", call=entry.label, meeting=entry.meeting, by="h245-uii", why=why,
                 count=len(text))

    @staticmethod
    def _send_user_input(entry: H323LegacyCall, digit: str, duration_ms: int) -> None:
        if not entry.ended and entry.conn.send_user_input(digit, duration_ms) is None:
            log.info("call.dtmf_not_sent", call=entry.label, meeting=entry.meeting, why="h245-closed")

    def call_released(self, conn: H323Connection, event: CallReleased) -> None:
        if self.ras is not None:
            self.ras.disengage(conn.id)  # DRQ (H.225.0 7.7.14) when the gatekeeper admitted it
        entry = self._calls.pop(conn.id, None)
        if entry is None:
            return
        entry.ended = True
        if entry.media is not None and not entry.media.done():
            entry.media.cancel()
        if entry.answered:
            log.info("call.ended", call=entry.label, meeting=entry.meeting, protocol="h323",
                     by=event.by, reason=event.reason, cause=event.cause)
        self._leave_roster(entry, event.by)
        self._close_media(entry)

    # -- application --------------------------------------------------------------------------

    def release_call(self, conn_id: int, *, by: str) -> bool:
        """Release one call by its connection id (e.g. the gatekeeper disengaged it)."""
        entry = self._calls.get(conn_id)
        if entry is None:
            return False
        self._end_from_gateway(entry, by=by)
        return True

    def request_keyframe(self, call: H323LegacyCall | int | str, reason: str = "core_request") -> bool:
        """The core needs a keyframe of the caller's video: through the call's
        :class:`bridge.keyframe.KeyframeTranslator` (requests within 250 ms of the last are
        coalesced) to H.245 ``miscellaneousCommand videoFastUpdatePicture``.  ``call`` is the call
        record, its connection id or its roster participant id.  True if a request went out."""
        entry = call if isinstance(call, H323LegacyCall) else next(
            (e for e in self._calls.values()
             if e.conn.id == call or (e.participant is not None and e.participant.id == call)), None)
        if entry is None or entry.ended:
            return False
        video = entry.session.video if entry.session is not None else None
        if video is not None:  # the call's video leg: its translator, as SIP calls
            sent = video.request_keyframe(reason)
            log.info("h323.keyframe.requested", call=entry.label, meeting=entry.meeting, sent=sent)
            return sent
        sent = False
        for action in self._keyframes(entry).from_core(reason):
            if action.method is Method.H245:
                sent = entry.conn.request_keyframe() or sent
        log.info("h323.keyframe.requested", call=entry.label, meeting=entry.meeting, sent=sent)
        return sent

    def keyframe_requested(self, conn: H323Connection, event: KeyframeRequested) -> None:
        """The caller sent ``videoFastUpdatePicture``: it lost the picture we send it, so the core
        side forces a keyframe (through the translator, coalesced)."""
        entry = self._calls.get(conn.id)
        if entry is None or entry.ended:
            return
        forced = False
        for action in self._keyframes(entry).from_legacy("h245"):
            if action.toward is Side.CORE:
                video = entry.session.video if entry.session is not None else None
                hook = video.on_core_keyframe if video is not None else None
                if hook is not None:
                    hook()
                    forced = True
        log.info("h323.keyframe.received", call=entry.label, meeting=entry.meeting, channel=event.channel,
                 forced=forced)

    def flow_control(self, conn: H323Connection, event: FlowControl) -> None:
        """The caller sent ``flowControlCommand`` (H.245 8.11): a limit on what we send it.  It
        moves the video encoder's target (:meth:`BitrateGovernor.flow_control`) when it names our
        video channel or the whole multiplex and the call has video; otherwise it is only logged.
        A command: nothing is answered."""
        entry = self._calls.get(conn.id)
        if entry is None or entry.ended:
            return
        governor = entry.bitrate
        applies = governor is not None and (
            event.scope == "wholeMultiplex"
            or (event.scope == "logicalChannelNumber" and event.target == entry.video_channel))
        target = governor.flow_control(event.maximum_bit_rate) if applies and governor is not None else None
        log.info("h323.flow_control", call=entry.label, meeting=entry.meeting, scope=event.scope,
                 target=event.target, maximum_bps=None if event.maximum_bit_rate is None else event.maximum_bit_rate * 100,
                 applied=applies, target_bps=target)

    def channel_closed(self, conn: H323Connection, event: ChannelClosed) -> None:
        """The caller closed a logical channel (CloseLogicalChannel): its video channel closes
        the call's video leg (the meeting no longer gets its picture nor sends it ours)."""
        entry = self._calls.get(conn.id)
        if entry is None or entry.ended:
            return
        video = entry.session.video if entry.session is not None and event.media == "video" else None
        if video is not None:
            video.close()
            entry.video_channel = None
        log.info("h323.channel_closed", call=entry.label, meeting=entry.meeting, channel=event.channel,
                 media=event.media, video_leg_closed=video is not None)

    def _keyframes(self, entry: H323LegacyCall) -> KeyframeTranslator:
        if entry.keyframes is None:
            entry.keyframes = KeyframeTranslator(h323_caps(), clock=self.clock, call=entry.label)
        return entry.keyframes

    def apply_policy(self, policy: Policy) -> int:
        """Use a reloaded ``policy`` for new calls; under ``on_tighten: end``, release the answered
        H.323 calls (always plain RTP over TCP) it no longer admits.  Returns how many."""
        from gateway.policy_reload import joining_refused, tightened_out

        def joining(entry: H323LegacyCall) -> Refuse | None:
            return joining_refused(policy, meeting=entry.meeting, protocol="h323", transport="tcp",
                                   legacy_encryption="plain", source=entry.conn.peer[0])

        def joined(entry: H323LegacyCall) -> Refuse | None:
            return tightened_out(policy, meeting=entry.meeting, protocol="h323", transport="tcp",
                                 legacy_encryption="plain")

        def end(entry: H323LegacyCall, refusal: Refuse) -> None:
            if entry.participant is not None:  # answered: a plain release, as before the reload
                self._end_from_gateway(entry, by="policy")
                return
            hangup = IvrHangup(refusal.warning, refusal.rule)
            self._end_from_gateway(entry, by="policy",
                                   release=(*release_for_ivr(hangup), f"refused by rule {refusal.rule}"))

        return self._apply_policy(policy, joining=joining, joined=joined, end=end)

    # -- the call -----------------------------------------------------------------------------

    async def _admit_and_bridge(self, entry: H323LegacyCall) -> None:
        conn, offer = entry.conn, entry.offer
        bound = log.bind(call=entry.label, meeting=entry.meeting, protocol="h323", transport="tcp")
        # Only the IP dialled: the IVR asks for the meeting (after the gatekeeper's ARQ, below).
        decision = self.check(entry, entry.meeting, entry.dialled.pin) if entry.meeting else None
        if isinstance(decision, Refuse):
            reason, cause = release_for(decision)
            bound.info("call.refused", status=decision.sip_status, rule=decision.rule, release_reason=reason,
                       cause=cause, detail=decision.warning)
            # Q.931 Display holds at most 82 octets: the rule, which names meeting and setting.
            self._refuse(entry, reason, cause, f"refused by rule {decision.rule}", rule=decision.rule)
            return
        if self.ras is not None:  # ARQ to the gatekeeper (H.225.0 7.7.8) before answering
            arj = await self.ras.admit(conn.id, offer)
            if entry.ended:
                return
            if arj is not None:
                bound.info("call.refused", rule="gatekeeper", release_reason=arj[0], cause=arj[1], arj=arj[2])
                self._refuse(entry, arj[0], arj[1], f"gatekeeper refused: {arj[2]}", rule="gatekeeper")
                return
        if decision is None or decision.pin_required or decision.lobby:  # IVR for the PIN, lobby wait
            await self._detour(entry, decision, bound)
            return
        choice = choose_fast_start(offer.fast_start, FAST_START_CODECS)
        bound.info("call.admitted", rule=decision.rule, media_security="plain", legacy_encryption="plain",
                   fast_start=choice is not None, tunnelling=offer.tunnelling,
                   codec=choice.codec if choice else None, notes=list(decision.notes) or None)
        if decision.policy.legacy_media == "prefer-srtp":
            bound.warning("call.media_plain", rule=decision.rule,
                          detail="prefer-srtp: H.323 legs carry plain RTP")
        if self.metrics is not None:
            self.metrics.call_admitted("h323", "tcp")
        entry.pseudonym = self.roster.new_pseudonym(entry.meeting)
        wants_video = "H264" in passthrough_video_codecs(decision.policy)
        media = await self._media_for(entry, choice, bound, video=VIDEO_CAPABILITY if wants_video else None)
        if media is None:
            return
        local_rtp, codec, remote = media.local_rtp, media.codec, media.remote
        if choice is not None:
            conn.ring()
        video = video_leg_params(media.video) if media.video is not None else None
        if video is None:
            self._release_video_lease(entry)
        try:
            session = MediaSession.allocate(
                reactor=self._reactor, meeting=entry.meeting, core_url=self._core_url,
                media_address=self._media_address,
                port_allocator=_PreparedPorts(self._media_address, entry.lease,  # type: ignore[arg-type]
                                              entry.video_lease),
                encoding=codec, payload_type=PAYLOAD_TYPES[codec], remote_address=remote[0],
                remote_port=remote[1], telephone_event_pt=H323_TELEPHONE_EVENT_PT,
                display_name=entry.pseudonym, passthrough=self.passthrough, video=video)
        except (NoFreePort, OSError, ValueError, KeyError) as exc:
            bound.error("call.media_failed", stage="allocate", error=str(exc))
            self._release_lease(entry)
            self._refuse(entry, "gatewayResources", 47, "media could not be set up", rule="media-port")
            return
        entry.lease = entry.video_lease = None  # owned by the session now
        entry.session = session
        # The same video wiring as SIP calls; the leg's translator asks by videoFastUpdatePicture.
        wire_video(session, h245_fast_update=conn.request_keyframe)
        if session.video is not None and media.video is not None:
            entry.video_channel = media.video.local_channel
            entry.bitrate = session.video.bitrate  # flowControlCommand moves the leg's governor
        session.on_ended = lambda why: self._media_ended(entry, why)
        # RFC 4733 on the RTP leg after joining: the same digit path as userInputIndication
        # (relay, on_dtmf), as on the IVR path, which takes the same payload type.
        session.on_dtmf = lambda digit: self._leg_digit(entry, digit)
        session.webrtc.publish_params = {"leg": "h323", "enc": "plain"}  # for the meeting page
        try:
            await session.start()
        except Exception as exc:  # noqa: BLE001 - any failure to join must give the caller a clean release
            bound.error("call.media_failed", stage="join", error=str(exc))
            self._close_media(entry)
            if not entry.ended:
                self._refuse(entry, "gatewayResources", 47, "the meeting could not be joined", rule="join-failed")
            return
        if entry.ended:
            self._close_media(entry)
            return
        if choice is not None:
            conn.accept(local_rtp=local_rtp, fast_start=choice, **media.answer)
            entry.answered = True
        self._join_roster(entry, session, codec)
        bound.info("call.answered", local_port=session.local_port, codec=codec,
                   fast_start=choice is not None, remote_port=remote[1], video=session.video is not None,
                   video_port=session.video_port,
                   participant=entry.participant.id if entry.participant else None)

    async def _media_for(self, entry: H323LegacyCall, choice: FastStartOffer | None, bound: Any,
                         video: H264Capability | None = None) -> _Media | None:
        """Take the call's RTP port pair (before the codec is known: the OpenLogicalChannelAck
        must name it), then the codec and the caller's RTP address: from the Fast Start proposal
        ``choice``, else (slow start) Connect now and wait until H.245 has opened both logical
        channels.  With ``video`` (the meeting carries H.264) a video port pair is taken too and
        the video channels open alongside (Fast Start: the caller's first H.264 proposal pair).
        None when refused or the call ended meanwhile."""
        try:
            entry.lease = self._ports.allocate()
        except (NoFreePort, OSError) as exc:
            bound.error("call.media_failed", stage="allocate", error=str(exc))
            self._refuse(entry, "gatewayResources", 47, "no media port available", rule="media-port")
            return None
        local_rtp = (self._media_address, entry.lease.rtp_port)
        proposal = entry.offer.fast_start_video[0] if entry.offer.fast_start_video else None
        if video is not None and (choice is None or proposal is not None):
            try:
                entry.video_lease = self._ports.allocate()
            except (NoFreePort, OSError) as exc:  # audio only rather than no call
                bound.warning("call.video_unavailable", error=str(exc))
        answer: dict[str, Any] = {}
        if video is not None and entry.video_lease is not None:
            answer = {"video": video, "local_video": (self._media_address, entry.video_lease.rtp_port)}
        if choice is not None:
            codec, remote, channel = choice.codec, choice.remote_rtp, None
            if answer and proposal is not None and proposal.video is not None and proposal.payload_type:
                answer["fast_start_video"] = proposal
                channel = VideoChannel(proposal.remote_rtp, proposal.remote_rtcp, FIRST_LOCAL_CHANNEL + 1,
                                       proposal.payload_type, proposal.video)
        else:
            entry.media = asyncio.get_running_loop().create_future()
            entry.conn.accept(local_rtp=local_rtp, **answer)
            entry.answered = True
            try:
                media = await entry.media
            except asyncio.CancelledError:
                self._release_lease(entry)
                return None
            codec, remote, channel = media.codec, media.remote_rtp, media.video
        if entry.ended:
            self._release_lease(entry)
            return None
        return _Media(local_rtp, codec, remote, channel, answer if choice is not None else {})

    # -- policy checks, the IVR and the lobby --------------------------------------------------

    def check(self, entry: H323LegacyCall, meeting: str, pin: str | None) -> Admit | Refuse:
        """The policy decision for ``entry`` joining ``meeting`` with ``pin`` (live edits applied);
        counts a wrong PIN against the caller's source, shared with SIP callers."""
        return self._decide(entry, meeting, pin, source=entry.conn.peer[0], protocol="h323", transport="tcp",
                            media_security="plain", participants=len(self.roster.participants(meeting)))

    async def _detour(self, entry: H323LegacyCall, first: Admit | None, bound: Any) -> None:
        """Connect with a media leg of our own (Fast Start, or after H.245 opened the channels), ask
        by voice for what is missing (digits by userInputIndication or RFC 4733), wait in the lobby
        if the meeting has one, then join on the same RTP leg -- or release with the rule."""
        conn, offer = entry.conn, entry.offer
        choice = choose_fast_start(offer.fast_start, FAST_START_CODECS)
        media = await self._media_for(entry, choice, bound)  # the IVR and the lobby: audio only
        if media is None:
            return
        local_rtp, codec, remote = media.local_rtp, media.codec, media.remote
        try:
            legacy = allocate_legacy_leg(
                media_address=self._media_address,
                port_allocator=_PreparedPorts(self._media_address, entry.lease),  # type: ignore[arg-type]
                encoding=codec, payload_type=PAYLOAD_TYPES[codec], remote_address=remote[0],
                remote_port=remote[1], telephone_event_pt=H323_TELEPHONE_EVENT_PT)
        except (NoFreePort, OSError, ValueError, KeyError) as exc:
            bound.error("call.media_failed", stage="allocate", error=str(exc))
            self._release_lease(entry)
            self._refuse(entry, "gatewayResources", 47, "media could not be set up", rule="media-port")
            return
        entry.lease, entry.legacy = None, legacy  # the leg owns the ports now
        io = LegIO(legacy.push_audio, legacy.codec.sample_rate)
        entry.on_digit = io.digit  # userInputIndication (dtmf) and RFC 4733 (the leg) both land here
        legacy.inbound.on_dtmf = lambda digit: self._leg_digit(entry, digit)
        if choice is not None:
            conn.accept(local_rtp=local_rtp, fast_start=choice)
            entry.answered = True
        await legacy.start()
        asks = "meeting" if first is None else ("pin" if first.pin_required else "lobby")
        bound.info("ivr.started", asks=asks, codec=codec, fast_start=choice is not None)
        result = await converse(entry, io, lambda meeting, pin: self.check(entry, meeting, pin),
                                first=first, codec=codec, secure=False)
        if result is None:
            return  # released meanwhile; call_released closed the leg
        if isinstance(result, IvrHangup):
            reason, cause = release_for_ivr(result)
            bound.info("call.refused", stage="ivr", rule=result.rule, release_reason=reason, cause=cause)
            if self.metrics is not None:
                self.metrics.call_refused("h323", result.rule)
            await io.play("goodbye")
            if not entry.ended:
                self._end_from_gateway(entry, by="ivr", release=(reason, cause, f"refused by rule {result.rule}"))
            return
        entry.meeting = result.meeting
        if result.lobby and not await wait_in_lobby(entry, io, protocol="h323"):
            return  # released (or removed) while waiting
        bound.info("call.admitted", meeting=entry.meeting, rule=result.rule, codec=codec,
                   media_security="plain", legacy_encryption="plain", entry_by="ivr")
        if self.metrics is not None:
            self.metrics.call_admitted("h323", "tcp")
        await io.play("joining")
        if entry.ended:
            return
        entry.pseudonym = self.roster.new_pseudonym(entry.meeting)
        session = await self._join_on_leg(entry, legacy, codec=codec, bound=bound,
                                          publish={"leg": "h323", "enc": "plain"})
        if session is None:
            return
        bound.info("call.answered", meeting=entry.meeting, local_port=session.local_port, codec=codec,
                   entry_by="ivr", participant=entry.participant.id if entry.participant else None)

    def _refuse(self, entry: H323LegacyCall, reason: str, cause: int, text: str, *, rule: str) -> None:
        if self.metrics is not None:
            self.metrics.call_refused("h323", rule)
        entry.ended = True
        self._calls.pop(entry.conn.id, None)
        self._release_lease(entry)
        entry.conn.reject(reason, cause=cause, display=text)

    def _hang_up(self, entry: H323LegacyCall, reason: str, *, by: str) -> None:
        """Release (endSessionCommand + ReleaseComplete, normal clearing): the API, media, shutdown."""
        self._end_from_gateway(entry, by=by)

    def _end_from_gateway(self, entry: H323LegacyCall, *, by: str,
                          release: tuple[str, int, str] | None = None) -> None:
        """End the call; ``release`` (ReleaseCompleteReason, Q.931 cause, Display text) says why
        when a rule ended it, else a plain normal clearing."""
        entry.ended = True
        self._calls.pop(entry.conn.id, None)
        if entry.media is not None and not entry.media.done():
            entry.media.cancel()
        if entry.answered:
            log.info("call.ended", call=entry.label, meeting=entry.meeting, protocol="h323", by=by)
        if release is not None:
            entry.conn.reject(release[0], cause=release[1], display=release[2])
        else:
            entry.conn.release("undefinedReason")
        self._leave_roster(entry, by)
        self._close_media(entry)

    # -- roster -------------------------------------------------------------------------------

    def _join_roster(self, entry: H323LegacyCall, session: MediaSession, codec: str) -> None:
        entry.participant = join_roster(
            self.roster, entry.meeting, session, protocol="h323", transport="tcp", codec=codec,
            legacy_encryption="plain", pseudonym=entry.pseudonym)

    def _close_media(self, entry: H323LegacyCall) -> None:
        self._release_lease(entry)  # a port pair taken before the codec was known
        super()._close_media(entry)

    @staticmethod
    def _release_lease(entry: H323LegacyCall) -> None:
        lease, entry.lease = entry.lease, None
        if lease is not None:
            lease.release()
        H323CallController._release_video_lease(entry)

    @staticmethod
    def _release_video_lease(entry: H323LegacyCall) -> None:
        lease, entry.video_lease = entry.video_lease, None
        if lease is not None:
            lease.release()


class LegacyControllers:
    """The SIP and H.323 controllers as one for the control API (``gateway.api.service.Controller``):
    one roster, and commands go to whichever controller holds the call."""

    def __init__(self, *controllers: Any) -> None:
        if not controllers:
            raise ValueError("at least one controller")
        self._controllers = controllers
        self.roster: Roster = controllers[0].roster

    def end_participant(self, meeting: str, participant_id: str, reason: str) -> bool:
        return any(c.end_participant(meeting, participant_id, reason) for c in self._controllers)

    def lobby(self, meeting: str) -> list[dict[str, str]]:
        return [w for c in self._controllers if hasattr(c, "lobby") for w in c.lobby(meeting)]

    def admit_participant(self, meeting: str, participant_id: str) -> bool:
        return any(c.admit_participant(meeting, participant_id) for c in self._controllers
                   if hasattr(c, "admit_participant"))

    @property
    def live(self) -> LiveOverrides:
        """The operator edits the controllers share (the app hands the SIP one to H.323)."""
        return self._controllers[0].live  # type: ignore[no-any-return]

    def set_participant_muted(self, meeting: str, participant_id: str, muted: bool) -> bool:
        return any(c.set_participant_muted(meeting, participant_id, muted) for c in self._controllers)

    def send_dtmf(self, meeting: str, participant_id: str, digits: str, duration_ms: int) -> bool:
        return any(c.send_dtmf(meeting, participant_id, digits, duration_ms) for c in self._controllers
                   if hasattr(c, "send_dtmf"))

    async def end_meeting(self, meeting: str, reason: str) -> int:
        ended = await asyncio.gather(*(c.end_meeting(meeting, reason) for c in self._controllers))
        return sum(ended)
