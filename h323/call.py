"""The callee side of one H.225.0 call-signalling connection, without I/O.

One TCP connection to port 1720 carries one call (we announce ``multipleCalls`` FALSE and
``maintainConnection`` FALSE, H.225.0 section 7.6).  :class:`H323Call` takes the bytes of that
connection (and of the call's separate H.245 connection, if any) and the time, and returns
bytes, timers and events, the aioquic way::

    call.receive_data(data, now)   # TPKT -> Q.931 -> H323-UserInformation
    call.handle_timer(now)         # when now >= call.get_timer()
    call.data_to_send()            # bytes for the call-signalling connection
    call.h245_data_to_send()       # bytes for the separate H.245 connection
    call.next_event()              # CallOffered, H245ListenerNeeded, MediaReady, DtmfReceived,
                                   # KeyframeRequested, FlowControl, CallReleased

The procedure (H.323 section 8.1, H.225.0 sections 7.3 and 7.4):

- **Setup** is answered at once with **CallProceeding** (H.225.0 section 7.3.2), then the
  application decides: :meth:`reject` sends **ReleaseComplete** with a ``ReleaseCompleteReason``
  and a Q.931 cause (H.225.0 table 5); :meth:`ring` sends **Alerting**; :meth:`accept` sends
  **Connect**.  Replies carry the call reference with the flag set (Q.931 section 4.3).
- **Fast Start** (H.323 section 8.1.7): the ``fastStart`` proposals of the Setup are grouped by
  codec (:func:`fast_start_offers`); the application picks one (:func:`choose_fast_start`) and
  the chosen pair of OpenLogicalChannel structures goes back, with our RTP/RTCP addresses, in the
  first of Alerting/Connect; without a usable proposal Connect says ``fastConnectRefused``.
  H.264 video proposals are grouped the same way (:func:`fast_start_video_offers`, session 2)
  and, when the application passes one with our video address, answered alongside the audio.
- **H.245** (:mod:`h323.h245_session`): tunnelled in ``h245Control`` (H.323 section 8.2.1) when
  the caller offers ``h245Tunnelling`` (several PDUs per message; a Facility with the ``empty``
  body when nothing else is being sent); otherwise on a separate TCP connection (H.323 section
  8.2.3): the call asks its transport for a listener (:class:`H245ListenerNeeded`) and only
  advertises an address the transport reported as listening (:meth:`h245_listening`), in
  Connect or, if it comes later, in Facility ``startH245``.  When the caller names its own
  listener (``h245Address`` in Setup, or a Facility ``startH245``), the gateway connects out to
  it instead (:class:`H245ConnectNeeded`, H.323 8.2.3: either side may open the connection) and
  only falls back to its own listener if that fails (:meth:`h245_connect_failed`).  Exactly one
  H.245 connection results: the first to be established wins and the listener is closed.
- **StatusInquiry** is answered with **Status** (cause 30, our call state, Q.931 section 5.8.10);
  a Status reporting the null state clears the call (Q.931 section 5.8.11).
- **Release** (H.323 section 8.5): endSessionCommand on H.245 (tunnelled in the
  ReleaseComplete itself), then ReleaseComplete; a caller's endSessionCommand or
  ReleaseComplete ends the call.  :class:`CallReleased` is emitted exactly once.

Hostile or broken input never raises: a bad TPKT header, an unparsable Q.931 message or
H323-UserInformation ends the call with a ReleaseComplete carrying the error's cause hint
(:class:`h323.errors.H323Error`), a log line ``h323.message.invalid``, and :attr:`closed`.
"""

from __future__ import annotations

import enum
import os
import random
from collections import deque
from dataclasses import dataclass
from typing import Any

import structlog

from h323 import h225, h245, q931, tpkt
from h323.errors import (
    CAUSE_INVALID_MESSAGE,
    CAUSE_MANDATORY_IE_MISSING,
    H245Error,
    H323Error,
)
from h323.h225 import Alias, TransportAddress, VendorInfo
from h323.h245_session import (
    AUDIO_CAPABILITY,
    ENCODING_OF,
    H264_PAYLOAD_TYPE,
    VIDEO_SESSION,
    ChannelClosed,
    DtmfReceived,
    FlowControl,
    H245Session,
    KeyframeRequested,
    MediaReady,
    ProcedureFailed,
    SessionEnded,
    VideoChannel,
)
from h323.q931 import Cause, MessageType, Q931Message, RawIE

log = structlog.get_logger("h323.call")

#: Q.931 / Q.850 cause values used here.
CAUSE_UNALLOCATED_NUMBER = 1
CAUSE_NORMAL_CLEARING = 16
CAUSE_SUBSCRIBER_ABSENT = 20
CAUSE_CALL_REJECTED = 21
CAUSE_RESPONSE_TO_STATUS_ENQUIRY = 30
CAUSE_NORMAL_UNSPECIFIED = 31
CAUSE_TEMPORARY_FAILURE = 41
CAUSE_RESOURCE_UNAVAILABLE = 47
CAUSE_BEARER_NOT_IMPLEMENTED = 65
CAUSE_INCOMPATIBLE_STATE = 101
CAUSE_RECOVERY_ON_TIMER = 102

