"""Legacy calls: from an inbound SIP INVITE to a participant in a meeting.

This is the one place where the SIP core, the policy and the media bridge meet.
For each INVITE it decides admission (``gateway.admission``), negotiates audio
(``sip.offer_answer``), opens the call's media (``bridge.session``), and only
then answers 200 OK, so the caller hears the meeting from the first packet.
Either side may end the call; whichever does, the other is torn down too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

import structlog

from bridge.bitrate import cap_from_sdp
from bridge.dtmf_sender import (
    DEFAULT_GAP_MS,
    DtmfError,
    check_duration,
    validate_digits,
)
from bridge.legacy_leg import LegacyAudioLeg
from bridge.ports import NoFreePort, PortAllocator
from bridge.session import MediaSession, allocate_legacy_leg
from bridge.video_leg import VideoLegParams
from gateway.admission import Admit, Refuse
from gateway.delayed_offer import (
    DelayedOfferNegotiation,
    ReofferWithoutSdp,
    delayed_offer_security,
    retarget_leg,
)
from gateway.dialstring import DEFAULT_IVR_USERS, DialString, parse_dial_string
from gateway.ivr import IvrHangup, LegIO
from gateway.ivr.detour import converse, wait_in_lobby
from gateway.live_meeting import LiveOverrides
from gateway.metrics import Metrics
from gateway.participation import (
    LegacyCallController,
    join_roster,
    passthrough_video_codecs,
    wire_video,
)
from gateway.pinlock import PinAttempts
from gateway.policy import MeetingPolicy, Policy
from gateway.roster import (
    LegacyEncryption,
    Roster,
    RosterParticipant,
    Transport,
)
from sip.calls import CallState, EndReason, InboundCall
from sip.info import MEDIA_CONTROL_TYPE, dtmf_relay_body, picture_fast_update_body
from sip.offer_answer import (
    AudioChoice,
    OfferRejected,
    VideoChoice,
    build_answer,
    choose_audio,
    choose_video,
    media_security,
)
from sip.sdp import SdpParseError, SessionDescription

log = structlog.get_logger("gateway.calls")

#: Codecs the legacy leg can carry, in the order we prefer when the offer leaves us the choice.
LEGACY_AUDIO_PREFERENCE = ("PCMU", "PCMA", "G722", "OPUS")


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
    #: What the caller dialled (meeting, PIN); the PIN is never logged.
    dialled: DialString = field(default_factory=lambda: DialString(""))
    #: The RTP leg while the IVR talks to the caller (before a MediaSession takes it over).
    legacy: LegacyAudioLeg | None = None
    ivr_task: asyncio.Task[Any] | None = None
    #: Where DTMF digits go (the IVR's collector), from RFC 4733 or SIP INFO.
    on_digit: Any = None
    #: ``lobby: true``: the id the control API admits it by while it waits (None otherwise).
    lobby_id: str | None = None
    admitted: asyncio.Event | None = None
    #: DTMF digits received so far (RFC 4733 and SIP INFO): logged as a count, never as digits.
    dtmf_count: int = 0


def audio_preference(mp: MeetingPolicy) -> tuple[str, ...]:
    """The codecs the legacy leg may use for ``mp``, in the meeting's ``audio_codecs`` order."""
    return tuple(c for c in mp.audio_codecs if c in LEGACY_AUDIO_PREFERENCE)


def choose_call_video(offer: SessionDescription, mp: MeetingPolicy) -> VideoChoice | None:
    """The main video the call carries: none under ``video: false``, else the offer's first
    usable line in a codec both the meeting's ``video_codecs`` and the passthrough bridge take."""
    preferred = passthrough_video_codecs(mp)
    return choose_video(offer, preferred=preferred, enabled=mp.video) if preferred else None


def reoffer_video(session: MediaSession | None, offer: SessionDescription) -> VideoChoice | None:
    """The running video leg's line in a re-offer (RFC 3264 8): kept when it has the same
    payload type and SDES keys (our key stays, as for audio); anything else -- no video leg,
    a new codec or new keys, which the leg cannot take mid-call -- is answered with port 0."""
    leg = session.video if session is not None else None
    video = choose_video(offer) if leg is not None else None
    if leg is None or video is None or video.payload_type != leg.params.payload_type:
        return None
    crypto, srtp = video.crypto, leg.srtp
    if crypto is None or srtp is None:
        return video if crypto is None and srtp is None else None
    if crypto.suite != srtp.suite or crypto.remote.key != srtp.remote_key:
        return None
    return dataclasses.replace(video, crypto=dataclasses.replace(
        crypto, local=dataclasses.replace(crypto.local, key=srtp.local_key)))


