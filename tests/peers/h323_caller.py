"""The project's own H.323 caller: a test endpoint written from the standards.

It uses only the codec layer (``h323.tpkt``, ``h323.q931``, ``h323.h225``, ``h323.h245``) and
none of the gateway's call or H.245 state machines, so that a shared misunderstanding cannot
make both sides agree by accident.  It behaves like a small H.323 terminal (H.323 section 8):

1. **Setup** (H.225.0 section 7.3.1) with the meeting as Called party number, ``dialledDigits``
   or ``h323-ID``; optionally Fast Start proposals (H.323 section 8.1.7.1: for the codec, one
   channel it receives on, with its RTP/RTCP addresses, and one it transmits on) and
   ``h245Tunnelling`` (H.323 section 8.2.1).
2. It follows CallProceeding/Alerting/Connect/Facility: takes Fast Start answers (the callee's
   RTP address), connects to an ``h245Address`` (in any message or Facility ``startH245``,
   H.323 section 8.2.3) when tunnelling is off, and handles tunnelled ``h245Control``.  With
   ``h245_listen`` it listens for H.245 itself and puts that address in Setup ``h245Address``
   (and connects to none the gateway names once the gateway has connected).
3. H.245 as a terminal (type 50): TCS and MSD of its own, acks the callee's, and without Fast
   Start opens its G.711 channel and acks the callee's OLC with its RTP/RTCP addresses.
4. Media: a tone as RTP (PCMU or PCMA, 20 ms packets), and it records what it receives;
   optional DTMF digits as H.245 userInputIndication signals once media flows.
5. After ``seconds`` of media it sends endSessionCommand and ReleaseComplete (H.323 section 8.5).
6. Optional video (``video=(r, g, b)``, off by default): H.264 (H.241 generic capability,
   Baseline) in its TCS, Fast Start proposals for session 2 or its own H.264 OLC, it acks the
   callee's H.264 OLC with its video RTP/RTCP addresses, sends a solid picture of that colour as
   H.264 RTP (``tests/support/video_room_system.py``, packetization-mode 1, RFC 6184), keeps the
   access units it receives, answers ``videoFastUpdatePicture`` (H.323 section 8.7.1) with an
   IDR, and acks the callee's CloseLogicalChannel.

    result = run_h323_call("127.0.0.1", 1720, "1000", fast_start=True, tunnelling=False)
    samples, rate = result.recording()

Run as a program (``python -m tests.peers.h323_caller HOST PORT MEETING``) it prints the result
as JSON.
"""

from __future__ import annotations

import json
import os
import random
import select
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bridge.codecs import codec_by_name
from h323 import h225, h245, q931, tpkt
from h323.errors import H323Error
from h323.h225 import Alias, TransportAddress
from h323.q931 import (
    BearerCapability,
    CalledPartyNumber,
    Cause,
    Display,
    MessageType,
    Q931Message,
)

CAPABILITY = {"PCMU": "g711Ulaw64k", "PCMA": "g711Alaw64k"}
PAYLOAD_TYPE = {"PCMU": 0, "PCMA": 8}
TERMINAL_TYPE = 50  # H.323 table 1: a terminal
TX_CHANNEL, RX_PROPOSAL = 1, 2  # our logical channel numbers
TX_VIDEO, RX_VIDEO_PROPOSAL = 3, 4  # our video channel and Fast Start receive proposal
VIDEO_PT = 96  # the dynamicRTPPayloadType we send H.264 with (H.225.0 section 6.2.8)
VIDEO_SESSION = 2  # H.225.0 section 6.2.8: the main video's RTP session