#: H.225.0 table 5: the Q.931 cause that goes with each ReleaseCompleteReason we send.
REASON_CAUSE: dict[str, int] = {
    "noBandwidth": 34, "gatekeeperResources": 47, "unreachableDestination": 3,
    "destinationRejection": 16, "invalidRevision": 88, "noPermission": 111,
    "unreachableGatekeeper": 38, "gatewayResources": 42, "badFormatAddress": 28,
    "adaptiveBusy": 41, "inConf": 17, "undefinedReason": 31, "securityDenied": 31,
    "calledPartyNotRegistered": 20, "callerNotRegistered": 31,
    "neededFeatureNotSupported": 65,
}

#: Seconds the application has, after Setup, to accept or reject (H.225.0 leaves the callee's
#: side to the implementation; T301 on the caller's side is at least 180 s).
ANSWER_TIMEOUT = 60.0
#: Seconds after Connect within which a slow-start call must have its media open.
MEDIA_TIMEOUT = 20.0
#: The first logical channel number we use for our own channels.
FIRST_LOCAL_CHANNEL = 101
#: Q.931 section 4.5.7 call states of the user side (the callee).
CALL_STATE_NULL, CALL_STATE_PRESENT, CALL_STATE_RECEIVED = 0, 6, 7
CALL_STATE_INCOMING_PROCEEDING, CALL_STATE_ACTIVE = 9, 10
IE_CALL_STATE = 0x14

__all__ = [
    "CallOffered",
    "CallReleased",
    "CallState",
    "ChannelClosed",
    "DtmfReceived",
    "FastStartOffer",
    "FlowControl",
    "H245ConnectNeeded",
    "H245ListenerNeeded",
    "H323Call",
    "KeyframeRequested",
    "MediaReady",
    "VideoChannel",
    "choose_fast_start",
    "fast_start_offers",
    "fast_start_video_offers",
]


class CallState(enum.Enum):
    IDLE = "idle"
    PROCEEDING = "proceeding"  # Setup received, CallProceeding sent
    ALERTING = "alerting"
    CONNECTED = "connected"
    RELEASED = "released"


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class FastStartOffer:
    """The caller's Fast Start proposals for one codec (H.323 section 8.1.7.1): the channel it
    would transmit on (``transmit_number``) and the one it would receive on (``receive_number``,
    with its RTP/RTCP addresses ``remote_rtp``/``remote_rtcp``)."""

    codec: str
    transmit_number: int
    receive_number: int
    remote_rtp: tuple[str, int]
    remote_rtcp: tuple[str, int] | None
    frames: int = 20
    #: Video proposals only: the H.264 capability the caller receives and its payload type.
    video: h245.H264Capability | None = None
    payload_type: int | None = None


@dataclass(frozen=True)
class CallOffered:
    """A Setup arrived (H.225.0 section 7.3.1).  ``called_number`` is the Q.931 Called party
    number; ``destination_aliases`` the ``destinationAddress`` aliases; ``source`` the peer's
    TCP address."""

    call_reference: int
    call_identifier: bytes
    called_number: str | None
    destination_aliases: tuple[Alias, ...]
    source_aliases: tuple[Alias, ...]
    calling_number: str | None
    display: str | None
    source: tuple[str, int] | None
    fast_start: tuple[FastStartOffer, ...]
    fast_start_proposed: bool
    tunnelling: bool
    product: str | None = None
    #: The caller's H.264 Fast Start proposals (:func:`fast_start_video_offers`).
    fast_start_video: tuple[FastStartOffer, ...] = ()

    @property
    def dialled_digits(self) -> tuple[str, ...]:
        return tuple(str(a.value) for a in self.destination_aliases if a.kind == "dialledDigits")

    @property
    def h323_ids(self) -> tuple[str, ...]:
        return tuple(str(a.value) for a in self.destination_aliases if a.kind == "h323-ID")


@dataclass(frozen=True)
class H245ListenerNeeded:
    """The call needs a separate H.245 connection (no tunnelling, H.323 section 8.2.3): the
    transport should listen and report the address with :meth:`H323Call.h245_listening`."""


@dataclass(frozen=True)
class H245ConnectNeeded:
    """The caller listens for H.245 at ``host:port`` (Setup or Facility ``h245Address``): the
    transport should connect there, then call :meth:`H323Call.h245_connection_made` (or
    :meth:`H323Call.h245_connect_failed`)."""

    host: str
    port: int


@dataclass(frozen=True)
class CallReleased:
    """The call is over.  ``reason`` is a ReleaseCompleteReason (or "endSessionCommand",
    "connectionLost", ...), ``cause`` the Q.931 cause, ``by`` "remote", "local", "error" or
    "timeout"."""

    reason: str
    cause: int | None
    by: str


Event = (CallOffered | H245ListenerNeeded | H245ConnectNeeded | MediaReady | DtmfReceived | KeyframeRequested
         | FlowControl | ChannelClosed | CallReleased)


# --------------------------------------------------------------------------- Fast Start


