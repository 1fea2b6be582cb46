"""The legacy video leg: a room system's main video (H.264 over RTP, RFC 6184) on its own port pair.

The gateway never transcodes video: the conference core decodes every publisher and re-encodes
per subscriber, so this leg only moves H.264 access units.  Inbound RTP is source-latched and
(with SDES keys) SRTP-authenticated by the same :class:`bridge.latch.SourceLatch` rule as the
audio leg (plain RTP latches only from the SDP-named IP, SRTP from wherever the first
authenticated packet comes), then depacketized by :class:`bridge.h264_rtp.H264Depacketizer`
into whole access units for the WebRTC leg's WHIP video track.

Keyframes: the depacketizer says when the picture is broken (a gap, or no IDR yet), and the
core asks through the WebRTC leg when its decoder needs one; both go through the call's
:class:`bridge.keyframe.KeyframeTranslator`, which coalesces them and picks how this room
system is asked: RTCP PLI (RFC 4585 6.3.1) or FIR (RFC 5104 4.3.1) as negotiated, else SIP
INFO ``picture_fast_update`` (RFC 5168) through ``on_sip_info`` (the application sends it in the
dialog; Cisco and Polycom endpoints without ``a=rtcp-fb`` expect exactly that).  A room system
with no RTCP feedback has no negotiated way to tell us it lost *our* picture either, so the
translator's periodic fallback asks the core for an IDR toward it every
:data:`bridge.keyframe.FALLBACK_INTERVAL` seconds unless one went out meanwhile.

The other way, the meeting's switched video (the core's H.264, taken from the WHEP receiver
undecoded, see ``bridge.webrtc_leg.EncodedFrameTap``) is packetized with the room system's
payload type and packetization-mode (:class:`bridge.h264_rtp.H264Packetizer`) and sent to
where its RTP comes from (symmetric RTP, RFC 4961), or to the SDP's address before that.  The
room system's PLI/FIR (RTCP, either port) and SIP INFO ``picture_fast_update`` go through the
same translator to ``on_core_keyframe`` (a PLI toward the core, whose encoder makes an IDR).

Bitrate: the room system's receive limit -- ``b=TIAS``/``b=AS`` of its video line
(``VideoLegParams.bitrate_cap_bps``), its REMB and TMMBR (each TMMBR answered with a TMMBN,
RFC 5104 4.2.1.2) -- is kept by :attr:`LegacyVideoLeg.bitrate` (:class:`bridge.bitrate.
BitrateGovernor`); the WebRTC leg's WHEP receiver caps the REMB it sends the core's encoder by
its ``target_bps`` (``bridge.webrtc_leg.cap_remb``), since we pass the core's H.264 through.

Split like the audio leg: :class:`VideoInbound` is sans-IO (bytes and an address in, access
units out); :class:`LegacyVideoLeg` moves datagrams between it and the lease's sockets.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import structlog

from bridge.bitrate import BitrateGovernor
from bridge.h264_rtp import (
    AccessUnit,
    H264DepacketizeError,
    H264Depacketizer,
    H264PacketizeError,
    H264Packetizer,
)
from bridge.keyframe import (
    FALLBACK_INTERVAL,
    KeyframeTranslator,
    LegacyKeyframeCaps,
    Method,
    caps_from_feedback,
)
from bridge.latch import Address, SourceLatch
from bridge.ports import PortLease
from bridge.rtcp import RawRtcp, RtcpError, parse_compound
from bridge.rtcp_feedback import (
    Fir,
    FirSequencer,
    Pli,
    Remb,
    RtcpFeedbackError,
    Tmmbr,
    parse_feedback,
)
from bridge.rtp import RtpError, RtpPacket, looks_like_rtcp
from bridge.srtp import SdesSrtp, SrtpDropped

log = structlog.get_logger("bridge.video_leg")

#: RTP receive buffer of a video socket. The default (~208 KiB) holds about a second of one
#: 1.5 Mbit/s call: a loop busy for a few hundred ms with other calls then lets the kernel drop
#: the room system's packets, each loss costs a keyframe request, and the keyframes make the next
#: burst bigger (the video benchmark saw 10-60 % dropped this way). 2 MiB rides out ~10 s.
VIDEO_RECEIVE_BUFFER = 2 * 1024 * 1024


@dataclass(frozen=True)
class VideoLegParams:
    """What the SDP offer/answer agreed for the main video (the application converts
    ``sip.offer_answer.VideoChoice`` into this; bridge never imports sip)."""

    payload_type: int
    remote_address: str
    remote_port: int
    packetization_mode: int = 1
    bandwidth_kbps: int | None = None
    #: Negotiated ``a=rtcp-fb`` kinds (``"nack pli"``, ``"ccm fir"``): how to ask for keyframes.
    feedback: tuple[str, ...] = ()
    srtp_suite: str | None = None
    srtp_remote_key: bytes | None = None
    srtp_local_key: bytes | None = None
    #: The payload bit rate the room system's SDP allows (``bridge.bitrate.cap_from_sdp`` of
    #: its video line), None when it states none.
    bitrate_cap_bps: int | None = None
    #: How the room system is asked for keyframes when the signalling says so rather than SDP
    #: feedback (H.323: ``bridge.keyframe.h323_caps()``); None: from ``feedback`` (SIP).
    keyframe_caps: LegacyKeyframeCaps | None = None

    def srtp(self) -> SdesSrtp | None:
        """The SDES-SRTP context of the video line (its own keys, RFC 4568 6.1), or None."""
        if self.srtp_suite is None:
            return None
        if self.srtp_remote_key is None or self.srtp_local_key is None:
            raise ValueError("video srtp_suite needs both srtp_remote_key and srtp_local_key")
        return SdesSrtp(self.srtp_suite, remote_key=self.srtp_remote_key, local_key=self.srtp_local_key)


@dataclass
class VideoCounters:
    """Counters of the video leg; each dropped packet is counted in exactly one ``dropped_*``."""

    packets_in: int = 0
    bytes_in: int = 0
    access_units_in: int = 0
    keyframes_in: int = 0
    dropped_wrong_source: int = 0
    dropped_bad_packet: int = 0
    dropped_wrong_pt: int = 0
    dropped_srtp_auth: int = 0
    dropped_srtp_replay: int = 0
    #: Packets the H.264 depacketizer refused (mode 2 structures, malformed FU-A ...; its
    #: ``rejected`` counter has the reasons).
    dropped_h264: int = 0
    rtcp_in: int = 0
    #: RTCP (or SRTCP once unprotected) that did not parse as a compound packet.
    rtcp_malformed: int = 0
    keyframe_requests_out: int = 0
    #: PLI/FIR from the room system (SIP INFO requests are counted by the translator).
    keyframe_requests_in: int = 0
    #: REMB/TMMBR from the room system (its receive limit; see ``LegacyVideoLeg.bitrate``).
    bitrate_feedback_in: int = 0
    tmmbn_out: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    access_units_out: int = 0
    #: Access units from the core we could not send (a NAL too large for packetization-mode 0).
    access_units_unsendable: int = 0
    #: Access units from the core not sent because the room system put video on hold.
    access_units_held: int = 0

    @property
    def dropped(self) -> int:
        return (self.dropped_wrong_source + self.dropped_bad_packet + self.dropped_wrong_pt
                + self.dropped_srtp_auth + self.dropped_srtp_replay + self.dropped_h264)

    def as_dict(self) -> dict[str, int]:
        d = asdict(self)
        d["dropped"] = self.dropped
        return d


class VideoInbound:
    """Receive side of the video leg, sans-IO: ``receive(data, addr)`` returns access units.

    Latching is :class:`bridge.latch.SourceLatch`'s (``source``); refusals are counted by
    reason in ``counters``.
    """

    def __init__(self, *, remote_address: str, payload_type: int, counters: VideoCounters,
                 srtp: SdesSrtp | None = None, remote_port: int | None = None) -> None:
        self.source = SourceLatch(remote_address, any_source=srtp is not None, leg="video",
                                  remote_port=remote_port)
        self.payload_type = payload_type
        self.srtp = srtp
        self.counters = counters
        self.depacketizer = H264Depacketizer()
        #: The room system's video SSRC (what a PLI names), once a packet was accepted.
        self.remote_ssrc: int | None = None
        self.last_drop_reason: str | None = None
        #: Called with ``"rtcp_pli"``/``"rtcp_fir"`` when the room system asks for a keyframe.
        self.on_keyframe_request: Callable[[str], object] | None = None
        #: Called with each REMB/TMMBR the room system sends (how fast we may send it video).
        self.on_bitrate_feedback: Callable[[Remb | Tmmbr], object] | None = None

    @property
    def latched(self) -> Address | None:
        """The room system's video source once latched (see :class:`bridge.latch.SourceLatch`)."""
        return self.source.latched

    @property
    def needs_keyframe(self) -> bool:
        """Whether the picture is broken until the next IDR (no IDR yet, or a packet was lost)."""
        return self.depacketizer.needs_keyframe

    def _drop(self, reason: str) -> None:
        setattr(self.counters, f"dropped_{reason}", getattr(self.counters, f"dropped_{reason}") + 1)
        self.last_drop_reason = reason

    def receive(self, data: bytes, addr: Address) -> list[AccessUnit]:
        """One datagram from ``addr`` on the RTP port: the access units it completed."""
        if not self.source.accepts(addr):
            self._drop("wrong_source")
            return []
        if looks_like_rtcp(data):  # RTCP multiplexed on the RTP port (RFC 5761)
            self.receive_rtcp(data)
            return []
        if self.srtp is not None:
            try:
                data = self.srtp.unprotect(data)
            except SrtpDropped as exc:
                self._drop({"auth": "srtp_auth", "replay": "srtp_replay"}.get(exc.reason, "bad_packet"))
                return []
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            self._drop("bad_packet")
            return []
        if packet.payload_type != self.payload_type:
            self._drop("wrong_pt")
            return []
        self.source.latch(addr, authenticated=self.srtp is not None)
        self.remote_ssrc = packet.ssrc
        try:
            units = self.depacketizer.push(packet)
        except H264DepacketizeError as exc:
            self._drop("h264")
            units = exc.access_units
        else:
            self.counters.packets_in += 1
            self.counters.bytes_in += len(data)
        self.counters.access_units_in += len(units)
        self.counters.keyframes_in += sum(1 for u in units if u.keyframe)
        return units

    def receive_rtcp(self, data: bytes) -> bool:
        """An RTCP packet from the room system (either port); False if SRTCP refused it.
        PLI and FIR in it are handed to ``on_keyframe_request``."""
        if self.srtp is not None:
            try:
                data = self.srtp.unprotect_rtcp(data)
            except SrtpDropped as exc:
                self._drop({"auth": "srtp_auth", "replay": "srtp_replay"}.get(exc.reason, "bad_packet"))
                return False
        self.counters.rtcp_in += 1
        try:
            packets = parse_compound(data)
        except RtcpError:
            self.counters.rtcp_malformed += 1
            return True
        for packet in packets:
            if not isinstance(packet, RawRtcp):
                continue
            try:
                feedback = parse_feedback(packet)
            except RtcpFeedbackError:
                self.counters.rtcp_malformed += 1
                continue
            if isinstance(feedback, (Pli, Fir)):
                self.counters.keyframe_requests_in += 1
                if self.on_keyframe_request is not None:
                    self.on_keyframe_request("rtcp_pli" if isinstance(feedback, Pli) else "rtcp_fir")
            elif isinstance(feedback, (Remb, Tmmbr)):
                self.counters.bitrate_feedback_in += 1
                if self.on_bitrate_feedback is not None:
                    self.on_bitrate_feedback(feedback)
        return True


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self._on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("bridge.rtp.socket_error", leg="video", error=str(exc))