@dataclass
class CallerResult:
    """What the caller saw: the messages (Q.931 type and UUIE body), the H.245 PDUs, the
    release, and the media in both directions."""

    connected: bool = False
    messages: list[str] = field(default_factory=list)
    h245: list[str] = field(default_factory=list)
    release_reason: str | None = None
    release_cause: int | None = None
    release_display: str | None = None
    released_by: str | None = None
    codec: str | None = None
    fast_start_accepted: bool = False
    fast_connect_refused: bool = False
    h245_address: tuple[str, int] | None = None
    remote_rtp: tuple[str, int] | None = None
    call_reference_flags: list[bool] = field(default_factory=list)
    rtp_in: int = 0
    rtp_out: int = 0
    error: str | None = None
    signalling_port: int | None = None
    h245_local_port: int | None = None
    #: Our own H.245 listener's port (``h245_listen``) and the connections accepted there.
    h245_listen_port: int | None = None
    h245_accepted: int = 0
    #: userInputIndication received from the gateway: ("signal"|"alphanumeric", key, duration).
    user_input: list[tuple[str, str, int | None]] = field(default_factory=list)
    #: Video (``video=``): where the callee takes our H.264, what we sent, what it sent us
    #: (wall-clock arrival, access unit), its videoFastUpdatePicture (wall-clock time, channel)
    #: and the wall-clock times of the IDRs we sent.
    video_remote_rtp: tuple[str, int] | None = None
    remote_h264: bool = False
    video_units_sent: int = 0
    video_packets_sent: int = 0
    video_packets_in: int = 0
    video_received: list[tuple[float, Any]] = field(default_factory=list, repr=False)
    fast_updates: list[tuple[float, int]] = field(default_factory=list)
    idrs_sent: list[float] = field(default_factory=list)
    #: Logical channels the callee closed (CloseLogicalChannel), in order.
    closed_channels: list[int] = field(default_factory=list)
    pcm: list[np.ndarray] = field(default_factory=list, repr=False)

    def recording(self) -> tuple[np.ndarray, int]:
        """What the caller received, decoded, as int16 samples at 8 kHz."""
        if not self.pcm:
            return np.zeros(0, dtype=np.int16), 8000
        return np.concatenate(self.pcm).astype(np.int16), 8000

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("pcm", "video_received")}
        d["samples"] = int(sum(len(p) for p in self.pcm))
        d["video_units_in"] = len(self.video_received)
        return d


def _bind_rtp_pair() -> tuple[socket.socket, socket.socket]:
    """An even RTP port and the RTCP port above it (RFC 3550 section 11) on 127.0.0.1, from the
    kernel's ephemeral range above 40000 (other programs on the machine hold many UDP ports)."""
    last: OSError | None = None
    for _ in range(500):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        port = rtp.getsockname()[1]
        if port % 2 or port >= 65535 or port < 40000:  # 30000-39999: the test gateways' media
            rtp.close()
            continue
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtcp.bind(("127.0.0.1", port + 1))
        except OSError as exc:
            last = exc
            rtp.close()
            rtcp.close()
            continue
        rtp.setblocking(False)
        rtcp.setblocking(False)
        return rtp, rtcp
    raise RuntimeError(f"no free RTP port pair ({last})")