def _addr(u: h245.UnicastAddress | None) -> tuple[str, int] | None:
    return (u.host, u.port) if u is not None else None


def fast_start_offers(elements: tuple[bytes, ...] | None) -> tuple[FastStartOffer, ...]:
    """Group the ``fastStart`` proposals of a Setup by audio codec, in the caller's order.

    A proposal with audio forward parameters and no reverse ones is a channel the caller would
    send on; one with ``nullData`` forward and audio reverse parameters (with ``mediaChannel``)
    is one it would receive on (H.323 section 8.1.7.1).  Only codecs with both directions are
    returned; undecodable elements and other media are skipped.
    """
    transmit: dict[str, tuple[int, int]] = {}
    receive: dict[str, tuple[int, tuple[str, int], tuple[str, int] | None]] = {}
    order: list[str] = []
    for element in elements or ():
        try:
            olc = h245.decode_olc(element)
        except H245Error as exc:
            log.info("h323.fast_start.unusable", error=str(exc))
            continue
        fwd, rev = olc.forward, olc.reverse
        if fwd.data_type.kind == "audioData" and rev is None:
            enc = ENCODING_OF.get(fwd.data_type.codec)
            if enc is not None and enc not in transmit:
                frames = fwd.data_type.param if isinstance(fwd.data_type.param, int) else 20
                transmit[enc] = (olc.forward_logical_channel_number, frames)
                order.append(enc)
        elif fwd.data_type.kind == "nullData" and rev is not None and rev.data_type.kind == "audioData":
            enc = ENCODING_OF.get(rev.data_type.codec)
            rtp = _addr(rev.media_channel)
            if enc is not None and rtp is not None and enc not in receive:
                receive[enc] = (olc.forward_logical_channel_number, rtp, _addr(rev.media_control_channel))
                order.append(enc)
    out = []
    for enc in dict.fromkeys(order):
        if enc in transmit and enc in receive:
            (tx, frames), (rx, rtp, rtcp) = transmit[enc], receive[enc]
            out.append(FastStartOffer(enc, tx, rx, rtp, rtcp, frames))
    return tuple(out)


def fast_start_video_offers(elements: tuple[bytes, ...] | None) -> tuple[FastStartOffer, ...]:
    """The caller's H.264 Fast Start proposals (H.323 section 8.1.7.1, session 2), paired like
    :func:`fast_start_offers`: a transmit proposal (H.264 forward, no reverse) and a receive
    proposal (``nullData`` forward, H.264 reverse with its ``mediaChannel``).  ``codec`` is
    "H264", ``video`` the capability of the receive proposal (what the caller takes) and
    ``payload_type`` its ``dynamicRTPPayloadType``.  At most one pair (the first) is returned."""
    transmit: tuple[int, int | None] | None = None
    receive: tuple[int, h245.LogicalChannelParameters] | None = None
    for element in elements or ():
        try:
            olc = h245.decode_olc(element)
        except H245Error:
            continue  # fast_start_offers logged it
        fwd, rev = olc.forward, olc.reverse
        if fwd.data_type.kind == "videoData" and fwd.data_type.codec == "h264" and rev is None:
            transmit = transmit or (olc.forward_logical_channel_number, fwd.payload_type)
        elif fwd.data_type.kind == "nullData" and rev is not None and rev.data_type.kind == "videoData" \
                and rev.data_type.codec == "h264" and rev.media_channel is not None and receive is None:
            receive = (olc.forward_logical_channel_number, rev)
    if transmit is None or receive is None:
        return ()
    number, rev = receive
    try:
        cap = h245.H264Capability.from_asn1(rev.data_type.param)
    except (KeyError, TypeError, ValueError) as exc:
        log.info("h323.fast_start.unusable", error=f"H.264 capability: {exc!r}")
        return ()
    assert rev.media_channel is not None
    return (FastStartOffer("H264", transmit[0], number, _addr(rev.media_channel) or ("", 0),
                           _addr(rev.media_control_channel), 0, cap,
                           rev.payload_type or transmit[1] or H264_PAYLOAD_TYPE),)


def choose_fast_start(offers: tuple[FastStartOffer, ...],
                      preferred: tuple[str, ...] = ("PCMU", "PCMA")) -> FastStartOffer | None:
    """The caller's first proposal whose codec is in ``preferred`` (offerer's order, as the
    SIP side does), or None."""
    for offer in offers:
        if offer.codec in preferred:
            return offer
    return None


# --------------------------------------------------------------------------- the call