def renegotiate_video(session: MediaSession | None, video: VideoChoice | None,
                      offer: SessionDescription) -> None:
    """Apply a re-offer to the running video leg (RFC 3264 8): the kept line's new address and
    hold/resume from its direction (or ``c=0.0.0.0``), as the audio leg does
    (``gateway.delayed_offer.retarget_leg``); a line not kept (``video`` None) holds our video."""
    leg = session.video if session is not None else None
    if leg is None:
        return
    if video is None:
        leg.renegotiate(remote_address=leg.remote[0], remote_port=leg.remote[1], sending=False)
        return
    direction = offer.media[video.media_index].direction
    sending = direction in ("sendrecv", "recvonly") and video.remote_address not in ("0.0.0.0", "::")
    leg.renegotiate(remote_address=video.remote_address, remote_port=video.remote_port, sending=sending)


def video_leg_params(video: VideoChoice, offer: SessionDescription | None = None) -> VideoLegParams:
    """The bridge's view of the agreed video (bridge never imports sip); with the ``offer``,
    the room system's exact receive cap from its video line (``b=TIAS``, else ``b=AS`` less
    headers: :func:`bridge.bitrate.cap_from_sdp`), else none beyond our own ceiling."""
    crypto = video.crypto
    line = offer.media[video.media_index] if offer is not None else None
    return VideoLegParams(
        bitrate_cap_bps=cap_from_sdp(line) if line is not None else None,
        payload_type=video.payload_type, remote_address=video.remote_address,
        remote_port=video.remote_port, packetization_mode=video.packetization_mode,
        bandwidth_kbps=video.bandwidth_kbps, feedback=video.feedback,
        srtp_suite=crypto.suite if crypto is not None else None,
        srtp_remote_key=crypto.remote.key if crypto is not None else None,
        srtp_local_key=crypto.local.key if crypto is not None else None,
    )


def shown_name(display: str | None) -> str | None:
    """A SIP display name fit for the roster and core (``anonymous_names: false``): printable,
    bounded; None when there is nothing usable."""
    if not display:
        return None
    text = "".join(ch for ch in display if ch.isprintable()).strip()[:64]
    return text or None


