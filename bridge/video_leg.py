"""The legacy video leg: a room system's main video (H.264 over RTP, RFC 6184) on its own port pair.

The gateway never transcodes video: the conference core decodes every publisher and re-encodes
per subscriber, so this leg only moves H.264 access units.  Inbound RTP is source-latched and
(with SDES keys) SRTP-authenticated under the same rules as the audio leg
(:mod:`bridge.legacy_leg`: plain RTP latches only from the SDP-named IP, SRTP from wherever the
first authenticated packet comes), then depacketized by :class:`bridge.h264_rtp.H264Depacketizer`
into whole access units for the WebRTC leg's WHIP video track.

Keyframes: the depacketizer says when the picture is broken (a gap, or no IDR yet), and the
core asks through the WebRTC leg when its decoder needs one; both go through the call's
:class:`bridge.keyframe.KeyframeTranslator`, which coalesces them and picks how this room
system is asked: RTCP PLI (RFC 4585 6.3.1) or FIR (RFC 5104 4.3.1) as negotiated, else SIP
INFO ``picture_fast_update`` (RFC 5168) through ``on_sip_info``.

The other way, the meeting's switched video (the core's H.264, taken from the WHEP receiver
undecoded, see ``bridge.webrtc_leg.EncodedFrameTap``) is packetized with the room system's
payload type and packetization-mode (:class:`bridge.h264_rtp.H264Packetizer`) and sent to
where its RTP comes from (symmetric RTP, RFC 4961), or to the SDP's address before that.  The
room system's PLI/FIR (RTCP, either port) and SIP INFO ``picture_fast_update`` go through the
same translator to ``on_core_keyframe`` (a PLI toward the core, whose encoder makes an IDR).

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

from bridge.h264_rtp import (
    AccessUnit,
    H264DepacketizeError,
    H264Depacketizer,
    H264PacketizeError,
    H264Packetizer,
)
from bridge.keyframe import KeyframeTranslator, Method, caps_from_feedback
from bridge.legacy_leg import Address, _normalise_ip, _same_ip
from bridge.ports import PortLease
from bridge.rtcp import RawRtcp, RtcpError, parse_compound
from bridge.rtcp_feedback import (
    Fir,
    FirSequencer,
    Pli,
    RtcpFeedbackError,
    parse_feedback,
)
from bridge.rtp import RtpError, RtpPacket, looks_like_rtcp
from bridge.srtp import SdesSrtp, SrtpDropped

log = structlog.get_logger("bridge.video_leg")


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
    packets_out: int = 0
    bytes_out: int = 0
    access_units_out: int = 0
    #: Access units from the core we could not send (a NAL too large for packetization-mode 0).
    access_units_unsendable: int = 0

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

    Latching follows :class:`bridge.legacy_leg.RtpInbound` (see the module docstring);
    refusals are counted by reason in ``counters``.
    """

    def __init__(self, *, remote_address: str, payload_type: int, counters: VideoCounters,
                 srtp: SdesSrtp | None = None) -> None:
        self.expected_ip = _normalise_ip(remote_address)
        self.payload_type = payload_type
        self.srtp = srtp
        self.counters = counters
        self.latched: Address | None = None
        self.depacketizer = H264Depacketizer()
        #: The room system's video SSRC (what a PLI names), once a packet was accepted.
        self.remote_ssrc: int | None = None
        self.last_drop_reason: str | None = None
        #: Called with ``"rtcp_pli"``/``"rtcp_fir"`` when the room system asks for a keyframe.
        self.on_keyframe_request: Callable[[str], object] | None = None

    @property
    def needs_keyframe(self) -> bool:
        """Whether the picture is broken until the next IDR (no IDR yet, or a packet was lost)."""
        return self.depacketizer.needs_keyframe

    def _drop(self, reason: str) -> None:
        setattr(self.counters, f"dropped_{reason}", getattr(self.counters, f"dropped_{reason}") + 1)
        self.last_drop_reason = reason

    def _source_ok(self, addr: Address) -> bool:
        if self.latched is not None:
            return addr[0] == self.latched[0] and addr[1] == self.latched[1]
        if self.srtp is not None:  # only an authenticated packet gets further (RFC 3711 3.3)
            return True
        return _same_ip(addr[0], self.expected_ip)

    def receive(self, data: bytes, addr: Address) -> list[AccessUnit]:
        """One datagram from ``addr`` on the RTP port: the access units it completed."""
        if not self._source_ok(addr):
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
        if self.latched is None:
            self.latched = (addr[0], addr[1])
            log.info("bridge.rtp.latched", leg="video", authenticated=self.srtp is not None,
                     sdp_ip_matches=_same_ip(addr[0], self.expected_ip))
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
    """

    def __init__(self, *, lease: PortLease, params: VideoLegParams,
                 on_access_unit: Callable[[AccessUnit], None] | None = None) -> None:
        self.lease = lease
        self.params = params
        self.srtp = params.srtp()
        self.remote = (params.remote_address, params.remote_port)
        self.counters = VideoCounters()
        self.inbound = VideoInbound(remote_address=params.remote_address,
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
        self.on_sip_info: Callable[[], None] | None = None
        #: Asks the core for a keyframe of the meeting's video (the room system asked us).
        self.on_core_keyframe: Callable[[], object] | None = None
        self.inbound.on_keyframe_request = self.keyframe_from_room
        self._packetizer = H264Packetizer(params.payload_type, self.ssrc,
                                          packetization_mode=params.packetization_mode)
        #: Our RTP timestamps start at a random value (RFC 3550 5.1).
        self._ts_offset = random.SystemRandom().getrandbits(32)
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._rtcp_source: Address | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
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
        self.keyframes = KeyframeTranslator(caps_from_feedback(self.params.feedback), clock=loop.time,
                                            fallback_interval=None)
        rtp, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self._rtp_received),
                                                     sock=self.lease.rtp_socket)
        rtcp, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self._rtcp_received),
                                                      sock=self.lease.rtcp_socket)
        self._rtp, self._rtcp = rtp, rtcp  # type: ignore[assignment]
        log.info("bridge.leg.up", leg="video", codec="H264", local_port=self.local_port,
                 encryption=self.encryption)

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
        if self.inbound.latched is not None and addr[0] != self.inbound.latched[0]:
            self.counters.dropped_wrong_source += 1
            return
        if self.inbound.latched is None and self.srtp is None and not _same_ip(addr[0], self.inbound.expected_ip):
            self.counters.dropped_wrong_source += 1
            return
        if self.inbound.receive_rtcp(data):
            self._rtcp_source = (addr[0], addr[1])

    @property
    def destination(self) -> Address:
        """Where our RTP goes: the latched source (symmetric RTP, RFC 4961 3), else the SDP's."""
        latched = self.inbound.latched
        return (latched[0], latched[1]) if latched is not None else self.remote

    def send_access_unit(self, unit: AccessUnit) -> None:
        """One access unit of the meeting's video, sent to the room system as H.264 RTP."""
        if self._closed or self._rtp is None:
            return
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
        if self._closed or self._rtcp is None or self.keyframes is None or media_ssrc is None:
            return False
        sent = False
        for action in self.keyframes.from_core(why):
            if action.method is Method.SIP_INFO:
                if self.on_sip_info is not None:
                    self.on_sip_info()
                    sent = True
                continue
            data = action.rtcp(self.ssrc, media_ssrc, self._fir)
            if data is None:
                continue
            if self.srtp is not None:
                data = self.srtp.protect_rtcp(data)
            self._rtcp.sendto(data, self.rtcp_destination)
            sent = True
        self.counters.keyframe_requests_out += sent
        return sent

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
            **self.counters.as_dict(),
        }

    def close(self) -> None:
        """Close both sockets and release the ports. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        self.lease.release()
        if self._rtp is not None:
            log.info("bridge.leg.down", leg="video", local_port=self.local_port,
                     packets_in=self.counters.packets_in, access_units=self.counters.access_units_in,
                     dropped=self.counters.dropped)
