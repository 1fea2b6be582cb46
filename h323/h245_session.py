"""H.245 procedures for one call, without I/O (H.245 section 8, as H.323 section 8.2 uses them).

:class:`H245Session` takes decoded-or-not H.245 PDUs and the time, and returns PDUs to send and
events, the aioquic way: :meth:`receive_pdu`, :meth:`handle_timer`, :meth:`pdus_to_send`,
:meth:`next_event`, :meth:`get_timer`.  It does not know how the PDUs travel: the call core
(:mod:`h323.call`) tunnels them in ``h245Control`` (H.323 section 8.2.1) or writes them in TPKT
packets on the separate H.245 connection (H.323 section 8.2.3).

Procedures implemented (the gateway is always the answering side of the call, but H.245 is
symmetric, so each procedure runs in both directions):

- master/slave determination (H.245 section 8.2 and C.2): terminal type 60 (a gateway, H.323
  table 1), a random 24-bit ``statusDeterminationNumber``, the modulo-2**24 comparison, up to
  N100 = 3 retries on an indeterminate result, timer T106;
- capability exchange (H.245 section 8.3 and C.3): our ``TerminalCapabilitySet`` (G.711 A/u-law,
  G.722, DTMF user input), timer T101; the peer's TCS is acknowledged;
- unidirectional logical channels (H.245 section 8.4 and C.5): the peer's audio OLC is
  acknowledged with our RTP/RTCP addresses (H.225.0 section 6.2.8, ``mediaChannel``); we open our
  own audio channel toward the peer with the same codec and learn its RTP address from the ack;
  timer T103; CLC is acknowledged; other OLCs are rejected (``dataTypeNotSupported``);
- H.264 video (H.241 generic capability, session 2) when the session is given ``video``: our TCS
  lists it, the peer's H.264 OLC is acknowledged with our video RTP/RTCP addresses, and when the
  peer's TCS lists H.264 we open our own H.264 channel toward it.  :class:`MediaReady` waits until
  that channel is settled (acked: ``MediaReady.video``; rejected or T103: audio only), so the
  application builds the call's media once.  The peer's CLC of its video channel becomes
  :class:`ChannelClosed`; ending the session closes our video channel first (H.323 section 8.5);
- roundTripDelay (H.245 section 8.9) is answered; endSessionCommand (H.245 section 8.2 /
  H.323 section 8.5) ends the session; userInputIndication (H.323 section 10.5) becomes
  :class:`DtmfReceived`; ``videoFastUpdatePicture`` (H.323 section 8.7) becomes
  :class:`KeyframeRequested` and ``flowControlCommand`` (H.245 section 8.11) :class:`FlowControl`
  -- both commands, so nothing answers them.

Events: :class:`MediaReady` (both directions of audio are open: codec, the peer's RTP address,
our channel number; ``video`` when our H.264 channel is open too), :class:`ChannelClosed`,
:class:`DtmfReceived`, :class:`KeyframeRequested`, :class:`FlowControl`,
:class:`SessionEnded` (the peer sent endSessionCommand), :class:`ProcedureFailed` (a timer ran
out or the peer rejected us).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Any

import structlog

from h323 import h245
from h323.errors import H245Error

log = structlog.get_logger("h323.h245")

#: H.323 table 1: the terminal type of a gateway (used in master/slave determination).
TERMINAL_TYPE_GATEWAY = 60
#: H.245 annex A / C: retries of an indeterminate master/slave determination.
N100 = 3
#: Timer values in seconds (H.245 section C.2-C.5 leave them to the implementation; these are
#: what common endpoints use).
T101_CAPABILITY = 10.0
T103_LOGICAL_CHANNEL = 10.0
T106_MASTER_SLAVE = 10.0
#: How long we wait for the peer to open its audio channel first (so both directions use the
#: codec the peer chose) before opening ours from its capabilities.
PEER_OLC_GRACE = 0.5

#: H.245 capability names of the audio codecs the bridge carries, by the bridge's encoding name.
AUDIO_CAPABILITY = {"PCMU": "g711Ulaw64k", "PCMA": "g711Alaw64k", "G722": "g722-64k"}
ENCODING_OF = {v: k for k, v in AUDIO_CAPABILITY.items()}
#: The order in which we pick a codec from the peer's capabilities.
PREFERENCE = ("PCMU", "PCMA", "G722")
#: H.225.0 section 6.2.8: RTP session 1 carries the main audio, session 2 the main video.
AUDIO_SESSION, VIDEO_SESSION = 1, 2
#: The dynamic RTP payload type we announce for H.264 when the peer has not named one.
H264_PAYLOAD_TYPE = 96
MODULO = 1 << 24

__all__ = [
    "AUDIO_CAPABILITY",
    "ChannelClosed",
    "DtmfReceived",
    "FlowControl",
    "H245Session",
    "KeyframeRequested",
    "MediaReady",
    "ProcedureFailed",
    "SessionEnded",
    "VideoChannel",
    "master_slave_decision",
]


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class VideoChannel:
    """Our H.264 channel toward the peer is open (H.245 section 8.4, session 2): we send H.264
    with ``payload_type`` to ``remote_rtp`` on ``local_channel``; ``capability`` is what the peer
    said it receives (its ``maxBitRate`` caps what we send)."""

    remote_rtp: tuple[str, int]
    remote_rtcp: tuple[str, int] | None
    local_channel: int
    payload_type: int
    capability: h245.H264Capability


@dataclass(frozen=True)
class MediaReady:
    """Both directions of audio are open (H.245 section 8.4): we send ``codec`` to
    ``remote_rtp`` and receive on the addresses we gave; ``local_channel`` is our channel.
    ``video``: our H.264 channel, when the call carries video."""

    codec: str
    remote_rtp: tuple[str, int]
    remote_rtcp: tuple[str, int] | None
    local_channel: int
    via: str = "h245"
    video: VideoChannel | None = None


@dataclass(frozen=True)
class ChannelClosed:
    """The peer closed its logical channel ``channel`` (CloseLogicalChannel, H.245 8.4.1.3);
    ``media`` is "audio" or "video"."""

    channel: int
    media: str


@dataclass(frozen=True)
class DtmfReceived:
    """A userInputIndication (H.323 section 10.5): one DTMF character, duration in ms if known."""

    digit: str
    duration: int | None = None


@dataclass(frozen=True)
class KeyframeRequested:
    """The peer sent ``videoFastUpdatePicture`` for ``channel`` (H.323 section 8.7): it lost the
    picture of what we send it."""

    channel: int


@dataclass(frozen=True)
class FlowControl:
    """The peer sent ``flowControlCommand`` (H.245 section 8.11): send at most ``maximum_bit_rate``
    x 100 bit/s (None: no restriction) on ``scope``/``target`` (see :class:`h245.FlowControlCommand`)."""

    scope: str
    target: int | None
    maximum_bit_rate: int | None


@dataclass(frozen=True)
class SessionEnded:
    """The peer sent endSessionCommand (H.245 section 8.2; H.323 section 8.5 step 3)."""

    reason: str


@dataclass(frozen=True)
class ProcedureFailed:
    """A procedure could not complete: ``procedure`` is "msd", "tcs" or "olc"."""

    procedure: str
    reason: str


Event = (MediaReady | ChannelClosed | DtmfReceived | KeyframeRequested | FlowControl | SessionEnded
         | ProcedureFailed)


def master_slave_decision(local_type: int, local_number: int, remote_type: int,
                          remote_number: int) -> str | None:
    """H.245 section C.2.1: "master", "slave" (for the local side) or None (indeterminate).

    The larger terminal type is master; on equal types the status determination numbers decide:
    ``(remote - local) mod 2**24`` below 2**23 makes the local side master, 0 and 2**23 are
    indeterminate.
    """
    if local_type != remote_type:
        return "master" if local_type > remote_type else "slave"
    diff = (remote_number - local_number) % MODULO
    if diff in (0, MODULO // 2):
        return None
    return "master" if diff < MODULO // 2 else "slave"


@dataclass
class _Channel:
    number: int
    codec: str
    remote_rtp: tuple[str, int] | None = None
    remote_rtcp: tuple[str, int] | None = None
    acked: bool = False
    payload_type: int | None = None


class H245Session:
    """The H.245 procedures of one call (see the module docstring).

    ``local_rtp`` is where we receive RTP (RTCP is the port above, RFC 3550 section 11); it may
    be set later with :meth:`set_local_media` (incoming OLCs wait for it).  With
    ``open_channels=False`` (Fast Start already carries the media, H.323 section 8.1.7) the
    session exchanges capabilities and master/slave status only, and still acks a peer's OLC.
    ``video`` (H.264, what we receive; None: audio only) and ``local_video`` (our video RTP
    address) may also come later, with :meth:`set_local_media`, but before :meth:`start`.
    """

    def __init__(self, *, local_rtp: tuple[str, int] | None = None, open_channels: bool = True,
                 terminal_type: int = TERMINAL_TYPE_GATEWAY, codecs: tuple[str, ...] = PREFERENCE,
                 rng: random.Random | None = None, log_context: dict[str, Any] | None = None,
                 video: h245.H264Capability | None = None,
                 local_video: tuple[str, int] | None = None) -> None:
        self._rng = rng or random.Random()
        self._log = log.bind(**(log_context or {}))
        self.local_rtp = local_rtp
        self.open_channels = open_channels
        self.terminal_type = terminal_type
        self.codecs = tuple(c for c in codecs if c in AUDIO_CAPABILITY)
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()
        self.started = False
        self.ended = False
        # master/slave determination
        self._sdn = self._rng.randrange(MODULO)
        self._msd_retries = 0
        self._msd_sent_at: float | None = None
        self.msd_status: str | None = None  # "master" | "slave" once determined
        # capability exchange
        self._tcs_seq = 0
        self._tcs_sent_at: float | None = None
        self.local_tcs_acked = False
        self.remote_audio: tuple[str, ...] | None = None  # H.245 capability names, peer's order
        #: The peer's user input capabilities (``dtmf``, ``basicString``, ...) from its TCS.
        self.remote_user_input: tuple[str, ...] | None = None
        # logical channels
        self._next_channel = 101
        self.incoming: dict[int, _Channel] = {}
        self._video_params: dict[int, h245.LogicalChannelParameters] = {}
        self._pending_incoming: list[tuple[int, str, tuple[str, int] | None]] = []
        self.outgoing: _Channel | None = None
        self._outgoing_sent_at: float | None = None
        self._grace_until: float | None = None
        self.media_ready = False
        self._audio_ready: MediaReady | None = None
        # video (session 2)
        self.video = video
        self.local_video = local_video
        #: The peer's H.264 receive capability from its TCS (None: it listed none).
        self.remote_h264: h245.H264Capability | None = None
        self.video_in: _Channel | None = None
        self.video_out: _Channel | None = None
        self._video_out_sent_at: float | None = None
        self._video_out_failed = False
        self._video_grace_until: float | None = None

    # -- commands ---------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Send our TCS and MSD request (H.245 sections 8.2, 8.3); idempotent."""
        if self.started or self.ended:
            return
        self.started = True
        self._send_tcs(now)
        self._send_msd(now)

    def set_local_media(self, local_rtp: tuple[str, int], now: float, *,
                        video: h245.H264Capability | None = None,
                        local_video: tuple[str, int] | None = None) -> None:
        """Our RTP address (and, for a call with video, our H.264 capability and video RTP
        address) is known: ack the OLCs that were waiting for it."""
        self.local_rtp = local_rtp
        if video is not None and local_video is not None:
            self.video, self.local_video = video, local_video
        pending, self._pending_incoming = self._pending_incoming, []
        for number, codec, rtcp in pending:
            if codec == "H264":
                self._on_video_olc(number, None, now)
            else:
                self._ack_incoming(number, codec, rtcp, now)
        self._maybe_open_outgoing(now)

    def end_session(self) -> None:
        """Send endSessionCommand disconnect (H.323 section 8.5 step 3) once."""
        if self.ended:
            return
        self.ended = True
        if self.video_out is not None and self.video_out.acked:
            # H.323 section 8.5 step 1: close the video channels before ending the session.
            self._emit(h245.CloseLogicalChannel(self.video_out.number))
        self._emit(h245.EndSessionCommand("disconnect"))

    def request_fast_update(self, channel: int | None = None) -> int:
        """Send ``miscellaneousCommand`` ``videoFastUpdatePicture`` (H.245 annex A, H.323 section
        8.7.1; the keyframe request) for ``channel``: by default the peer's video channel toward
        us, else the lowest channel it opened toward us, or 1 when it opened none (the command
        names the channel the peer transmits on).  Returns the channel number."""
        if channel is not None:
            number = channel
        elif self.video_in is not None:
            number = self.video_in.number
        else:
            number = min(self.incoming) if self.incoming else 1
        if not self.ended:
            self._emit(h245.VideoFastUpdatePicture(number))
        return number

    def send_user_input(self, digit: str, duration_ms: int | None = None) -> str | None:
        """Send one DTMF key as userInputIndication (H.323 section 10.5): ``signal`` (with its
        duration) when the peer's TCS lists the ``dtmf`` user input capability, else
        ``alphanumeric`` (the baseline every H.245 endpoint takes). Returns the form used, or
        None when the session is over. ``digit`` must be one of ``0-9*#A-D``."""
        key = digit.upper()
        if len(key) != 1 or key not in "0123456789*#ABCD":
            raise ValueError(f"not a DTMF key: {digit!r}")
        if self.ended:
            return None
        if "dtmf" in (self.remote_user_input or ()):
            self._emit(h245.UserInputIndication(signal=key, duration=duration_ms))
            return "signal"
        self._emit(h245.UserInputIndication(alphanumeric=key))
        return "alphanumeric"

    def pdus_to_send(self) -> list[bytes]:
        """Encoded PDUs, in order, to carry (tunnelled or in TPKT)."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should next run (monotonic seconds), or None."""
        times = []
        if self._tcs_sent_at is not None and not self.local_tcs_acked:
            times.append(self._tcs_sent_at + T101_CAPABILITY)
        if self._msd_sent_at is not None and self.msd_status is None:
            times.append(self._msd_sent_at + T106_MASTER_SLAVE)
        if self._outgoing_sent_at is not None and self.outgoing is not None and not self.outgoing.acked:
            times.append(self._outgoing_sent_at + T103_LOGICAL_CHANNEL)
        if self._grace_until is not None and self.outgoing is None:
            times.append(self._grace_until)
        if self._video_out_sent_at is not None:
            times.append(self._video_out_sent_at + T103_LOGICAL_CHANNEL)
        if self._video_grace_until is not None and self.video_out is None:
            times.append(self._video_grace_until)
        return min(times) if times and not self.ended else None

    def handle_timer(self, now: float) -> None:
        if self.ended:
            return
        if self._tcs_sent_at is not None and not self.local_tcs_acked \
                and now >= self._tcs_sent_at + T101_CAPABILITY:
            self._tcs_sent_at = None
            self._fail("tcs", "no TerminalCapabilitySetAck before T101")
        if self._msd_sent_at is not None and self.msd_status is None \
                and now >= self._msd_sent_at + T106_MASTER_SLAVE:
            self._msd_sent_at = None
            self._emit(h245.H245Message("indication", "masterSlaveDeterminationRelease", {}))
            self._fail("msd", "no MasterSlaveDeterminationAck before T106")
        if self._outgoing_sent_at is not None and self.outgoing is not None and not self.outgoing.acked \
                and now >= self._outgoing_sent_at + T103_LOGICAL_CHANNEL:
            self._outgoing_sent_at = None
            self._fail("olc", "no OpenLogicalChannelAck before T103")
        if self._grace_until is not None and now >= self._grace_until:
            self._grace_until = None
            self._maybe_open_outgoing(now, grace_over=True)
        if self._video_out_sent_at is not None and now >= self._video_out_sent_at + T103_LOGICAL_CHANNEL:
            self._video_failed("no OpenLogicalChannelAck before T103")
        if self._video_grace_until is not None and now >= self._video_grace_until:
            self._video_grace_until = None
            self._maybe_open_video(now, grace_over=True)

    # -- input ------------------------------------------------------------------------------

    def receive_pdu(self, data: bytes, now: float) -> None:
        """One ``h245Control`` element or TPKT payload (possibly several PDUs).  Raises
        :class:`H245Error` for undecodable input; the messages before the bad one are handled."""
        for msg in h245.decode_all(data):
            self.receive_message(msg, now)

    def receive_message(self, msg: h245.H245Message, now: float) -> None:
        try:
            typed = msg.typed()
        except H245Error as exc:
            self._log.warning("h323.h245.unusable", message=msg.name, error=str(exc))
            return
        self._log.debug("h323.h245.received", kind=msg.kind, message=msg.name)
        if isinstance(typed, h245.TerminalCapabilitySet):
            self._on_tcs(typed, now)
        elif isinstance(typed, h245.TerminalCapabilitySetAck):
            if typed.sequence_number == self._tcs_seq:
                self.local_tcs_acked = True
                self._maybe_open_outgoing(now)
        elif isinstance(typed, h245.MasterSlaveDetermination):
            self._on_msd(typed, now)
        elif isinstance(typed, h245.MasterSlaveDeterminationAck):
            if self.msd_status is None:
                self.msd_status = typed.decision
                self._maybe_open_outgoing(now)
        elif isinstance(typed, h245.OpenLogicalChannel):
            self._on_olc(typed, now)
        elif isinstance(typed, h245.OpenLogicalChannelAck):
            self._on_olc_ack(typed)
        elif isinstance(typed, h245.EndSessionCommand):
            first = not self.ended
            self.end_session()
            if first:
                self._events.append(SessionEnded(typed.reason))
        elif isinstance(typed, h245.UserInputIndication):
            text = typed.signal if typed.signal is not None else typed.alphanumeric
            for ch in text or "":
                if ch in "0123456789*#ABCDabcd!":
                    self._events.append(DtmfReceived(ch.upper(), typed.duration))
        elif isinstance(typed, h245.VideoFastUpdatePicture):
            self._events.append(KeyframeRequested(typed.logical_channel_number))
        elif isinstance(typed, h245.FlowControlCommand):
            self._events.append(FlowControl(typed.scope, typed.target, typed.maximum_bit_rate))
        elif isinstance(typed, h245.CloseLogicalChannel):
            self._on_clc(typed)
        elif isinstance(typed, h245.H245Message):
            self._on_other(typed, now)

    # -- procedures -------------------------------------------------------------------------

    def _on_tcs(self, tcs: h245.TerminalCapabilitySet, now: float) -> None:
        """H.245 section C.3.2 (incoming CESE): acknowledge; remember the audio capabilities."""
        self.remote_audio = tuple(tcs.audio)
        self.remote_user_input = tuple(tcs.user_input)
        self.remote_h264 = tcs.h264
        self._emit(h245.TerminalCapabilitySetAck(tcs.sequence_number))
        self._maybe_open_outgoing(now)

    def _on_msd(self, msd: h245.MasterSlaveDetermination, now: float) -> None:
        """H.245 section C.2.2 (incoming MSDSE): decide and ack with the peer's status."""
        decision = master_slave_decision(self.terminal_type, self._sdn, msd.terminal_type,
                                         msd.status_determination_number)
        if decision is None:
            self._msd_retries += 1
            if self._msd_retries >= N100:
                self._emit(h245.H245Message("response", "masterSlaveDeterminationReject",
                                            {"cause": ("identicalNumbers", 0)}))
                self._fail("msd", "identical status determination numbers N100 times")
                return
            self._sdn = self._rng.randrange(MODULO)
            self._send_msd(now)
            return
        self.msd_status = decision
        self._emit(h245.MasterSlaveDeterminationAck("slave" if decision == "master" else "master"))
        self._maybe_open_outgoing(now)

    def _on_olc(self, olc: h245.OpenLogicalChannel, now: float) -> None:
        """H.245 section C.5.3 (incoming LCSE): ack an audio channel we can carry."""
        number = olc.forward_logical_channel_number
        dtype = olc.forward.data_type
        if dtype.kind == "videoData" and dtype.codec == "h264" and olc.reverse is None \
                and (self.video is not None or self.local_rtp is None):
            self._on_video_olc(number, olc.forward, now)
            return
        encoding = ENCODING_OF.get(dtype.codec) if dtype.kind == "audioData" else None
        if encoding is None or encoding not in self.codecs or olc.reverse is not None:
            self._emit(h245.H245Message("response", "openLogicalChannelReject", {
                "forwardLogicalChannelNumber": number, "cause": ("dataTypeNotSupported", 0)}))
            self._log.info("h323.h245.channel_rejected", channel=number, data_type=dtype.kind,
                           codec=dtype.codec or None)
            return
        rtcp = olc.forward.media_control_channel
        remote_rtcp = (rtcp.host, rtcp.port) if rtcp is not None else None
        if self.local_rtp is None:
            self._pending_incoming.append((number, encoding, remote_rtcp))
            return
        self._ack_incoming(number, encoding, remote_rtcp, now)

    def _on_video_olc(self, number: int, params: h245.LogicalChannelParameters | None, now: float) -> None:
        """The peer's H.264 channel toward us: ack it with our video RTP/RTCP addresses (session
        2), or wait for them, or reject it when this call carries no video after all."""
        if params is not None:
            self._video_params[number] = params
        if self.local_rtp is None:  # not answered yet: we do not know whether video goes
            self._pending_incoming.append((number, "H264", None))
            return
        params = self._video_params.pop(number, None)
        if self.video is None or self.local_video is None or self.video_in is not None:
            self._emit(h245.H245Message("response", "openLogicalChannelReject", {
                "forwardLogicalChannelNumber": number, "cause": ("dataTypeNotSupported", 0)}))
            self._log.info("h323.h245.channel_rejected", channel=number, data_type="videoData", codec="h264")
            return
        pt = params.payload_type if params is not None else None
        self.video_in = _Channel(number, "H264", acked=True, payload_type=pt)
        host, port = self.local_video
        session = params.session_id if params is not None and params.session_id else VIDEO_SESSION
        self._emit(h245.OpenLogicalChannelAck(number, session, h245.UnicastAddress(host, port),
                                              h245.UnicastAddress(host, port + 1)))
        self._log.info("h323.h245.channel_acked", channel=number, codec="H264", payload_type=pt)
        self._maybe_open_outgoing(now)

    def _on_clc(self, clc: h245.CloseLogicalChannel) -> None:
        """H.245 section C.5.3: the peer closes one of its channels; always acknowledged."""
        number = clc.forward_logical_channel_number
        if self.video_in is not None and number == self.video_in.number:
            self.video_in = None
            self._events.append(ChannelClosed(number, "video"))
        elif self.incoming.pop(number, None) is not None:
            self._events.append(ChannelClosed(number, "audio"))
        self._emit(h245.H245Message("response", "closeLogicalChannelAck", {"forwardLogicalChannelNumber": number}))
        self._log.info("h323.h245.channel_closed", channel=number, source=clc.source)

    def _ack_incoming(self, number: int, encoding: str, remote_rtcp: tuple[str, int] | None,
                      now: float) -> None:
        assert self.local_rtp is not None
        host, port = self.local_rtp
        self.incoming[number] = _Channel(number, encoding, None, remote_rtcp, True)
        self._emit(h245.OpenLogicalChannelAck(number, AUDIO_SESSION, h245.UnicastAddress(host, port),
                                              h245.UnicastAddress(host, port + 1)))
        self._log.info("h323.h245.channel_acked", channel=number, codec=encoding)
        self._maybe_open_outgoing(now)

    def _choose_codec(self, grace_over: bool) -> str | None:
        for ch in self.incoming.values():  # the codec the peer sends, for both directions
            return ch.codec
        if not grace_over or self.remote_audio is None:
            return None
        offered = [ENCODING_OF[n] for n in self.remote_audio if n in ENCODING_OF]
        for enc in offered:
            if enc in self.codecs:
                return enc
        return None

    def _maybe_open_outgoing(self, now: float, grace_over: bool = False) -> None:
        """Open our audio channel (H.245 section 8.4) once capabilities and master/slave status
        are settled (H.323 section 8.2.3 ordering) and our RTP address is known; our video
        channel goes alongside (:meth:`_maybe_open_video`)."""
        self._maybe_open_video(now)
        if not self.open_channels or self.outgoing is not None or self.ended:
            return
        if self.remote_audio is None or not self.local_tcs_acked or self.msd_status is None \
                or self.local_rtp is None:
            return
        codec = self._choose_codec(grace_over)
        if codec is None:
            if not grace_over and self._grace_until is None:
                self._grace_until = now + PEER_OLC_GRACE
            elif grace_over:
                self._fail("olc", "no common audio codec in the peer's capabilities")
            return
        self._grace_until = None
        number = self._next_channel
        self._next_channel += 1
        self.outgoing = _Channel(number, codec)
        host, port = self.local_rtp
        self._emit(h245.OpenLogicalChannel(number, h245.LogicalChannelParameters(
            h245.MediaType("audioData", AUDIO_CAPABILITY[codec], 20), AUDIO_SESSION, None,
            h245.UnicastAddress(host, port + 1), False)))
        self._outgoing_sent_at = now

    def _video_wanted(self) -> bool:
        """Whether we open an H.264 channel toward the peer: we carry video, its TCS lists H.264."""
        return self.open_channels and self.video is not None and self.remote_h264 is not None

    def _maybe_open_video(self, now: float, grace_over: bool = False) -> None:
        """Open our H.264 channel (session 2) under the same conditions as the audio one, with
        the payload type the peer's own video channel uses (so it waits :data:`PEER_OLC_GRACE`
        for that channel, else takes ours) and no more than the bit rate, profile and level
        both sides take."""
        if not self._video_wanted() or self.video_out is not None or self._video_out_failed or self.ended:
            return
        if not self.local_tcs_acked or self.msd_status is None or self.local_video is None:
            return
        if self.video_in is None and not grace_over:
            if self._video_grace_until is None:
                self._video_grace_until = now + PEER_OLC_GRACE
            return
        self._video_grace_until = None
        assert self.video is not None and self.remote_h264 is not None
        ours, theirs = self.video, self.remote_h264
        rate = min(ours.max_bit_rate, theirs.max_bit_rate) if theirs.max_bit_rate > 0 else ours.max_bit_rate
        cap = h245.H264Capability(rate, h245.H241_BASELINE, min(ours.level, theirs.level))
        pt = (self.video_in.payload_type if self.video_in is not None else None) or H264_PAYLOAD_TYPE
        number = self._next_channel
        self._next_channel += 1
        self.video_out = _Channel(number, "H264", payload_type=pt)
        host, port = self.local_video
        self._emit(h245.OpenLogicalChannel(number, h245.LogicalChannelParameters(
            cap.media_type(), VIDEO_SESSION, None, h245.UnicastAddress(host, port + 1), None, pt)))
        self._video_out_sent_at = now
        self._log.info("h323.h245.video_opening", channel=number, payload_type=pt, max_bps=cap.max_bps)

    def _video_failed(self, reason: str) -> None:
        """Our video channel will not open: the call goes on with audio only."""
        self._video_out_sent_at = None
        self._video_out_failed = True
        self._log.warning("h323.h245.video_failed", reason=reason)
        self._maybe_media_ready()

    def _maybe_media_ready(self) -> None:
        """:class:`MediaReady` once audio is open both ways and our video channel is settled."""
        audio = self._audio_ready
        if audio is None or self.media_ready:
            return
        out = self.video_out
        if self._video_wanted() and not self._video_out_failed and (out is None or not out.acked):
            return
        video = None
        if out is not None and out.acked and out.remote_rtp is not None:
            assert self.remote_h264 is not None and out.payload_type is not None
            video = VideoChannel(out.remote_rtp, out.remote_rtcp, out.number, out.payload_type, self.remote_h264)
        self.media_ready = True
        self._events.append(MediaReady(audio.codec, audio.remote_rtp, audio.remote_rtcp, audio.local_channel,
                                       video=video))

    def _on_olc_ack(self, ack: h245.OpenLogicalChannelAck) -> None:
        vout = self.video_out
        if vout is not None and ack.forward_logical_channel_number == vout.number and not vout.acked:
            if ack.media_channel is None:
                self._video_failed("OpenLogicalChannelAck without a mediaChannel")
                return
            vout.acked = True
            self._video_out_sent_at = None
            vout.remote_rtp = (ack.media_channel.host, ack.media_channel.port)
            if ack.media_control_channel is not None:
                vout.remote_rtcp = (ack.media_control_channel.host, ack.media_control_channel.port)
            self._log.info("h323.h245.video_open", channel=vout.number)
            self._maybe_media_ready()
            return
        out = self.outgoing
        if out is None or ack.forward_logical_channel_number != out.number or out.acked:
            return
        if ack.media_channel is None:
            self._fail("olc", "OpenLogicalChannelAck without a mediaChannel")
            return
        out.acked = True
        out.remote_rtp = (ack.media_channel.host, ack.media_channel.port)
        if ack.media_control_channel is not None:
            out.remote_rtcp = (ack.media_control_channel.host, ack.media_control_channel.port)
        self._audio_ready = MediaReady(out.codec, out.remote_rtp, out.remote_rtcp, out.number)
        self._maybe_media_ready()

    def _on_other(self, msg: h245.H245Message, now: float) -> None:
        v = msg.value
        if (msg.kind, msg.name) == ("request", "requestChannelClose"):
            self._emit(h245.H245Message("response", "requestChannelCloseReject", {
                "forwardLogicalChannelNumber": v["forwardLogicalChannelNumber"],
                "cause": ("unspecified", 0)}))
        elif (msg.kind, msg.name) == ("request", "roundTripDelayRequest"):
            self._emit(h245.H245Message("response", "roundTripDelayResponse",
                                        {"sequenceNumber": v["sequenceNumber"]}))
        elif (msg.kind, msg.name) == ("response", "terminalCapabilitySetReject"):
            self._tcs_sent_at = None
            self._fail("tcs", "the peer rejected our capabilities")
        elif (msg.kind, msg.name) == ("response", "masterSlaveDeterminationReject"):
            self._msd_sent_at = None
            self._fail("msd", "the peer rejected master/slave determination")
        elif (msg.kind, msg.name) == ("response", "openLogicalChannelReject"):
            if self.video_out is not None and v["forwardLogicalChannelNumber"] == self.video_out.number \
                    and not self.video_out.acked:
                self._video_failed(f"the peer rejected our video channel: {v['cause'][0]}")
            elif self.outgoing is not None and v["forwardLogicalChannelNumber"] == self.outgoing.number:
                self._outgoing_sent_at = None
                self._fail("olc", f"the peer rejected our channel: {v['cause'][0]}")
        elif msg.kind == "request":
            # H.245 section 8.13 / annex A: a request we do not implement is answered with
            # functionNotUnderstood carrying it, so the peer does not wait for a timer.
            self._emit(h245.H245Message("indication", "functionNotUnderstood", ("request", (msg.name, v))))
        else:
            self._log.debug("h323.h245.ignored", kind=msg.kind, message=msg.name)

    # -- helpers ----------------------------------------------------------------------------

    def _send_tcs(self, now: float) -> None:
        self._tcs_seq = (self._tcs_seq % 255) + 1
        caps = h245.audio_capabilities(tuple((AUDIO_CAPABILITY[c], 20)
                                             for c in self.codecs))
        if self.video is not None:
            caps += (self.video.table_entry(len(caps) + 1),)
        self._emit(h245.TerminalCapabilitySet(self._tcs_seq, caps))
        self._tcs_sent_at = now

    def _send_msd(self, now: float) -> None:
        self._emit(h245.MasterSlaveDetermination(self.terminal_type, self._sdn))
        self._msd_sent_at = now

    def _emit(self, msg: Any) -> None:
        self._out.append(h245.encode(msg))

    def _fail(self, procedure: str, reason: str) -> None:
        self._log.warning("h323.h245.failed", procedure=procedure, reason=reason)
        self._events.append(ProcedureFailed(procedure, reason))