class CallController(LegacyCallController[LegacyCall]):
    """The SIP core's ``CallHandler``: admits, bridges and ends legacy calls (what does not
    depend on SIP is :class:`gateway.participation.LegacyCallController`'s).

    Holds no per-meeting state beyond the live calls; when a call ends its entry is
    dropped, so nothing about a finished call stays in memory.
    """

    protocol = "sip"
    _log = log

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
        pins: PinAttempts | None = None,
        participant_count: Any = None,
        ivr_users: tuple[str, ...] = DEFAULT_IVR_USERS,
        live: LiveOverrides | None = None,
    ) -> None:
        super().__init__(reactor=reactor, policy=policy, core_url=core_url, media_address=media_address,
                         ports=ports, roster=roster, metrics=metrics, pins=pins, live=live,
                         has_participants=lambda m: self.participants_in(m) > 0)
        #: ``meeting -> participants in the core`` (WHIP publishers), for ``max_participants``;
        #: None: the legacy roster alone is counted.
        self._participant_count = participant_count
        self._ivr_users = ivr_users
        #: The one DTMF stream (RFC 4733 from the leg and SIP INFO), for a future IVR or
        #: tests: ``on_dtmf(call, digit, source)``, source ``rfc4733`` or ``sip-info``.
        self.on_dtmf: Any = None
        #: Keyframe requests from the caller (SIP INFO picture_fast_update): ``(call)``.
        self.on_keyframe_request: Any = None

    # -- CallHandler -------------------------------------------------------------------

    def incoming_call(self, call: InboundCall) -> None:
        dialled = parse_dial_string(call.request_uri.user or "", is_meeting=self.policy.meetings.__contains__,
                                    ivr_users=self._ivr_users)
        entry = LegacyCall(call=call, meeting=dialled.meeting, label=call_label(call.call_id),
                           dialled=dialled)
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

    async def _admit_and_bridge(self, entry: LegacyCall) -> None:
        call = entry.call
        bound = log.bind(call=entry.label, meeting=entry.meeting, transport=call.transport)
        offer = call.offer
        # Delayed offer (no SDP in the INVITE): the policy, not an offer, says what media it gets.
        security = media_security(offer) if offer is not None \
            else delayed_offer_security(self.policy, entry.meeting)
        if entry.dialled.to_ivr:
            await self._ivr_call(entry, security, None)
            return
        decision = self.check(entry, entry.meeting, entry.dialled.pin, security)
        if isinstance(decision, Refuse):
            bound.info("call.refused", status=decision.sip_status, rule=decision.rule,
                       media_security=security)
            call.reject(decision.sip_status, decision.reason, warning=decision.warning)
            self._forget(entry, refused=decision.rule)
            return
        if decision.pin_required or decision.lobby:  # answer first: IVR for the PIN, lobby wait
            await self._ivr_call(entry, security, decision)
            return
        if offer is None:
            await self._delayed_offer_call(entry, decision, bound)
            return
        # SRTP is used whenever the offer has usable SDES keys, whatever legacy_media says
        # (never a downgrade); require-srtp also refuses an offer without them (RFC 4568).
        require_srtp = decision.policy.legacy_media == "require-srtp"
        try:
            choice = choose_audio(offer, preferred=audio_preference(decision.policy),
                                  require_srtp=require_srtp, media_address=self._ports.address)
        except OfferRejected as exc:
            rule = decision.rule if require_srtp else decision.policy.rule("audio_codecs")
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
        self._name(entry, decision.policy)
        video = choose_call_video(offer, decision.policy)
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
                video=video_leg_params(video, offer) if video is not None else None,
                passthrough=self.passthrough,
            )
        except (NoFreePort, OSError, ValueError, KeyError) as exc:  # the caller gets a clean 503
            bound.error("call.media_failed", stage="allocate", error=str(exc))
            call.reject(503, "Service Unavailable", warning="no media port available")
            self._forget(entry, refused="media-port")
            return
        entry.session = session
        session.on_ended = lambda why: self._media_ended(entry, why)
        wire_video(session, sip_info=lambda: self._send_picture_fast_update(entry))
        # The meeting page shows whether this caller's media was encrypted before the gateway.
        session.webrtc.publish_params = {"leg": "sip", "enc": legacy_encryption,
                                         "recording": decision.policy.recording}
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
        answer = build_answer(offer, choice, self._media_address, session.local_port,
                              video=video, video_port=session.video_port)
        session.on_dtmf = lambda digit: self._digit(entry, digit, "rfc4733")
        self._allow_reoffers(entry)
        call.accept(str(answer))
        self._join_roster(entry, session, choice.encoding)
        bound.info("call.answered", local_port=session.local_port,
                   participant=entry.participant.id if entry.participant else None)

    async def _delayed_ivr_leg(self, entry: LegacyCall, first: Admit | None, preferred: tuple[str, ...],
                               bound: Any) -> tuple[AudioChoice, LegacyAudioLeg] | None:
        """Delayed offer into the IVR or lobby: offer in the 200 OK (SDES best effort when the
        meeting is not known yet, so a meeting entered later that requires SRTP can still be
        joined), then the leg from the ACK's answer; None when the call ended or failed."""
        legacy_media = first.policy.legacy_media if first is not None else "prefer-srtp"
        neg = DelayedOfferNegotiation(entry.call, ports=self._ports, media_address=self._media_address,
                                      codecs=preferred, legacy_media=legacy_media)
        try:
            our_offer = neg.offer()
        except (NoFreePort, OSError, ValueError) as exc:
            bound.error("call.media_failed", stage="allocate", error=str(exc))
            entry.call.reject(503, "Service Unavailable", warning="no media port available")
            self._forget(entry, refused="media-port")
            return None
        entry.call.accept(our_offer)
        got = await neg.answered()
        if got is not None and entry.ended:
            got[1].close()
            return None
        if got is not None:
            bound.info("call.answer_taken", codec=got[0].encoding, delayed_offer=True,
                       legacy_encryption="sdes-srtp" if got[0].secure else "plain")
        return got

    async def _delayed_offer_call(self, entry: LegacyCall, decision: Admit, bound: Any) -> None:
        """Delayed offer (RFC 3261 13.2.1, see :mod:`gateway.delayed_offer`): our offer in the
        200 OK, the leg built from the ACK's answer, then the meeting joined on it."""
        call, mp = entry.call, decision.policy
        neg = DelayedOfferNegotiation(call, ports=self._ports, media_address=self._media_address,
                                      codecs=audio_preference(mp), legacy_media=mp.legacy_media)
        try:
            our_offer = neg.offer()
        except (NoFreePort, OSError, ValueError) as exc:
            bound.error("call.media_failed", stage="allocate", error=str(exc))
            call.reject(503, "Service Unavailable", warning="no media port available")
            self._forget(entry, refused="media-port")
            return
        bound.info("call.admitted", rule=decision.rule, media_security=decision.media_security,
                   delayed_offer=True, local_port=neg.local_port, notes=list(decision.notes) or None)
        if self.metrics is not None:
            self.metrics.call_admitted("sip", call.transport)
        self._name(entry, mp)
        call.accept(our_offer)
        answered = await neg.answered()
        if answered is None or entry.ended:  # no usable answer: the SIP core sent BYE with a Reason
            if answered is not None:
                answered[1].close()
            return
        choice, legacy = answered
        legacy_encryption = "sdes-srtp" if choice.secure else "plain"
        bound.info("call.answer_taken", codec=choice.encoding, legacy_encryption=legacy_encryption,
                   srtp_suite=choice.srtp_suite)
        self._allow_reoffers(entry)
        session = await self._join_on_leg(
            entry, legacy, codec=choice.encoding, bound=bound,
            publish={"leg": "sip", "enc": legacy_encryption, "recording": mp.recording},
            on_dtmf=lambda digit: self._digit(entry, digit, "rfc4733"))
        if session is None:
            return
        bound.info("call.answered", local_port=session.local_port, delayed_offer=True,
                   participant=entry.participant.id if entry.participant else None)

    # -- policy checks, PINs and the IVR -----------------------------------------------------

    def participants_in(self, meeting: str, *, besides: LegacyCall | None = None) -> int:
        """Who is in ``meeting`` now, for ``max_participants``: the core's publishers (browsers
        and answered legacy calls) or the legacy roster, plus legacy calls still joining."""
        joined = len(self.roster.participants(meeting))
        if self._participant_count is not None:
            joined = max(joined, int(self._participant_count(meeting)))
        joining = sum(1 for e in self._calls.values()
                      if e is not besides and e.meeting == meeting and not e.ended and e.participant is None)
        return joined + joining

    def check(self, entry: LegacyCall, meeting: str, pin: str | None, security: str) -> Admit | Refuse:
        """The policy decision for ``entry`` joining ``meeting`` with ``pin``; counts a wrong PIN
        against the caller's source (lockout after the meeting's ``pin_attempts``)."""
        return self._decide(entry, meeting, pin, source=entry.call.source[0], protocol="sip",
                            transport=entry.call.transport, media_security=security,
                            participants=self.participants_in(meeting, besides=entry))

    def _name(self, entry: LegacyCall, mp: MeetingPolicy) -> None:
        """The name the core and roster show: a pseudonym, or (``anonymous_names: false``) the
        caller's SIP display name when it has one.  Never logged either way."""
        name = None if mp.anonymous_names else shown_name(entry.call.from_display)
        entry.pseudonym = name or self.roster.new_pseudonym(entry.meeting)

    def dtmf(self, call: InboundCall, digit: str, source: str = "sip-info") -> None:
        """A DTMF digit from the SIP dialog (INFO, RFC 6086); RFC 4733 digits arrive through
        the leg (:meth:`_digit`), and both meet in one stream."""
        entry = self._calls.get(call.call_id)
        if entry is not None:
            self._digit(entry, digit, source)

    def _digit(self, entry: LegacyCall, digit: str, source: str) -> None:
        """One DTMF digit from either source: to the IVR collector, then to ``on_dtmf``.

        ``call.dtmf`` logs the source and the call's running count, never the digit (it may
        be a PIN). ``call.dtmf.digit`` (debug level) carries it as a PII field: hashed like an
        address unless ``log.pii: show``, which is for debugging only.
        """
        if entry.ended:
            return
        entry.dtmf_count += 1
        log.info("call.dtmf", call=entry.label, meeting=entry.meeting, by=source,
                 count=entry.dtmf_count)
        log.debug("call.dtmf.digit", call=entry.label, by=source, digit=digit)
        if entry.on_digit is not None:
            entry.on_digit(digit)
        if self.on_dtmf is not None:
            self.on_dtmf(entry.call, digit, source)
        self._relay(entry, digit)  # joined callers only: never IVR/PIN digits

    # -- DTMF toward callers (relay, control API) ---------------------------------------------

    def _send_dtmf(self, entry: LegacyCall, digits: str, duration_ms: int, *, why: str) -> None:
        """RFC 4733 events on the caller's own outbound RTP clock (``bridge.dtmf_sender``) when it
        negotiated telephone-event; else SIP INFO ``application/dtmf-relay`` (RFC 6086), one per
        digit, paced like the events (duration + gap) so each transaction ends before the next;
        :class:`DtmfError` when neither can carry them. Logs the count, never the digits."""
        leg = entry.session.legacy if entry.session is not None else None
        if leg is not None and leg.can_send_dtmf:
            queued = leg.send_dtmf(digits, duration_ms)
            by = "rfc4733"
        elif leg is not None and entry.call.state is CallState.CONFIRMED:
            text, pace = validate_digits(digits), (check_duration(duration_ms) + DEFAULT_GAP_MS) / 1000
            loop = asyncio.get_running_loop()
            for i, digit in enumerate(text):
                loop.call_later(i * pace, self._send_info_digit, entry, dtmf_relay_body(digit, duration_ms))
            queued, by = len(text), "sip-info"
        else:
            raise DtmfError("the caller negotiated no telephone-event (RFC 4733) and its dialog "
                            "cannot carry SIP INFO")
        log.info("call.dtmf_sent", call=entry.label, meeting=entry.meeting, by=by, why=why,
                 count=queued)

    @staticmethod
    def _send_info_digit(entry: LegacyCall, body: bytes) -> None:
        if not entry.ended:
            entry.call.send_info("application/dtmf-relay", body)

    @staticmethod
    def _send_picture_fast_update(entry: LegacyCall) -> bool:
        """The video leg needs an IDR from a room system that negotiated no RTCP feedback:
        SIP INFO ``picture_fast_update`` (RFC 5168). False (nothing sent) before the ACK."""
        if entry.ended:
            return False
        return entry.call.send_info(MEDIA_CONTROL_TYPE, picture_fast_update_body())

    def keyframe_requested(self, call: InboundCall) -> None:
        """SIP INFO ``picture_fast_update`` (RFC 5168): surfaced for the video bridge."""
        entry = self._calls.get(call.call_id)
        if entry is None:
            return
        log.info("call.keyframe_requested", call=entry.label, meeting=entry.meeting)
        if entry.session is not None and entry.session.video is not None:
            entry.session.video.keyframe_from_room("sip_info")  # the core makes an IDR
        if self.on_keyframe_request is not None:
            self.on_keyframe_request(call)

    def _allow_reoffers(self, entry: LegacyCall) -> None:
        """From now on the peer may renegotiate: a re-INVITE/UPDATE offer goes to
        :meth:`_reoffer`; a re-INVITE without SDP gets our current SDP as the offer and the
        ACK's answer re-targets the leg (:class:`gateway.delayed_offer.ReofferWithoutSdp`)."""
        call = entry.call
        call.on_offer = lambda _call, new_offer: self._reoffer(entry, new_offer)
        bodiless = ReofferWithoutSdp(lambda choice, direction: self._answer_to_reoffer(entry, choice, direction))
        call.on_offer_request = bodiless.offer
        call.on_answer = bodiless.answer

    def _answer_to_reoffer(self, entry: LegacyCall, choice: AudioChoice, direction: str) -> str | None:
        """The ACK's answer to our re-offer, applied to the running leg (None) or why not."""
        leg = entry.session.legacy if entry.session is not None else entry.legacy
        if leg is None or entry.ended:
            return "the call has no media leg"
        problem = retarget_leg(leg, choice, direction)
        log.info("call.reoffer_answer_taken" if problem is None else "call.reoffer_answer_refused",
                 call=entry.label, meeting=entry.meeting, codec=choice.encoding, direction=direction,
                 detail=problem)
        return problem

    def _reoffer(self, entry: LegacyCall, offer: SessionDescription) -> str | None:
        """A re-INVITE/UPDATE offer (RFC 3264 8): the answer, with the legacy leg re-targeted,
        re-keyed, held or resumed; None refuses it (488) and the session stays as it was.

        An offer with the same ``o=`` version as the last one changes nothing (RFC 3264 8:
        a session refresh) and gets the previous answer.  The current codec is preferred, SRTP
        is never dropped mid-call, and unchanged SDES keys keep the SRTP contexts.
        """
        call = entry.call
        leg = entry.session.legacy if entry.session is not None else entry.legacy
        bound = log.bind(call=entry.label, meeting=entry.meeting)
        if leg is None or entry.ended or call.answer_sdp is None:
            return None
        previous = call.offer
        if (previous is not None and offer.origin.session_id == previous.origin.session_id
                and offer.origin.session_version == previous.origin.session_version):
            return call.answer_sdp
        preferred = (leg.codec.name,) + tuple(c for c in LEGACY_AUDIO_PREFERENCE if c != leg.codec.name)
        try:
            choice = choose_audio(offer, preferred=preferred, require_srtp=leg.srtp is not None,
                                  media_address=self._ports.address)
            old = SessionDescription.parse(call.answer_sdp.encode())
        except (OfferRejected, SdpParseError) as exc:
            bound.info("call.reoffer_refused", detail=str(exc))
            return None
        crypto, srtp = choice.crypto, leg.srtp
        if crypto is not None and srtp is not None and srtp.suite == crypto.suite \
                and srtp.remote_key == crypto.remote.key:
            # Same peer key: keep our key and the SRTP contexts (nothing changes on the wire).
            choice = dataclasses.replace(choice, crypto=dataclasses.replace(
                crypto, local=dataclasses.replace(crypto.local, key=srtp.local_key)))
        m = offer.media[choice.media_index] if choice.media_index is not None else None
        direction = m.direction if m is not None else "sendrecv"
        problem = retarget_leg(leg, choice, direction)
        if problem is not None:
            bound.info("call.reoffer_refused", detail=problem)
            return None
        sending = leg.sending
        video = reoffer_video(entry.session, offer)
        renegotiate_video(entry.session, video, offer)
        answer = build_answer(offer, choice, self._media_address, leg.local_port,
                              session_id=int(old.origin.session_id),
                              session_version=int(old.origin.session_version) + 1,
                              video=video, video_port=entry.session.video_port if video and entry.session else None)
        bound.info("call.reoffer_answered", codec=choice.encoding, direction=direction,
                   sending=sending, legacy_encryption=leg.encryption)
        return str(answer)

    async def _ivr_call(self, entry: LegacyCall, security: str, first: Admit | None) -> None:
        """Answer, ask for the meeting and/or PIN by voice and DTMF, then join on the same RTP
        leg (a MediaSession takes it over), or hang up with a ``Reason:`` naming the rule."""
        call, offer = entry.call, entry.call.offer
        bound = log.bind(call=entry.label, transport=call.transport)
        preferred = LEGACY_AUDIO_PREFERENCE if first is None else audio_preference(first.policy)
        require_srtp = first is not None and first.policy.legacy_media == "require-srtp"
        if offer is None:  # delayed offer: the leg comes from the ACK's answer to our offer
            got = await self._delayed_ivr_leg(entry, first, preferred, bound)
            if got is None:
                return
            choice, legacy = got
            security = "sdes" if choice.secure else "plain"  # what the call now has
        else:
            try:
                choice = choose_audio(offer, preferred=preferred, require_srtp=require_srtp,
                                      media_address=self._ports.address)
            except OfferRejected as exc:
                bound.info("call.refused", status=exc.status, rule="audio-codec", detail=exc.reason)
                call.reject(exc.status, "Not Acceptable Here", warning=exc.reason)
                self._forget(entry, refused="audio-codec")
                return
            try:
                legacy = allocate_legacy_leg(
                    media_address=self._media_address, port_allocator=self._ports,
                    encoding=choice.encoding, payload_type=choice.payload_type,
                    remote_address=choice.remote_address, remote_port=choice.remote_port,
                    telephone_event_pt=choice.telephone_event_pt, srtp_suite=choice.srtp_suite,
                    srtp_remote_key=choice.srtp_remote_key, srtp_local_key=choice.srtp_local_key)
            except (NoFreePort, OSError, ValueError, KeyError) as exc:
                bound.error("call.media_failed", stage="allocate", error=str(exc))
                call.reject(503, "Service Unavailable", warning="no media port available")
                self._forget(entry, refused="media-port")
                return
            call.accept(str(build_answer(offer, choice, self._media_address, legacy.local_port)))
        entry.legacy = legacy
        await legacy.start()
        io = LegIO(legacy.push_audio, legacy.codec.sample_rate)
        entry.on_digit = io.digit
        legacy.inbound.on_dtmf = lambda digit: self._digit(entry, digit, "rfc4733")
        self._allow_reoffers(entry)
        asks = "meeting" if first is None else ("pin" if first.pin_required else "lobby")
        bound.info("ivr.started", asks=asks, codec=choice.encoding)
        result = await converse(entry, io, lambda meeting, pin: self.check(entry, meeting, pin, security),
                                first=first, codec=choice.encoding, secure=choice.secure)
        if result is None:
            return  # the caller hung up; call_ended closed the leg
        if isinstance(result, IvrHangup):
            bound.info("call.refused", stage="ivr", rule=result.rule)
            if self.metrics is not None:
                self.metrics.call_refused("sip", result.rule)
            await io.play("goodbye")
            if not entry.ended:
                self._end_from_gateway(entry, result.reason, by="ivr")
            return
        entry.meeting = result.meeting
        if result.lobby and not await wait_in_lobby(entry, io, protocol="sip"):
            return  # hung up (or removed) while waiting
        legacy_encryption = "sdes-srtp" if choice.secure else "plain"
        bound.info("call.admitted", meeting=entry.meeting, rule=result.rule, codec=choice.encoding,
                   media_security=security, legacy_encryption=legacy_encryption, entry_by="ivr")
        if self.metrics is not None:
            self.metrics.call_admitted("sip", call.transport)
        await io.play("joining")
        if entry.ended:  # hung up during the prompt; call_ended closed the leg
            return
        self._name(entry, result.policy)
        session = await self._join_on_leg(
            entry, legacy, codec=choice.encoding, bound=bound,
            publish={"leg": "sip", "enc": legacy_encryption, "recording": result.policy.recording},
            on_dtmf=lambda digit: self._digit(entry, digit, "rfc4733"))
        if session is None:
            return
        bound.info("call.answered", meeting=entry.meeting, local_port=session.local_port, entry_by="ivr",
                   participant=entry.participant.id if entry.participant else None)

    def _hang_up(self, entry: LegacyCall, reason: str, *, by: str) -> None:
        """BYE with ``Reason:`` (the API, media, shutdown)."""
        self._end_from_gateway(entry, reason, by=by)

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

    def apply_policy(self, policy: Policy) -> int:
        """Use a reloaded ``policy`` for new calls at once; end the calls still in the IVR (meeting
        chosen) or the lobby it now refuses; under ``on_tighten: end``, also the answered calls it
        no longer admits (``legacy_media``/``signaling`` tightened for their meeting), each with a
        BYE whose ``Reason:`` names the rule.  Returns how many were ended.

        Other calls keep the policy they were admitted under: a reload must not drop people for
        changes (codecs, protocols) that do not make their call less safe than the policy wants.
        """
        from gateway.policy_reload import (
            joining_refused,
            tightened_out,
            tightened_reason,
        )

        def joining(entry: LegacyCall) -> Refuse | None:
            assert entry.legacy is not None  # only calls the IVR or the lobby holds are asked
            return joining_refused(policy, meeting=entry.meeting, protocol="sip",
                                   transport=entry.call.transport, source=entry.call.source[0],
                                   legacy_encryption=entry.legacy.encryption)

        def joined(entry: LegacyCall) -> Refuse | None:
            assert entry.participant is not None  # only answered calls are asked
            return tightened_out(policy, meeting=entry.meeting, protocol="sip",
                                 transport=entry.call.transport,
                                 legacy_encryption=entry.participant.legacy_encryption)

        return self._apply_policy(policy, joining=joining, joined=joined, end=lambda entry, refusal:
                                  self._end_from_gateway(entry, tightened_reason(refusal), by="policy"))

    def _forget(self, entry: LegacyCall, *, refused: str | None = None) -> None:
        if refused is not None and self.metrics is not None:
            self.metrics.call_refused("sip", refused)
        entry.ended = True
        self._calls.pop(entry.call.call_id, None)