class H323Call:
    """One incoming call on one call-signalling connection (see the module docstring)."""

    def __init__(self, *, peer: tuple[str, int] | None = None, role: str = "gateway",
                 vendor: VendorInfo | None = None, answer_timeout: float = ANSWER_TIMEOUT,
                 media_timeout: float = MEDIA_TIMEOUT, rng: random.Random | None = None,
                 label: str | None = None, display: str | None = None) -> None:
        self.peer = peer
        self.role = role
        self.vendor = vendor or VendorInfo(b"roomgate", b"0.1")
        self.answer_timeout = answer_timeout
        self.media_timeout = media_timeout
        self.display = display
        self._rng = rng or random.Random()
        self._log = log.bind(call=label) if label else log
        self._label = label
        self.state = CallState.IDLE
        self._framer = tpkt.TpktFramer()
        self._h245_framer = tpkt.TpktFramer()
        self._out = bytearray()
        self._h245_out = bytearray()
        self._events: deque[Event] = deque()
        self._setup: Q931Message | None = None
        self.setup: h225.Setup | None = None
        self.call_identifier = b""
        self.conference_id = b""
        self.tunnelling = False
        self._tunnel_queue: list[bytes] = []
        self.session: H245Session | None = None
        self.fast_start: FastStartOffer | None = None
        #: The caller's H.264 Fast Start pair we took, and our video RTP address (None: no video).
        self.fast_start_video: FastStartOffer | None = None
        self.local_video: tuple[str, int] | None = None
        self._fast_start_sent = False
        self._fast_start_proposed = False
        self.local_rtp: tuple[str, int] | None = None
        self._setup_at: float | None = None
        self._connected_at: float | None = None
        self.media_ready = False
        # separate H.245 (H.323 section 8.2.3)
        self.h245_address: tuple[str, int] | None = None
        self._h245_advertised = False
        self.h245_connected = False
        #: The caller's H.245 listener (Setup/Facility ``h245Address``) and whether we are
        #: connecting to it now.
        self.peer_h245_address: tuple[str, int] | None = None
        self._h245_connecting = False
        self._h245_listener_asked = False
        self._h245_pending: list[bytes] = []
        #: True once the call-signalling connection should be closed (after flushing).
        self.closed = False
        self._released = False

    # -- aioquic-style surface --------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes from the call-signalling connection."""
        if self.closed:
            return
        try:
            payloads = self._framer.feed(data)
        except H323Error as exc:
            self._invalid(exc, now, "tpkt")
            return
        for payload in payloads:
            if self.closed:
                break
            try:
                self._receive_message(payload, now)
            except H323Error as exc:
                self._invalid(exc, now, "message")
            except Exception as exc:  # noqa: BLE001 - a bug must cost one call, never the gateway
                self._log.exception("h323.call.internal_error", error=repr(exc))
                self._release("undefinedReason", CAUSE_TEMPORARY_FAILURE, by="error", now=now)
        self._after(now)

    def handle_timer(self, now: float) -> None:
        if self.closed:
            return
        if self.state in (CallState.PROCEEDING, CallState.ALERTING) and self._setup_at is not None \
                and now >= self._setup_at + self.answer_timeout:
            self._log.info("h323.call.timeout", waiting_for="answer")
            self._release("gatewayResources", CAUSE_RECOVERY_ON_TIMER, by="timeout", now=now)
            return
        if self.state is CallState.CONNECTED and not self.media_ready and self._connected_at is not None \
                and now >= self._connected_at + self.media_timeout:
            self._log.info("h323.call.timeout", waiting_for="media")
            self._release("undefinedReason", CAUSE_RECOVERY_ON_TIMER, by="timeout", now=now)
            return
        if self.session is not None:
            self.session.handle_timer(now)
        self._after(now)

    def get_timer(self) -> float | None:
        if self.closed:
            return None
        times = []
        if self.state in (CallState.PROCEEDING, CallState.ALERTING) and self._setup_at is not None:
            times.append(self._setup_at + self.answer_timeout)
        if self.state is CallState.CONNECTED and not self.media_ready and self._connected_at is not None:
            times.append(self._connected_at + self.media_timeout)
        if self.session is not None:
            t = self.session.get_timer()
            if t is not None:
                times.append(t)
        return min(times) if times else None

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def h245_data_to_send(self) -> bytes:
        out, self._h245_out = bytes(self._h245_out), bytearray()
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # -- the separate H.245 connection ----------------------------------------------------------

    def h245_listening(self, host: str, port: int, now: float) -> None:
        """The transport listens for this call's H.245 connection at ``host:port``; advertise it
        in Connect, or at once in Facility ``startH245`` if Connect was already sent."""
        if self.closed or self.tunnelling:
            return
        self.h245_address = (host, port)
        if self.state is CallState.CONNECTED and not self._h245_advertised:
            self._h245_advertised = True
            self._send(MessageType.FACILITY, h225.Facility(
                "startH245", self.call_identifier, TransportAddress(host, port), self.conference_id))
        self._after(now)

    def h245_connect_failed(self, now: float) -> None:
        """Our connection to the caller's H.245 address failed: offer our own listener instead
        (advertised in Facility ``startH245`` when Connect has gone)."""
        if not self._h245_connecting:
            return
        self._h245_connecting = False
        self._log.info("h323.h245.connect_failed")
        if not self.closed and not self.h245_connected:
            self._need_listener()
        self._after(now)

    def h245_connection_made(self, now: float) -> bool:
        """The peer opened the H.245 connection; False means refuse it (one per call)."""
        if self.closed or self.tunnelling or self.h245_connected or self.session is None:
            return False
        self.h245_connected = True
        self._h245_connecting = False
        self._log.info("h323.h245.connected")
        if self.state is CallState.CONNECTED:
            self.session.start(now)
        self._after(now)
        return True

    def receive_h245_data(self, data: bytes, now: float) -> None:
        """Bytes from the separate H.245 connection (TPKT, H.245 section 6 / H.323 8.2.3)."""
        if self.closed or self.session is None:
            return
        try:
            payloads = self._h245_framer.feed(data)
        except H323Error as exc:
            self._invalid(exc, now, "h245-tpkt")
            return
        for payload in payloads:
            self._feed_h245(payload, now)
        self._after(now)

    def h245_connection_lost(self, now: float) -> None:
        """H.323 section 8.2.3: without its H.245 channel the call cannot continue."""
        if not self.h245_connected or self.closed:
            return
        self.h245_connected = False
        self._log.info("h323.h245.connection_lost")
        self._release("undefinedReason", CAUSE_TEMPORARY_FAILURE, by="remote", now=now,
                      reason_text="h245ConnectionLost", send_end_session=False)
        self._after(now)

    def connection_lost(self, now: float) -> None:
        """The call-signalling connection closed (without a ReleaseComplete, or after one)."""
        if self._released:
            self.closed = True
            return
        self._released = True
        self.state = CallState.RELEASED
        self.closed = True
        self._log.info("h323.call.released", reason="connectionLost", by="remote")
        self._events.append(CallReleased("connectionLost", None, "remote"))

    # -- commands ---------------------------------------------------------------------------

    def ring(self, now: float, *, local_rtp: tuple[str, int] | None = None,
             fast_start: FastStartOffer | None = None, video: h245.H264Capability | None = None,
             local_video: tuple[str, int] | None = None, fast_start_video: FastStartOffer | None = None) -> None:
        """Send Alerting (H.225.0 section 7.3.3), with the Fast Start answer if given (see
        :meth:`accept` for the video arguments)."""
        if self.state is not CallState.PROCEEDING:
            return
        self._choose_media(local_rtp, fast_start, now, video, local_video, fast_start_video)
        body = h225.Alerting(self.call_identifier, fast_start=self._fast_start_answer(),
                             vendor=self.vendor)
        self.state = CallState.ALERTING
        self._send(MessageType.ALERTING, body)
        self._after(now)

    def accept(self, now: float, *, local_rtp: tuple[str, int],
               fast_start: FastStartOffer | None = None, video: h245.H264Capability | None = None,
               local_video: tuple[str, int] | None = None, fast_start_video: FastStartOffer | None = None) -> None:
        """Send Connect (H.225.0 section 7.3.4): the Fast Start answer (unless Alerting carried
        it) or ``fastConnectRefused``, and H.245: our TCS and MSD tunnelled in the Connect, or
        the listening ``h245Address``.  ``local_rtp`` is where we receive RTP (RTCP one above).
        ``video`` (the H.264 we take) with ``local_video`` (our video RTP address) makes the
        call carry video: our TCS lists H.264 and H.245 opens video channels both ways, or, with
        ``fast_start_video`` (one of :attr:`CallOffered.fast_start_video`), Fast Start answers it."""
        if self.state not in (CallState.PROCEEDING, CallState.ALERTING):
            return
        self._choose_media(local_rtp, fast_start, now, video, local_video, fast_start_video)
        refused = self._fast_start_proposed and self.fast_start is None
        answer = self._fast_start_answer()
        h245_address = None
        if not self.tunnelling and self.h245_address is not None and not self.h245_connected:
            h245_address = TransportAddress(*self.h245_address)
            self._h245_advertised = True
        self._connect_to_peer_h245()
        assert self.session is not None
        self.state = CallState.CONNECTED
        self._connected_at = now
        if self.tunnelling or self.h245_connected:
            self.session.start(now)
            self._pump_session(now)
        body = h225.Connect(self.call_identifier, h245_address=h245_address, fast_start=answer,
                            fast_connect_refused=refused, vendor=self.vendor,
                            conference_id=self.conference_id or b"\0" * 16)
        extra = (q931.Display(self.display[:80]),) if self.display else ()
        self._send(MessageType.CONNECT, body, *extra)
        self._log.info("h323.call.connected", fast_start=self.fast_start is not None,
                       tunnelling=self.tunnelling, h245_address=bool(h245_address))
        self._after(now)

    def request_keyframe(self, now: float) -> bool:
        """Ask the caller for a keyframe: H.245 ``videoFastUpdatePicture`` (H.323 section 8.7.1)
        on the call's H.245 (tunnelled in a Facility, or on the separate connection).  False
        when the call has no H.245 session (not answered yet, or released)."""
        if self.session is None or self._released or self.session.ended or self.state != CallState.CONNECTED:
            return False
        fsv = self.fast_start_video
        self.session.request_fast_update(fsv.transmit_number if fsv is not None and self.session.video_in is None
                                         else None)
        self._after(now)
        return True

    def send_user_input(self, now: float, digit: str, duration_ms: int | None = None) -> str | None:
        """One DTMF key toward the caller as H.245 userInputIndication (H.323 section 10.5; see
        :meth:`H245Session.send_user_input`); None when the call has no live H.245 session."""
        if self.session is None or self._released or self.session.ended or self.state != CallState.CONNECTED:
            return None
        form = self.session.send_user_input(digit, duration_ms)
        self._after(now)
        return form

    def reject(self, now: float, reason: str, *, cause: int | None = None,
               display: str | None = None) -> None:
        """Refuse the call: ReleaseComplete with ``reason`` (a ReleaseCompleteReason) and a Q.931
        cause (default from H.225.0 table 5); ``display`` is shown by endpoints that can."""
        self._release(reason, cause if cause is not None else REASON_CAUSE.get(reason, CAUSE_NORMAL_UNSPECIFIED),
                      by="local", now=now, display=display)
        self._after(now)

    def release(self, now: float, reason: str = "undefinedReason", *,
                cause: int = CAUSE_NORMAL_CLEARING) -> None:
        """End the call (H.323 section 8.5): endSessionCommand, then ReleaseComplete."""
        self._release(reason, cause, by="local", now=now)
        self._after(now)

    # -- input ------------------------------------------------------------------------------

    def _receive_message(self, payload: bytes, now: float) -> None:
        msg = q931.parse(payload)
        if self._setup is not None and (msg.call_reference != self._setup.call_reference or msg.flag):
            # Q.931 section 5.8.3.2: a message for another call reference; not ours to clear.
            self._log.info("h323.message.other_call", message=msg.message_type.name,
                           call_reference=msg.call_reference)
            return
        info = None
        uu = msg.user_user
        if uu is not None:
            info = h225.decode(uu)
        if msg.message_type is MessageType.SETUP:
            if self._setup is not None:
                self._log.info("h323.message.unexpected", message="SETUP", state=self.state.value)
                return
            self._on_setup(msg, info, now)
            return
        if self._setup is None:
            raise q931.Q931Error(f"{msg.message_type.name} before Setup", cause=CAUSE_INCOMPATIBLE_STATE)
        self._log.debug("h323.message.received", message=msg.message_type.name,
                        body=info.message if info else None)
        if info is not None and self.tunnelling and info.h245_control:
            for element in info.h245_control:
                self._feed_h245(element, now)
        if msg.message_type is MessageType.RELEASE_COMPLETE:
            body = info.body if info is not None else None
            reason = body.reason if isinstance(body, h225.ReleaseComplete) and body.reason else "undefinedReason"
            cause = msg.cause.value if msg.cause is not None else None
            self._finish(reason, cause, "remote")
        elif msg.message_type is MessageType.STATUS_INQUIRY:
            self._send(MessageType.STATUS, h225.Status(self.call_identifier),
                       Cause(CAUSE_RESPONSE_TO_STATUS_ENQUIRY), RawIE(IE_CALL_STATE, bytes([self._call_state()])))
        elif msg.message_type is MessageType.STATUS:
            state = next((ie for ie in msg.elements if isinstance(ie, RawIE) and ie.identifier == IE_CALL_STATE),
                         None)
            if state is not None and state.data and state.data[0] & 0x3F == CALL_STATE_NULL:
                self._release("undefinedReason", CAUSE_INCOMPATIBLE_STATE, by="remote", now=now,
                              send_end_session=False, reason_text="statusNull")
        elif msg.message_type is MessageType.FACILITY and info is not None \
                and isinstance(info.body, h225.Facility) and info.body.reason == "startH245":
            address = info.body.h245_address
            if self.tunnelling or self.h245_connected or address is None or not self._usable_h245_address(address):
                self._log.info("h323.facility.start_h245_ignored", tunnelling=self.tunnelling,
                               connected=self.h245_connected)
            else:  # the caller's listener: connect out (H.323 8.2.3), whatever we offered
                self.peer_h245_address = (address.host, address.port)
                if self.state is CallState.CONNECTED:
                    self._connect_to_peer_h245()

    def _on_setup(self, msg: Q931Message, info: h225.UserInformation | None, now: float) -> None:
        if info is None:
            raise q931.Q931Error("Setup without H323-UserInformation", cause=CAUSE_MANDATORY_IE_MISSING)
        body = info.body
        if not isinstance(body, h225.Setup):
            raise q931.Q931Error(f"Setup carrying a {info.message} body", cause=CAUSE_INVALID_MESSAGE)
        self._setup = msg
        self.setup = body
        self._setup_at = now
        self.call_identifier = body.call_identifier if len(body.call_identifier) == 16 else os.urandom(16)
        self.conference_id = body.conference_id if len(body.conference_id) == 16 else os.urandom(16)
        self.tunnelling = info.h245_tunnelling
        self._fast_start_proposed = body.fast_start is not None
        offers = fast_start_offers(body.fast_start)
        self.session = H245Session(rng=self._rng, log_context={"call": self._label} if self._label else None)
        self.state = CallState.PROCEEDING
        called = msg.called_party_number
        calling = msg.calling_party_number
        product = None
        if body.vendor is not None and body.vendor.product_id:
            product = body.vendor.product_id.rstrip(b"\0").decode("latin-1")[:64]
        self._log.info("h323.setup.received", fast_start=len(offers), fast_start_proposed=self._fast_start_proposed,
                       tunnelling=self.tunnelling, product=product)
        # H.225.0 section 7.3.2: CallProceeding at once, so the caller's T303 stops.
        self._send(MessageType.CALL_PROCEEDING, h225.CallProceeding(self.call_identifier, vendor=self.vendor))
        if self.tunnelling and info.h245_control:
            for element in info.h245_control:
                self._feed_h245(element, now)
        if not self.tunnelling and self._usable_h245_address(body.h245_address):
            # The caller listens for H.245: we connect there once we answer (accept).
            assert body.h245_address is not None
            self.peer_h245_address = (body.h245_address.host, body.h245_address.port)
        elif not self.tunnelling:
            self._need_listener()
        self._events.append(CallOffered(
            call_reference=msg.call_reference, call_identifier=self.call_identifier,
            called_number=called.digits if called is not None else None,
            destination_aliases=body.destination_address, source_aliases=body.source_address,
            calling_number=calling.digits if calling is not None else None,
            display=msg.display.text if msg.display is not None else None, source=self.peer,
            fast_start=offers, fast_start_proposed=self._fast_start_proposed,
            tunnelling=self.tunnelling, product=product,
            fast_start_video=fast_start_video_offers(body.fast_start)))

    def _usable_h245_address(self, address: TransportAddress | None) -> bool:
        """Whether we may connect to a caller-named H.245 address: only on the host the call came
        from, so a Setup cannot make the gateway open connections to third parties."""
        if address is None:
            return False
        if self.peer is not None and address.host != self.peer[0]:
            self._log.warning("h323.h245.address_refused", reason="not the caller's host")
            return False
        return True

    def _need_listener(self) -> None:
        if not self._h245_listener_asked:
            self._h245_listener_asked = True
            self._events.append(H245ListenerNeeded())

    def _connect_to_peer_h245(self) -> None:
        """Connect out to the caller's H.245 listener, once, unless H.245 runs already."""
        if self.tunnelling or self.h245_connected or self._h245_connecting or self.peer_h245_address is None:
            return
        self._h245_connecting = True
        self._log.info("h323.h245.connecting")
        self._events.append(H245ConnectNeeded(*self.peer_h245_address))

    def _feed_h245(self, data: bytes, now: float) -> None:
        assert self.session is not None
        try:
            self.session.receive_pdu(data, now)
        except H245Error as exc:
            # H.245 section 8.13: an undecodable PDU is dropped; the call goes on.
            self._log.warning("h323.h245.invalid", error=str(exc))

    def _invalid(self, exc: H323Error, now: float, what: str) -> None:
        self._log.warning("h323.message.invalid", layer=what, error=str(exc)[:200], cause=exc.cause)
        if self._setup is not None and not self._released:
            self._release("undefinedReason", exc.cause, by="error", now=now, send_end_session=False,
                          reason_text=f"invalid-{what}")
        self.closed = True
        self._after(now)

    # -- output -----------------------------------------------------------------------------

    def _choose_media(self, local_rtp: tuple[str, int] | None, fast_start: FastStartOffer | None,
                      now: float, video: h245.H264Capability | None = None,
                      local_video: tuple[str, int] | None = None,
                      fast_start_video: FastStartOffer | None = None) -> None:
        assert self.session is not None
        if video is not None and local_video is not None and self.local_video is None and self.local_rtp is None:
            self.local_video = local_video
        if fast_start is not None and self.fast_start is None and (local_rtp or self.local_rtp):
            self.fast_start = fast_start
            self.session.open_channels = False
            self.media_ready = True
            fsv = fast_start_video if self.local_video is not None else None
            self.fast_start_video = fsv
            channel = None
            if fsv is not None:
                assert fsv.video is not None and fsv.payload_type is not None
                channel = VideoChannel(fsv.remote_rtp, fsv.remote_rtcp, FIRST_LOCAL_CHANNEL + 1,
                                       fsv.payload_type, fsv.video)
            self._events.append(MediaReady(fast_start.codec, fast_start.remote_rtp, fast_start.remote_rtcp,
                                           FIRST_LOCAL_CHANNEL, via="fast-start", video=channel))
        if local_rtp is not None and self.local_rtp is None:
            self.local_rtp = local_rtp
            self.session.set_local_media(local_rtp, now, video=video if self.local_video else None,
                                         local_video=self.local_video)

    def _fast_start_answer(self) -> tuple[bytes, ...] | None:
        """H.323 section 8.1.7.1: the accepted proposals, filled in with our addresses."""
        choice = self.fast_start
        if choice is None or self._fast_start_sent or self.local_rtp is None:
            return None
        self._fast_start_sent = True
        host, port = self.local_rtp
        rtp, rtcp = h245.UnicastAddress(host, port), h245.UnicastAddress(host, port + 1)
        media = h245.MediaType("audioData", AUDIO_CAPABILITY[choice.codec], choice.frames)
        ours = h245.OpenLogicalChannel(FIRST_LOCAL_CHANNEL, h245.LogicalChannelParameters(h245.MediaType("nullData"), 0),
                                       h245.LogicalChannelParameters(media, 1, None, rtcp))
        theirs = h245.OpenLogicalChannel(choice.transmit_number,
                                         h245.LogicalChannelParameters(media, 1, rtp, rtcp))
        answer = [h245.encode_olc(ours), h245.encode_olc(theirs)]
        video = self.fast_start_video
        if video is not None and video.video is not None and self.local_video is not None:
            vhost, vport = self.local_video
            vrtp, vrtcp = h245.UnicastAddress(vhost, vport), h245.UnicastAddress(vhost, vport + 1)
            vtype = video.video.media_type()
            answer.append(h245.encode_olc(h245.OpenLogicalChannel(
                FIRST_LOCAL_CHANNEL + 1, h245.LogicalChannelParameters(h245.MediaType("nullData"), 0),
                h245.LogicalChannelParameters(vtype, VIDEO_SESSION, None, vrtcp, None, video.payload_type))))
            answer.append(h245.encode_olc(h245.OpenLogicalChannel(
                video.transmit_number,
                h245.LogicalChannelParameters(vtype, VIDEO_SESSION, vrtp, vrtcp, None, video.payload_type))))
        return tuple(answer)

    def _send(self, mtype: MessageType, body: Any, *elements: Any, tunnel: bool = True) -> None:
        assert self._setup is not None
        control: tuple[bytes, ...] = ()
        if tunnel and self.tunnelling and self._tunnel_queue:
            control, self._tunnel_queue = tuple(self._tunnel_queue), []
        info = h225.UserInformation(body, h245_tunnelling=self.tunnelling, h245_control=control)
        msg = self._setup.reply(mtype, *elements).with_user_user(info.encode(role=self.role))
        self._out += tpkt.encode(msg.encode())
        self._log.debug("h323.message.sent", message=mtype.name, h245=len(control))

    def _pump_session(self, now: float) -> None:
        """Move the H.245 session's PDUs to their carrier and its events to ours."""
        if self.session is None:
            return
        pdus = self.session.pdus_to_send()
        if pdus:
            if self.tunnelling:
                self._tunnel_queue.extend(pdus)
            else:
                self._h245_pending.extend(pdus)
        if self.h245_connected and self._h245_pending:
            for pdu in self._h245_pending:
                self._h245_out += tpkt.encode(pdu)
            self._h245_pending = []
        while (ev := self.session.next_event()) is not None:
            if isinstance(ev, MediaReady):
                if not self.media_ready:
                    self.media_ready = True
                    self._events.append(ev)
            elif isinstance(ev, DtmfReceived | KeyframeRequested | FlowControl | ChannelClosed):
                self._events.append(ev)
            elif isinstance(ev, SessionEnded):
                self._log.info("h323.h245.end_session_received", reason=ev.reason)
                self._release("undefinedReason", CAUSE_NORMAL_CLEARING, by="remote", now=now,
                              reason_text="endSessionCommand")
            elif isinstance(ev, ProcedureFailed) and not self.media_ready and self.fast_start is None \
                    and not self._released and ev.procedure == "olc":
                self._release("neededFeatureNotSupported", CAUSE_BEARER_NOT_IMPLEMENTED, by="error", now=now,
                              reason_text=f"h245-{ev.procedure}")

    def _after(self, now: float) -> None:
        """Carry pending H.245 PDUs: in a Facility with the ``empty`` body when tunnelling."""
        self._pump_session(now)
        if self.tunnelling and self._tunnel_queue and not self._released and self._setup is not None:
            self._send(MessageType.FACILITY, h225.Empty())

    def _call_state(self) -> int:
        return {CallState.IDLE: CALL_STATE_NULL, CallState.PROCEEDING: CALL_STATE_INCOMING_PROCEEDING,
                CallState.ALERTING: CALL_STATE_RECEIVED, CallState.CONNECTED: CALL_STATE_ACTIVE,
                CallState.RELEASED: CALL_STATE_NULL}[self.state]

    def _release(self, reason: str, cause: int | None, *, by: str, now: float, display: str | None = None,
                 send_end_session: bool = True, reason_text: str | None = None) -> None:
        if self._released:
            return
        if self._setup is not None:
            if send_end_session and self.session is not None and self.session.started:
                self.session.end_session()
            self._pump_session(now)
            elements: list[Any] = []
            if cause is not None:
                elements.append(Cause(cause))
            if display:
                elements.append(q931.Display(_printable(display)[:80]))
            self._send(MessageType.RELEASE_COMPLETE,
                       h225.ReleaseComplete(reason, self.call_identifier or None), *elements)
        self._finish(reason_text or reason, cause, by)

    def _finish(self, reason: str, cause: int | None, by: str) -> None:
        if self._released:
            return
        self._released = True
        self.state = CallState.RELEASED
        self.closed = True
        self._log.info("h323.call.released", reason=reason, cause=cause, by=by)
        self._events.append(CallReleased(reason, cause, by))


def _printable(text: str) -> str:
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)