class _Framed:
    """A TCP socket carrying TPKT packets."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.framer = tpkt.TpktFramer()
        self.open = True
        self.write_closed = False

    def send(self, payload: bytes) -> None:
        """Send one packet; a peer that already closed (after its ReleaseComplete, which is still
        to be read) is not an error."""
        if self.open and not self.write_closed:
            try:
                self.sock.sendall(tpkt.encode(payload))
            except (BrokenPipeError, ConnectionResetError):
                self.write_closed = True

    def read(self) -> list[bytes]:
        data = self.sock.recv(65536)
        if not data:
            self.open = False
            return []
        return self.framer.feed(data)


class H323Caller:
    def __init__(self, host: str, port: int, meeting: str, *, alias: str = "number",
                 fast_start: bool = True, tunnelling: bool = True, codec: str = "PCMU",
                 tone_hz: float = 1000.0, seconds: float = 4.0, timeout: float = 30.0,
                 amplitude: float = 0.3, dtmf: str = "", h245_listen: bool = False,
                 commands: tuple[Any, ...] = (), video: tuple[int, int, int] | None = None,
                 close_video_after: float | None = None) -> None:
        if codec not in CAPABILITY:
            raise ValueError(f"codec {codec!r}: PCMU or PCMA")
        self.host, self.port, self.meeting = host, port, meeting
        self.alias, self.use_fast_start, self.tunnelling = alias, fast_start, tunnelling
        self.codec, self.tone_hz, self.seconds, self.timeout = codec, tone_hz, seconds, timeout
        self.amplitude = amplitude
        self.dtmf = dtmf
        #: H.245 commands (typed, e.g. ``h245.FlowControlCommand``) sent once media flows.
        self.commands = commands
        self.result = CallerResult()
        self.crv = random.randrange(1, 0x7FFF)
        self.call_id = os.urandom(16)
        self.conf_id = os.urandom(16)
        self.rtp, self.rtcp = _bind_rtp_pair()
        self.local_rtp = ("127.0.0.1", self.rtp.getsockname()[1])
        self.sig: _Framed | None = None
        self.h245_conn: _Framed | None = None
        self.h245_listener: socket.socket | None = None
        if h245_listen and not tunnelling:
            self.h245_listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.h245_listener.bind(("127.0.0.1", 0))
            self.h245_listener.listen(4)
            self.h245_listener.setblocking(False)
            self.result.h245_listen_port = self.h245_listener.getsockname()[1]
        self.h245_started = False
        self.tcs_acked = False
        self.remote_tcs = False
        self.msd_sdn = random.randrange(1 << 24)
        self.olc_sent = False
        self.ended = False
        self.media_started_at: float | None = None
        self.seq = random.randrange(0xFFFF)
        self.ts = random.randrange(1 << 31)
        self.ssrc = random.randrange(1 << 32)
        self.phase = 0
        self.encoder = codec_by_name(codec).encoder()
        self.decoders: dict[int, Any] = {pt: codec_by_name(c).decoder() for c, pt in PAYLOAD_TYPE.items()}
        self.release_sent = False
        # video (session 2), only with ``video``: imported here so audio-only users need no PyAV
        self.video_source: Any = None
        self.video_rtp: socket.socket | None = None
        self.video_rtcp: socket.socket | None = None
        self.remote_video_olc = False
        self.video_olc_sent = False
        #: Seconds of media after which we close our video channel (CloseLogicalChannel, H.245
        #: 8.4.1.3) and stop sending video; None: never.
        self.close_video_after = close_video_after
        self.video_closed = False
        if video is not None:
            from bridge.h264_rtp import H264Depacketizer
            from tests.support.video_room_system import (
                H264PictureSource,
                RoomVideoSender,
            )

            self.video_source = H264PictureSource(video)
            self.video_sender = RoomVideoSender(VIDEO_PT, ssrc=random.randrange(1 << 32))
            self.video_depacketizer = H264Depacketizer()
            self.video_rtp, self.video_rtcp = _bind_rtp_pair()
            self.local_video = ("127.0.0.1", self.video_rtp.getsockname()[1])
            self.video_ts = random.randrange(1 << 31)

    # -- building messages (H.225.0 section 7.3, Q.931 section 4) ---------------------------

    def _q931(self, mtype: MessageType, *ies: Any) -> Q931Message:
        return Q931Message(mtype, self.crv, False, tuple(ies))

    def _send_sig(self, mtype: MessageType, body: Any, *ies: Any, control: tuple[bytes, ...] = ()) -> None:
        assert self.sig is not None
        info = h225.UserInformation(body, h245_tunnelling=self.tunnelling, h245_control=control)
        self.sig.send(self._q931(mtype, *ies).with_user_user(info.encode(role="terminal")).encode())

    def _proposals(self) -> tuple[bytes, ...]:
        """H.323 section 8.1.7.1: a receive proposal (nullData forward, audio reverse with our RTP
        and RTCP) and a transmit proposal (audio forward with our RTCP)."""
        rtp = h245.UnicastAddress(*self.local_rtp)
        rtcp = h245.UnicastAddress(self.local_rtp[0], self.local_rtp[1] + 1)
        media = h245.MediaType("audioData", CAPABILITY[self.codec], 20)
        receive = h245.OpenLogicalChannel(RX_PROPOSAL, h245.LogicalChannelParameters(h245.MediaType("nullData"), 0),
                                          h245.LogicalChannelParameters(media, 1, rtp, rtcp))
        transmit = h245.OpenLogicalChannel(TX_CHANNEL, h245.LogicalChannelParameters(media, 1, None, rtcp, False))
        out = [h245.encode_olc(receive), h245.encode_olc(transmit)]
        if self.video_source is not None:  # the same pair for H.264 in session 2
            vrtp = h245.UnicastAddress(*self.local_video)
            vrtcp = h245.UnicastAddress(self.local_video[0], self.local_video[1] + 1)
            vtype = h245.H264Capability().media_type()
            out.append(h245.encode_olc(h245.OpenLogicalChannel(
                RX_VIDEO_PROPOSAL, h245.LogicalChannelParameters(h245.MediaType("nullData"), 0),
                h245.LogicalChannelParameters(vtype, VIDEO_SESSION, vrtp, vrtcp, None, VIDEO_PT))))
            out.append(h245.encode_olc(h245.OpenLogicalChannel(
                TX_VIDEO, h245.LogicalChannelParameters(vtype, VIDEO_SESSION, None, vrtcp, None, VIDEO_PT))))
        return tuple(out)

    def _setup(self) -> None:
        dest: tuple[Alias, ...] = ()
        ies: list[Any] = [BearerCapability(), Display("roomgate h323 caller")]
        if self.alias == "number":
            ies.append(CalledPartyNumber(self.meeting, 0, 1))
        elif self.alias == "dialledDigits":
            dest = (Alias("dialledDigits", self.meeting),)
        elif self.alias == "h323-ID":
            dest = (Alias("h323-ID", self.meeting),)
        else:
            raise ValueError(f"alias kind {self.alias!r}")
        assert self.sig is not None
        local = self.sig.sock.getsockname()
        body = h225.Setup(
            self.conf_id, self.call_id, destination_address=dest,
            source_address=(Alias("h323-ID", "roomgate-test-caller"),),
            dest_call_signal_address=TransportAddress(self.host, self.port),
            source_call_signal_address=TransportAddress(local[0], local[1]),
            fast_start=self._proposals() if self.use_fast_start else None,
            vendor=h225.VendorInfo(b"roomgate-h323-caller", b"1"),
            h245_address=TransportAddress(*self.h245_listener.getsockname()) if self.h245_listener else None)
        self._send_sig(MessageType.SETUP, body, *ies)

    # -- H.245 as a terminal (H.245 section 8) --------------------------------------------------

    def _send_h245(self, *msgs: Any) -> None:
        pdus = tuple(h245.encode(m) for m in msgs)
        for m in msgs:
            self.result.h245.append("sent:" + (m.to_message().name if not isinstance(m, h245.H245Message) else m.name))
        if self.tunnelling:
            self._send_sig(MessageType.FACILITY, h225.Empty(), control=pdus)
        elif self.h245_conn is not None:
            for pdu in pdus:
                self.h245_conn.send(pdu)

    def _start_h245(self) -> None:
        if self.h245_started:
            return
        self.h245_started = True
        caps = h245.audio_capabilities(((CAPABILITY[self.codec], 20),))
        if self.video_source is not None:  # H.241: H.264 Baseline as a receive capability
            caps += (h245.H264Capability().table_entry(len(caps) + 1),)
        self._send_h245(h245.TerminalCapabilitySet(1, caps), h245.MasterSlaveDetermination(TERMINAL_TYPE, self.msd_sdn))

    def _on_h245(self, data: bytes) -> None:
        for msg in h245.decode_all(data):
            self.result.h245.append(msg.name)
            typed = msg.typed()
            if isinstance(typed, h245.TerminalCapabilitySet):
                self.remote_tcs = True
                self.result.remote_h264 = typed.h264 is not None
                self._send_h245(h245.TerminalCapabilitySetAck(typed.sequence_number))
                self._start_h245()
            elif isinstance(typed, h245.TerminalCapabilitySetAck):
                self.tcs_acked = True
            elif isinstance(typed, h245.MasterSlaveDetermination):
                # H.245 section C.2: larger terminal type wins; we are a terminal (50).
                if typed.terminal_type != TERMINAL_TYPE:
                    ours = "slave" if typed.terminal_type > TERMINAL_TYPE else "master"
                else:
                    diff = (typed.status_determination_number - self.msd_sdn) % (1 << 24)
                    ours = "master" if 0 < diff < (1 << 23) else "slave"
                self._send_h245(h245.MasterSlaveDeterminationAck("slave" if ours == "master" else "master"))
            elif isinstance(typed, h245.OpenLogicalChannel):
                # the callee's channel toward us: ack with where we receive (video: session 2)
                number = typed.forward_logical_channel_number
                if typed.forward.data_type.kind == "videoData":
                    if typed.forward.data_type.codec != "h264" or self.video_source is None:
                        self._send_h245(h245.H245Message("response", "openLogicalChannelReject", {
                            "forwardLogicalChannelNumber": number, "cause": ("dataTypeNotSupported", 0)}))
                        continue
                    self.remote_video_olc = True
                    self._send_h245(h245.OpenLogicalChannelAck(
                        number, VIDEO_SESSION, h245.UnicastAddress(*self.local_video),
                        h245.UnicastAddress(self.local_video[0], self.local_video[1] + 1)))
                    continue
                self._send_h245(h245.OpenLogicalChannelAck(
                    number, 1, h245.UnicastAddress(*self.local_rtp),
                    h245.UnicastAddress(self.local_rtp[0], self.local_rtp[1] + 1)))
            elif isinstance(typed, h245.OpenLogicalChannelAck):
                if typed.forward_logical_channel_number == TX_VIDEO:
                    if typed.media_channel is not None:
                        self.result.video_remote_rtp = (typed.media_channel.host, typed.media_channel.port)
                elif typed.media_channel is not None:
                    self.result.remote_rtp = (typed.media_channel.host, typed.media_channel.port)
                    self.result.codec = self.codec
            elif isinstance(typed, h245.UserInputIndication):
                if typed.signal is not None:
                    self.result.user_input.append(("signal", typed.signal, typed.duration))
                else:
                    self.result.user_input.append(("alphanumeric", typed.alphanumeric or "", None))
            elif isinstance(typed, h245.VideoFastUpdatePicture):
                # H.323 section 8.7.1: the callee lost our picture; the next one is an IDR
                self.result.fast_updates.append((time.time(), typed.logical_channel_number))
                if self.video_source is not None:
                    self.video_source.request_keyframe()
            elif isinstance(typed, h245.CloseLogicalChannel):
                self.result.closed_channels.append(typed.forward_logical_channel_number)
                self._send_h245(h245.H245Message("response", "closeLogicalChannelAck", {
                    "forwardLogicalChannelNumber": typed.forward_logical_channel_number}))
            elif isinstance(typed, h245.EndSessionCommand):
                if not self.ended:
                    self.ended = True
                    self._send_h245(h245.EndSessionCommand())
                self._release("undefinedReason", "callee")
        if not self.result.fast_start_accepted and self.tcs_acked and self.remote_tcs and not self.olc_sent:
            self.olc_sent = True
            self._send_h245(h245.OpenLogicalChannel(TX_CHANNEL, h245.LogicalChannelParameters(
                h245.MediaType("audioData", CAPABILITY[self.codec], 20), 1, None,
                h245.UnicastAddress(self.local_rtp[0], self.local_rtp[1] + 1), False)))
            if self.video_source is not None and self.result.remote_h264 and not self.video_olc_sent:
                # H.245 section 8.4: our H.264 channel, only toward a callee that receives H.264
                self.video_olc_sent = True
                self._send_h245(h245.OpenLogicalChannel(TX_VIDEO, h245.LogicalChannelParameters(
                    h245.H264Capability().media_type(), VIDEO_SESSION, None,
                    h245.UnicastAddress(self.local_video[0], self.local_video[1] + 1), None, VIDEO_PT)))

    def _connect_h245(self, addr: tuple[str, int]) -> None:
        if self.h245_conn is not None or self.tunnelling:
            return
        sock = socket.create_connection(addr, timeout=5)
        sock.setblocking(False)
        self.h245_conn = _Framed(sock)
        self.result.h245_local_port = sock.getsockname()[1]
        self._start_h245()

    def _accept_h245(self) -> None:
        """The gateway connected to our H.245 listener: the first connection is the call's H.245,
        any further one is counted and closed (only one must ever come)."""
        assert self.h245_listener is not None
        try:
            sock, _ = self.h245_listener.accept()
        except BlockingIOError:
            return
        self.result.h245_accepted += 1
        if self.h245_conn is not None:
            sock.close()
            return
        sock.setblocking(False)
        self.h245_conn = _Framed(sock)
        self._start_h245()

    # -- call signalling --------------------------------------------------------------------

    def _on_signalling(self, payload: bytes) -> None:
        msg = q931.parse(payload)
        self.result.call_reference_flags.append(msg.flag)
        info = h225.decode(msg.user_user) if msg.user_user is not None else None
        self.result.messages.append(f"{msg.message_type.name}:{info.message if info else '-'}")
        body = info.body if info is not None else None
        for element in getattr(body, "fast_start", None) or ():
            olc = h245.decode_olc(element)
            if olc.forward.data_type.kind == "videoData" and olc.forward.media_channel is not None:
                mc = olc.forward.media_channel  # the callee accepted our H.264 transmit proposal
                self.result.video_remote_rtp = (mc.host, mc.port)
            elif olc.forward.data_type.kind == "audioData" and olc.forward.media_channel is not None:
                mc = olc.forward.media_channel
                self.result.remote_rtp = (mc.host, mc.port)
                self.result.fast_start_accepted = True
                self.result.codec = next(k for k, v in CAPABILITY.items() if v == olc.forward.data_type.codec)
        if getattr(body, "fast_connect_refused", False):
            self.result.fast_connect_refused = True
        addr = getattr(body, "h245_address", None)
        if addr is not None:
            self.result.h245_address = (addr.host, addr.port)
            self._connect_h245((addr.host, addr.port))
        if info is not None and info.h245_control:
            for element in info.h245_control:
                self._on_h245(element)
        if msg.message_type is MessageType.CONNECT:
            self.result.connected = True
            if self.tunnelling:
                self._start_h245()
        elif msg.message_type is MessageType.RELEASE_COMPLETE:
            self.result.release_reason = body.reason if isinstance(body, h225.ReleaseComplete) else None
            self.result.release_cause = msg.cause.value if msg.cause is not None else None
            self.result.release_display = msg.display.text if msg.display is not None else None
            self.result.released_by = self.result.released_by or "callee"
            self.ended = True
            if self.sig is not None:
                self.sig.open = False

    def _release(self, reason: str, by: str) -> None:
        if self.release_sent or self.sig is None or not self.sig.open:
            return
        self.release_sent = True
        self.result.released_by = self.result.released_by or by
        control: tuple[bytes, ...] = ()
        if not self.ended and self.h245_started:
            self.ended = True
            end = h245.encode(h245.EndSessionCommand())
            self.result.h245.append("sent:endSessionCommand")
            if self.tunnelling:
                control = (end,)
            elif self.h245_conn is not None:
                self.h245_conn.send(end)
        self._send_sig(MessageType.RELEASE_COMPLETE, h225.ReleaseComplete(reason, self.call_id),
                       Cause(16), control=control)

    # -- media (RFC 3550) ---------------------------------------------------------------------

    def _send_rtp(self) -> None:
        assert self.result.remote_rtp is not None
        t = (self.phase + np.arange(160)) / 8000.0
        self.phase += 160
        pcm = (np.sin(2 * np.pi * self.tone_hz * t) * self.amplitude * 32767).astype(np.int16)
        header = bytes([0x80, PAYLOAD_TYPE[self.codec]]) + self.seq.to_bytes(2, "big") + \
            self.ts.to_bytes(4, "big") + self.ssrc.to_bytes(4, "big")
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 160) & 0xFFFFFFFF
        self.rtp.sendto(header + self.encoder.encode(pcm), self.result.remote_rtp)
        self.result.rtp_out += 1

    def _send_video(self) -> None:
        """One picture as H.264 RTP (RFC 6184, 90 kHz clock) to where the callee takes it."""
        assert self.video_rtp is not None and self.result.video_remote_rtp is not None
        unit = self.video_source.next_unit()
        if unit is None:
            return
        if unit.keyframe:
            self.result.idrs_sent.append(time.time())
        for data in self.video_sender.datagrams(unit, self.video_ts):
            self.video_rtp.sendto(data, self.result.video_remote_rtp)
            self.result.video_packets_sent += 1
        self.result.video_units_sent += 1

    def _receive_video(self) -> None:
        """The callee's H.264 RTP, depacketized into access units (kept with arrival time)."""
        from bridge.h264_rtp import H264Error
        from bridge.rtp import RtpError, RtpPacket, looks_like_rtcp

        assert self.video_rtp is not None
        while True:
            try:
                data, _ = self.video_rtp.recvfrom(65536)
            except BlockingIOError:
                return
            if looks_like_rtcp(data):
                continue
            try:
                units = self.video_depacketizer.push(RtpPacket.parse(data))
            except (RtpError, H264Error):
                continue
            self.result.video_packets_in += 1
            now = time.time()
            self.result.video_received += [(now, u) for u in units]

    def _receive_rtp(self) -> None:
        while True:
            try:
                data, _ = self.rtp.recvfrom(4096)
            except BlockingIOError:
                return
            if len(data) < 12 or data[0] >> 6 != 2:
                continue
            pt = data[1] & 0x7F
            cc = data[0] & 0x0F
            payload = data[12 + 4 * cc:]
            dec = self.decoders.get(pt)
            if dec is None:
                continue
            self.result.rtp_in += 1
            self.result.pcm.append(np.asarray(dec.decode(payload), dtype=np.int16))

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> CallerResult:
        deadline = time.monotonic() + self.timeout
        try:
            sock = socket.create_connection((self.host, self.port), timeout=5)
            sock.setblocking(False)
            self.sig = _Framed(sock)
            self.result.signalling_port = sock.getsockname()[1]
            self._setup()
            next_rtp = None
            next_video: float | None = None
            release_at = None
            while time.monotonic() < deadline:
                if self.sig is None or not self.sig.open:
                    break
                now = time.monotonic()
                if self.result.connected and self.result.remote_rtp is not None:
                    if self.media_started_at is None:
                        self.media_started_at = now
                        next_rtp = now
                        release_at = now + self.seconds
                        if self.dtmf and self.h245_started:
                            # H.323 section 10.5: DTMF as userInputIndication (signal), 100 ms each
                            self._send_h245(*(h245.UserInputIndication(signal=d, duration=100) for d in self.dtmf))
                        if self.commands and self.h245_started:
                            self._send_h245(*self.commands)
                    while next_rtp is not None and now >= next_rtp:
                        self._send_rtp()
                        next_rtp += 0.02
                    if self.close_video_after is not None and not self.video_closed and self.h245_started \
                            and self.media_started_at is not None \
                            and now >= self.media_started_at + self.close_video_after:
                        self.video_closed = True
                        self._send_h245(h245.CloseLogicalChannel(TX_VIDEO))
                    if self.video_source is not None and self.result.video_remote_rtp is not None \
                            and not self.video_closed:
                        next_video = now if next_video is None else next_video
                        if now >= next_video:
                            self._send_video()
                            next_video = max(next_video + 1 / self.video_source.fps, now - 0.1)
                    if release_at is not None and now >= release_at:
                        self._release("undefinedReason", "caller")
                        # Wait a moment for the callee's endSessionCommand/ReleaseComplete.
                        self._drain(time.monotonic() + 1.0)
                        break
                wait = 0.005 if next_rtp is not None else 0.05
                socks = [s for s in (self.sig.sock if self.sig.open else None,
                                     self.h245_conn.sock if self.h245_conn and self.h245_conn.open else None,
                                     self.rtp, self.h245_listener, self.video_rtp) if s is not None]
                readable, _, _ = select.select(socks, [], [], wait)
                self._read(readable)
            else:
                self.result.error = "timeout"
                self._release("undefinedReason", "caller-timeout")
        except (OSError, H323Error) as exc:
            self.result.error = f"{type(exc).__name__}: {exc}"
        finally:
            for s in (self.sig.sock if self.sig else None, self.h245_conn.sock if self.h245_conn else None,
                      self.rtp, self.rtcp, self.h245_listener, self.video_rtp, self.video_rtcp):
                if s is not None:
                    s.close()
        return self.result

    def _read(self, readable: list[socket.socket]) -> None:
        for s in readable:
            if s is self.rtp:
                self._receive_rtp()
            elif self.video_rtp is not None and s is self.video_rtp:
                self._receive_video()
            elif self.h245_listener is not None and s is self.h245_listener:
                self._accept_h245()
            elif self.sig is not None and s is self.sig.sock:
                try:
                    payloads = self.sig.read()
                except (ConnectionError, BlockingIOError):
                    payloads = []
                    self.sig.open = False
                for p in payloads:
                    self._on_signalling(p)
            elif self.h245_conn is not None and s is self.h245_conn.sock:
                try:
                    payloads = self.h245_conn.read()
                except (ConnectionError, BlockingIOError):
                    payloads = []
                    self.h245_conn.open = False
                for p in payloads:
                    self._on_h245(p)

    def _drain(self, until: float) -> None:
        while time.monotonic() < until and self.sig is not None and self.sig.open:
            socks = [s for s in (self.sig.sock, self.h245_conn.sock if self.h245_conn and self.h245_conn.open else None,
                                 self.rtp, self.video_rtp) if s is not None]
            readable, _, _ = select.select(socks, [], [], 0.05)
            self._read(readable)


def run_h323_call(host: str, port: int, meeting: str, **kwargs: Any) -> CallerResult:
    """Place one call (see :class:`H323Caller` for the keyword arguments) and return its result."""
    return H323Caller(host, port, meeting, **kwargs).run()


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("meeting")
    p.add_argument("--no-fast-start", action="store_true")
    p.add_argument("--no-tunnelling", action="store_true")
    p.add_argument("--codec", default="PCMU")
    p.add_argument("--alias", default="number")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--h245-listen", action="store_true", help="offer our own H.245 address in Setup")
    a = p.parse_args(argv)
    result = run_h323_call(a.host, a.port, a.meeting, fast_start=not a.no_fast_start,
                           tunnelling=not a.no_tunnelling, codec=a.codec, alias=a.alias, seconds=a.seconds,
                           h245_listen=a.h245_listen)
    print(json.dumps(result.as_dict(), default=str))
    return 0 if result.connected else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