class LegacyVideoLeg:
    """One call's main video toward the room system, on its own RTP/RTCP port lease.

    Access units from the room system go to ``on_access_unit``; :meth:`request_keyframe`
    (the core asked, or the depacketizer lost the picture) goes through the keyframe
    translator; ``on_sip_info`` is called when it must be a SIP INFO (no RTCP feedback).
    ``fallback_interval`` is the translator's periodic refresh toward a room system that cannot
    ask for keyframes (None: off).
    """

    def __init__(self, *, lease: PortLease, params: VideoLegParams,
                 on_access_unit: Callable[[AccessUnit], None] | None = None,
                 fallback_interval: float | None = FALLBACK_INTERVAL) -> None:
        self.lease = lease
        self.params = params
        self.srtp = params.srtp()
        self.remote = (params.remote_address, params.remote_port)
        self.counters = VideoCounters()
        self.inbound = VideoInbound(remote_address=params.remote_address,
                                    remote_port=params.remote_port,
                                    payload_type=params.payload_type, counters=self.counters,
                                    srtp=self.srtp)
        self.on_access_unit = on_access_unit
        #: Our SSRC as RTCP sender (RFC 3550 8: random).
        self.ssrc = random.SystemRandom().getrandbits(32)
        self._fir = FirSequencer(self.ssrc)
        #: Made by :meth:`start` (it needs the loop's clock).
        self.keyframes: KeyframeTranslator | None = None
        #: Asks the room system for a keyframe by SIP INFO ``picture_fast_update`` (RFC 5168),
        #: for peers that negotiated no RTCP feedback; set by the application (None: cannot).
        #: Returning False says nothing was sent (the dialog is not confirmed, or is over).
        self.on_sip_info: Callable[[], object] | None = None
        #: The same for an H.323 room system: H.245 ``videoFastUpdatePicture`` (H.323 8.7.1).
        self.on_h245_fast_update: Callable[[], object] | None = None
        #: Asks the core for a keyframe of the meeting's video (the room system asked us).
        self.on_core_keyframe: Callable[[], object] | None = None
        self.inbound.on_keyframe_request = self.keyframe_from_room
        #: How fast the core may send this room system video (its SDP cap, REMB, TMMBR).
        self.bitrate = BitrateGovernor(ssrc=self.ssrc, sdp_cap_bps=params.bitrate_cap_bps)
        self.inbound.on_bitrate_feedback = self._bitrate_feedback
        self._packetizer = H264Packetizer(params.payload_type, self.ssrc,
                                          packetization_mode=params.packetization_mode)
        #: Our RTP timestamps start at a random value (RFC 3550 5.1).
        self._ts_offset = random.SystemRandom().getrandbits(32)
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._rtcp_source: Address | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fallback_interval = fallback_interval
        #: False while the room system holds our video (its ``sendonly``/``inactive``, RFC 3264 8.4).
        self.sending = True
        #: After a resume, access units wait for the core's IDR (the room system's decoder has
        #: nothing to predict from; a P-frame would show as garbage until then).
        self._await_keyframe = False
        self._fallback_timer: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def local_port(self) -> int:
        return self.lease.rtp_port

    @property
    def started(self) -> bool:
        return self._rtp is not None

    async def start(self) -> None:
        """Attach both sockets to the loop (RTP, and RTCP on RTP+1 for peers without rtcp-mux)."""
        if self._closed:
            raise RuntimeError("video leg already closed")
        loop = self._loop = asyncio.get_running_loop()
        caps = self.params.keyframe_caps or caps_from_feedback(self.params.feedback)
        self.keyframes = KeyframeTranslator(caps, clock=loop.time, fallback_interval=self._fallback_interval)
        self._schedule_fallback()
        granted = self.lease.set_receive_buffer(VIDEO_RECEIVE_BUFFER)
        pair = await self.lease.attach(lambda: _Protocol(self._rtp_received),
                                       lambda: _Protocol(self._rtcp_received))
        if pair is None:
            return  # closed while attaching (the caller hung up): the lease closed both
        self._rtp, self._rtcp = pair  # type: ignore[assignment]
        log.info("bridge.leg.up", leg="video", codec="H264", local_port=self.local_port,
                 encryption=self.encryption, receive_buffer=granted)

    def _schedule_fallback(self) -> None:
        """Arm the timer for the translator's next periodic refresh (none when it has none)."""
        due = self.keyframes.next_deadline() if self.keyframes is not None else None
        if due is None or self._loop is None or self._closed:
            return
        self._fallback_timer = self._loop.call_at(due, self._fallback_tick)

    def _fallback_tick(self) -> None:
        """The refresh is due (or was pushed back by a request meanwhile): ask the core if
        :meth:`KeyframeTranslator.tick` says so, then re-arm for its next deadline."""
        self._fallback_timer = None
        if self._closed or self.keyframes is None:
            return
        if self.keyframes.tick() and self.on_core_keyframe is not None:
            self.on_core_keyframe()
        self._schedule_fallback()

    def _rtp_received(self, data: bytes, addr: Address) -> None:
        if self._closed:
            return
        for unit in self.inbound.receive(data, addr):
            if self.on_access_unit is not None:
                self.on_access_unit(unit)
        if self.inbound.needs_keyframe and self.inbound.remote_ssrc is not None:
            self.request_keyframe("picture_lost")

    def _rtcp_received(self, data: bytes, addr: Address) -> None:
        if self._closed:
            return
        if not self.inbound.source.accepts_rtcp(addr):
            self.counters.dropped_wrong_source += 1
            return
        if self.inbound.receive_rtcp(data):
            self._rtcp_source = (addr[0], addr[1])

    @property
    def destination(self) -> Address:
        """Where our RTP goes: the latched source (symmetric RTP, RFC 4961 3), else the SDP's."""
        return self.inbound.source.destination(self.remote)

    def send_access_unit(self, unit: AccessUnit) -> None:
        """One access unit of the meeting's video, sent to the room system as H.264 RTP."""
        if self._closed or self._rtp is None:
            return
        if not self.sending or (self._await_keyframe and not unit.keyframe):
            self.counters.access_units_held += 1
            if self.sending:
                self.keyframe_from_room("resume")  # coalesced: again only if the IDR is late
            return
        self._await_keyframe = False
        try:
            packets = self._packetizer.packetize(unit.nals, unit.timestamp + self._ts_offset)
        except H264PacketizeError as exc:
            self.counters.access_units_unsendable += 1
            log.debug("video.h264.unsendable", reason=exc.reason, local_port=self.local_port)
            return
        destination = self.destination
        for packet in packets:
            data = bytes(packet)
            if self.srtp is not None:
                data = self.srtp.protect(data)
            self._rtp.sendto(data, destination)
            self.counters.packets_out += 1
            self.counters.bytes_out += len(data)
        self.counters.access_units_out += 1

    def keyframe_from_room(self, why: str) -> bool:
        """The room system asked for a keyframe of what we send it (RTCP PLI/FIR, SIP INFO
        ``picture_fast_update``): through the translator to ``on_core_keyframe``."""
        if self.keyframes is None or self.on_core_keyframe is None:
            return False
        if not self.keyframes.from_legacy(why):
            return False
        self.on_core_keyframe()
        return True

    def _bitrate_feedback(self, message: Remb | Tmmbr) -> None:
        """The room system's REMB/TMMBR moves the governor's target; a TMMBR addressed to our
        SSRC is acknowledged with a TMMBN (RFC 5104 4.2.1.2: else it keeps repeating it)."""
        tmmbn = self.bitrate.feedback(message)
        if tmmbn is None or self._rtcp is None or self._closed:
            return
        data = tmmbn.to_bytes()
        if self.srtp is not None:
            data = self.srtp.protect_rtcp(data)
        self._rtcp.sendto(data, self.rtcp_destination)
        self.counters.tmmbn_out += 1

    @property
    def rtcp_destination(self) -> Address:
        """Where our RTCP goes: the port the peer's RTCP comes from, else RTP+1 of where its RTP
        comes from (RFC 3550 11), else the SDP's."""
        if self._rtcp_source is not None:
            return self._rtcp_source
        host, port = self.inbound.latched or self.remote
        return (host, port + 1)

    def request_keyframe(self, why: str) -> bool:
        """The core side needs an IDR from the room system (``core_pli``, ``picture_lost`` ...):
        ask by what the translator picks, coalesced; True if a request went out."""
        media_ssrc = self.inbound.remote_ssrc
        if self._closed or self._rtcp is None or self.keyframes is None:
            return False
        if self.keyframes.caps.method in (Method.RTCP_PLI, Method.RTCP_FIR) and media_ssrc is None:
            return False  # an RTCP request must name the room system's SSRC: none seen yet
        sent = False
        for action in self.keyframes.from_core(why):
            if action.method in (Method.SIP_INFO, Method.H245):
                # Signalled requests name no SSRC: they may go before any video came.
                hook = self.on_sip_info if action.method is Method.SIP_INFO else self.on_h245_fast_update
                if hook is not None and hook() is not False:
                    sent = True
                continue
            data = action.rtcp(self.ssrc, media_ssrc or 0, self._fir)
            if data is None:
                continue
            if self.srtp is not None:
                data = self.srtp.protect_rtcp(data)
            self._rtcp.sendto(data, self.rtcp_destination)
            sent = True
        self.counters.keyframe_requests_out += sent
        return sent

    def renegotiate(self, *, remote_address: str, remote_port: int, sending: bool) -> None:
        """A re-offer kept this video line (same payload type and keys, see
        ``gateway.calls.reoffer_video``; RFC 3264 8).

        * A new address or port re-targets the leg and drops the latch, so the first packet
          from the new place latches again (8.3.1) -- the audio leg's rule (:mod:`bridge.latch`,
          strict to the new address:port for a peer that proved symmetric).
          ``c=0.0.0.0``/``::`` (old-style hold) keeps the old target.
        * ``sending=False`` (the room system's ``sendonly``/``inactive``) holds our video toward
          it (8.4); ``True`` resumes, asking the core for an IDR and sending nothing before it:
          the room system's decoder has nothing to predict from after the pause.
        """
        if remote_address not in ("0.0.0.0", "::") and (remote_address, remote_port) != self.remote:
            self.remote = (remote_address, remote_port)
            self.inbound.source.retarget(remote_address, remote_port)
            self._rtcp_source = None
            log.info("bridge.video.retargeted", local_port=self.local_port)
        resumed = sending and not self.sending
        if sending != self.sending:
            log.info("bridge.video.resumed" if sending else "bridge.video.held", local_port=self.local_port)
        self.sending = sending
        if resumed:
            self._await_keyframe = True
            self.keyframe_from_room("resume")

    @property
    def encryption(self) -> str:
        return "sdes-srtp" if self.srtp is not None else "plain"

    def stats(self) -> dict[str, Any]:
        return {
            "encryption": self.encryption,
            "codec": "H264",
            "payload_type": self.params.payload_type,
            "local_port": self.local_port,
            "latched": self.inbound.latched is not None,
            "bitrate_target_bps": self.bitrate.target_bps,
            "sending": self.sending,
            **self.counters.as_dict(),
        }

    def close(self) -> None:
        """Close both sockets and release the ports. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._fallback_timer is not None:
            self._fallback_timer.cancel()
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        self.lease.release()
        if self._rtp is not None:
            log.info("bridge.leg.down", leg="video", local_port=self.local_port,
                     packets_in=self.counters.packets_in, access_units=self.counters.access_units_in,
                     dropped=self.counters.dropped)
