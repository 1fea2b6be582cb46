"""The legacy leg: one call's RTP audio toward a SIP/H.323 endpoint, plain or SDES-SRTP.

Split the aioquic way: :class:`RtpInbound` (source latching, payload-type check,
decode, DTMF), :class:`RtpOutbound` (packetiser) and :class:`FrameClock`
(20 ms pacing) are sans-IO and unit-tested with no sockets; :class:`LegacyAudioLeg`
only moves datagrams between them and an asyncio UDP endpoint (Twisted runs on
the same asyncio loop, so the loop's own datagram transport is the lightest path).

Source latching (no RTP bleed): only packets from the IP address the SDP named
are considered; the first valid one fixes the (IP, port) and from then on
anything else is dropped and counted. Until the first packet is accepted we send to the
SDP-named address and port (RFC 3264 section 5); once latched we send back to where the
packets come from (symmetric RTP, RFC 4961 section 3), so a caller behind NAT -- whose SDP
names a private address or a port its NAT does not keep -- still hears us.
With SRTP the latch needs no SDP address match: only a packet that authenticates with the
keys from the offer can latch (RFC 3711 section 3.3), so the first *authenticated* source
wins wherever it comes from.  Plain RTP proves nothing, so it still latches only from the
SDP-named IP (any port): taking any first source would let a stranger capture the stream
(RTP bleed).

With SDES keys (``srtp=``, a :class:`bridge.srtp.SdesSrtp`) every packet is SRTP (RFC 3711):
inbound packets are authenticated and decrypted before anything else looks at them, so only
an authenticated packet can latch the source; authentication failures and replays are
dropped and counted apart (``dropped_srtp_auth``, ``dropped_srtp_replay``). Outbound packets
are protected as they are built. RTCP multiplexed on the RTP port (RFC 5761) is SRTCP then.

Inbound audio is not decoded on arrival: :class:`RtpInbound` files it in a
:class:`bridge.jitter.JitterBuffer` and the leg's 20 ms clock pulls, decodes (or conceals) and
delivers one frame per tick. RTCP (RFC 3550) runs on RTP port + 1 (or muxed on the RTP port when
the peer does that): :class:`bridge.rtcp_reporter.RtcpReporter` builds our SR/RR + SDES and
reads the peer's reports (RTT, its view of our stream); inbound RTCP is latched like RTP.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import structlog

from bridge.codecs import (
    AudioCodec,
    AudioDecoder,
    AudioEncoder,
    CodecError,
    PcmFifo,
    silence,
)
from bridge.dtmf_sender import DEFAULT_DURATION_MS, DtmfError, DtmfSender
from bridge.jitter import Concealer, JitterBuffer
from bridge.latch import Address, SourceLatch
from bridge.ports import PortLease
from bridge.rtcp import RawRtcp, ReceiverStatistics, RtcpError
from bridge.rtcp_reporter import RtcpReporter, SenderSnapshot
from bridge.rtp import DtmfReceiver, RtpError, RtpPacket, looks_like_rtcp, seq_newer
from bridge.srtp import SdesSrtp, SrtpDropped

log = structlog.get_logger("bridge.legacy_leg")

#: How much PCM the outbound FIFO may hold before the oldest goes (delay never grows past this).
OUTBOUND_MAX_MS = 200
#: A clock that falls further behind than this skips frames instead of bursting them out.
MAX_CLOCK_LAG = 0.1
#: At most one ``bridge.rtp.dropped`` line per leg per this many seconds.
DROP_LOG_INTERVAL = 5.0


@dataclass
class LegCounters:
    """Every counter of the legacy leg, declared once. ``packets_in``/``bytes_in`` count accepted
    packets only; each dropped packet is counted in exactly one ``dropped_*`` field."""

    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    dropped_wrong_source: int = 0
    dropped_bad_packet: int = 0
    dropped_wrong_pt: int = 0
    dropped_late: int = 0
    #: SRTP/SRTCP packets whose authentication (or AEAD) check failed: tampered or wrongly keyed.
    dropped_srtp_auth: int = 0
    #: SRTP/SRTCP packets libsrtp's replay window refused (RFC 3711 3.3.2).
    dropped_srtp_replay: int = 0
    #: Sequence-number gaps in the accepted stream (RFC 3550 A.3 style): packets that never came,
    #: or came too late to play. Counted so the control API can show loss per participant.
    packets_lost: int = 0
    rtcp_in: int = 0
    dtmf_events: int = 0
    clock_skipped_frames: int = 0
    outbound_overflow_samples: int = 0

    @property
    def dropped(self) -> int:
        return (self.dropped_wrong_source + self.dropped_bad_packet + self.dropped_wrong_pt
                + self.dropped_late + self.dropped_srtp_auth + self.dropped_srtp_replay)

    def as_dict(self) -> dict[str, int]:
        d = asdict(self)
        d["dropped"] = self.dropped
        return d


class RtpInbound:
    """Receive side of the leg, sans-IO: ``receive(data, addr)`` returns decoded PCM or None.

    Accepts the negotiated audio payload type and (if negotiated) telephone-event;
    every refusal is counted in ``counters`` by its reason.  With ``srtp`` each packet is
    unprotected first (SRTP, or SRTCP for multiplexed RTCP).
    """

    def __init__(
        self,
        *,
        remote_address: str,
        payload_type: int,
        decoder: AudioDecoder,
        counters: LegCounters,
        telephone_event_pt: int | None = None,
        on_dtmf: Callable[[str], None] | None = None,
        srtp: SdesSrtp | None = None,
        latch_any_source: bool | None = None,
        jitter: JitterBuffer | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_rtcp: Callable[[bytes], None] | None = None,
        remote_port: int | None = None,
    ) -> None:
        self.srtp = srtp
        #: Source latching (:mod:`bridge.latch`); the first accepted packet may come from any IP
        #: with SRTP only by default (acceptance means it authenticated, RFC 3711 3.3).
        self.source = SourceLatch(remote_address, leg="legacy", remote_port=remote_port,
                                  any_source=srtp is not None if latch_any_source is None else latch_any_source)
        self.payload_type = payload_type
        self.telephone_event_pt = telephone_event_pt
        self.counters = counters
        self._decoder = decoder
        self._dtmf = DtmfReceiver(on_dtmf)
        self._ssrc: int | None = None
        self._last_seq: int | None = None
        self.last_drop_reason: str | None = None
        #: With a jitter buffer, audio payloads are filed there (reordering is repaired, late
        #: and duplicate packets are dropped as ``late``) and the leg's clock pulls them;
        #: without one, ``receive`` decodes and returns each packet as it arrives.
        self.jitter = jitter
        self._clock = clock
        #: RFC 3550 A.1/A.3/A.8 reception statistics of the latched stream (for our RTCP
        #: report blocks and ``packets_lost``); replaced when the SSRC changes.
        self.rx_stats: ReceiverStatistics | None = None
        #: Plain (already unprotected) RTCP compounds from the latched source, either port.
        self.on_rtcp = on_rtcp
        #: Where the peer's accepted RTCP came from: its RTCP port's address, or (RFC 5761 mux)
        #: its RTP port -- where our reports go back to.
        self.rtcp_source: Address | None = None
        self.rtcp_muxed = False
        #: Set by the fast path (:mod:`bridge.fastpath`): accepted audio packets go here,
        #: bypassing the jitter buffer and decoder.
        self.on_passthrough: Callable[[RtpPacket], None] | None = None

    @property
    def on_dtmf(self) -> Callable[[str], None] | None:
        return self._dtmf.on_digit

    @on_dtmf.setter
    def on_dtmf(self, callback: Callable[[str], None] | None) -> None:
        self._dtmf.on_digit = callback

    def _drop(self, reason: str) -> None:
        setattr(self.counters, f"dropped_{reason}", getattr(self.counters, f"dropped_{reason}") + 1)
        self.last_drop_reason = reason

    def _srtp_drop(self, exc: SrtpDropped) -> None:
        self._drop({"auth": "srtp_auth", "replay": "srtp_replay"}.get(exc.reason, "bad_packet"))

    @property
    def latched(self) -> Address | None:
        """The peer's address once latched (:attr:`bridge.latch.SourceLatch.latched`)."""
        return self.source.latched

    @latched.setter
    def latched(self, addr: Address | None) -> None:
        self.source.latched = addr

    @property
    def latch_any_source(self) -> bool:
        return self.source.any_source

    @property
    def clock_rate(self) -> int:
        """RTP clock of the audio (8000 for every legacy codec; the jitter buffer's when it has one)."""
        return self.jitter.clock_rate if self.jitter is not None else 8000

    def _rtcp(self, data: bytes) -> bool:
        """An RTCP datagram from an accepted source: SRTCP-unprotect (RFC 3711 3.4), count, hand
        on; False when it did not authenticate."""
        if self.srtp is not None:
            try:
                data = self.srtp.unprotect_rtcp(data)
            except SrtpDropped as exc:
                self._srtp_drop(exc)
                return False
        self.counters.rtcp_in += 1
        if self.on_rtcp is not None:
            self.on_rtcp(data)
        return True

    def receive_rtcp(self, data: bytes, addr: Address) -> None:
        """One datagram on the RTCP port (RTP port + 1, RFC 3550 11): once the RTP stream is
        latched, only from the latched IP (any port: RTCP comes from the peer's RTCP port); before
        that, by the same rule as RTP before latching (the SDP-named IP, or with SDES any source
        that authenticates), since peers may report before our first packet reaches them. A
        stranger cannot feed us reports; with SDES every report must authenticate."""
        if not self.source.accepts_rtcp(addr):
            self._drop("wrong_source")
            return
        if not looks_like_rtcp(data):
            self._drop("bad_packet")
            return
        if self._rtcp(data):
            self.rtcp_source = (addr[0], addr[1])

    def receive(self, data: bytes, addr: Address) -> np.ndarray | None:
        """One datagram from ``addr``: decoded PCM for an accepted audio packet (None with a
        jitter buffer, which files it for the clock to pull), else None."""
        if not self.source.accepts(addr):
            self._drop("wrong_source")
            return None
        if looks_like_rtcp(data):
            if self._rtcp(data):
                self.rtcp_muxed = True
            return None
        if self.srtp is not None:
            try:
                data = self.srtp.unprotect(data)
            except SrtpDropped as exc:
                self._srtp_drop(exc)
                return None
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            self._drop("bad_packet")
            return None
        pt = packet.payload_type
        if pt != self.payload_type and (self.telephone_event_pt is None or pt != self.telephone_event_pt):
            self._drop("wrong_pt")
            return None
        seq, last_seq = packet.sequence_number, self._last_seq
        if packet.ssrc != self._ssrc:  # new stream (first packet, or the endpoint restarted it)
            self._ssrc = packet.ssrc
            self._last_seq = last_seq = None
            self.rx_stats = ReceiverStatistics(ssrc=packet.ssrc, clock_rate=self.clock_rate)
        newer = last_seq is None or seq_newer(seq, last_seq)
        if not newer and self.jitter is None:
            self._drop("late")  # duplicate or reordered behind a newer one (no jitter buffer)
            return None
        if pt == self.payload_type and self.on_passthrough is not None:
            self.on_passthrough(packet)  # the fast path relays it undecoded (bridge.fastpath)
            pcm = None
        elif pt == self.payload_type and self.jitter is not None:
            now = self._clock()
            if self.jitter.put(packet.sequence_number, packet.timestamp, packet.ssrc, packet.payload,
                               now) in ("late", "duplicate"):
                self._drop("late")
                return None
            pcm = None
        elif pt == self.payload_type:
            try:
                pcm = self._decoder.decode(packet.payload)
            except CodecError:
                self._drop("bad_packet")
                return None
        else:
            try:
                self._dtmf.receive(packet)
            except RtpError:
                self._drop("bad_packet")
                return None
            self.counters.dtmf_events = self._dtmf.events
            pcm = None
        if self.source.latched is None:
            self.source.latch(addr, authenticated=self.srtp is not None)
        assert self.rx_stats is not None
        self.rx_stats.update(seq, packet.timestamp, self._clock())
        counters = self.counters
        if self.jitter is not None:
            counters.packets_lost = max(0, self.rx_stats.cumulative_lost)
        elif newer and last_seq is not None:
            counters.packets_lost += ((seq - last_seq) & 0xFFFF) - 1
        if newer:
            self._last_seq = seq
        counters.packets_in += 1
        counters.bytes_in += len(data)
        return pcm


class RtpOutbound:
    """Send side, sans-IO: one 20 ms PCM frame in, one RTP datagram out.

    Our own SSRC, sequence number and timestamp start at random values (RFC 3550
    section 5.1); the marker is set on the first packet of the talkspurt, which
    for a continuous (no-VAD) sender is only the first packet.  With ``srtp`` the datagram
    returned is the SRTP packet (RFC 3711 3.3).
    """

    def __init__(self, *, payload_type: int, timestamp_step: int, encoder: AudioEncoder,
                 ssrc: int | None = None, sequence_number: int | None = None,
                 timestamp: int | None = None, srtp: SdesSrtp | None = None) -> None:
        rnd = random.SystemRandom()
        self.payload_type = payload_type
        self.timestamp_step = timestamp_step
        self.ssrc = rnd.getrandbits(32) if ssrc is None else ssrc
        self.sequence_number = rnd.getrandbits(16) if sequence_number is None else sequence_number
        self.timestamp = rnd.getrandbits(32) if timestamp is None else timestamp
        self._encoder = encoder
        self._first = True
        self.srtp = srtp
        self.octets = 0
        #: RFC 4733 events to interleave (:meth:`LegacyAudioLeg.send_dtmf`); None: no telephone-event.
        self.dtmf: DtmfSender | None = None

    def skip(self, frames: int) -> None:
        """Frames that were never sent still took time: the timestamp moves on, the sequence does not."""
        self.timestamp = (self.timestamp + frames * self.timestamp_step) & 0xFFFFFFFF

    def packet(self, pcm: np.ndarray) -> bytes:
        """This tick's datagram: a queued DTMF event packet in place of the audio (see
        :mod:`bridge.dtmf_sender`: same sequence, this stream's timestamp), else ``pcm`` encoded."""
        event = self.dtmf.tick(self.timestamp) if self.dtmf is not None else None
        data = bytes(RtpPacket(
            payload_type=self.payload_type,
            sequence_number=self.sequence_number,
            timestamp=self.timestamp,
            ssrc=self.ssrc,
            payload=self._encoder.encode(pcm),
            marker=self._first,
        ) if event is None else RtpPacket(
            payload_type=event.payload_type,
            sequence_number=self.sequence_number,
            timestamp=event.timestamp,
            ssrc=self.ssrc,
            payload=event.payload,
            marker=event.marker,
        ))
        self._first = False
        self.sequence_number = (self.sequence_number + 1) & 0xFFFF
        self.timestamp = (self.timestamp + self.timestamp_step) & 0xFFFFFFFF
        self.octets += len(data) - 12  # payload octets, for the SR's sender octet count (RFC 3550 6.4.1)
        return self.srtp.protect(data) if self.srtp is not None else data


class FrameClock:
    """Deadlines of a fixed-period sender on absolute time, so scheduling jitter never drifts the rate.

    ``due(now)`` says how many frames to send now and how many to skip: a short
    stall is caught up (the receiver's jitter buffer absorbs a small burst); a
    stall longer than ``max_lag`` skips the missed frames instead of flooding.
    """

    def __init__(self, start: float, period: float = 0.02, max_lag: float = MAX_CLOCK_LAG) -> None:
        self.period = period
        self.max_lag = max_lag
        self.next_deadline = start

    def due(self, now: float) -> tuple[int, int]:
        """(frames to send now, frames skipped) at time ``now``."""
        if now < self.next_deadline:
            return 0, 0
        late = int((now - self.next_deadline) // self.period) + 1
        skipped = 0
        if (late - 1) * self.period > self.max_lag:
            skipped, late = late - 1, 1
        self.next_deadline += (late + skipped) * self.period
        return late, skipped


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, leg: LegacyAudioLeg) -> None:
        self._leg = leg

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._leg._datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer not yet listening: normal at call start, not fatal.
        log.debug("bridge.rtp.socket_error", error=str(exc))


class _RtcpProtocol(_Protocol):
    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._leg._rtcp_datagram_received(data, addr)


class LegacyAudioLeg:
    """One call's RTP endpoint toward the legacy side, on a port lease from :class:`PortAllocator`.

    Inbound PCM (at the codec's sample rate, 20 ms blocks) goes to ``on_audio``;
    outbound PCM comes in through :meth:`push_audio` and is sent on the leg's own
    20 ms clock, silence whenever the FIFO is short.
    """

    def __init__(
        self,
        *,
        lease: PortLease,
        codec: AudioCodec,
        payload_type: int,
        remote_address: str,
        remote_port: int,
        telephone_event_pt: int | None = None,
        on_audio: Callable[[np.ndarray], None] | None = None,
        on_dtmf: Callable[[str], None] | None = None,
        srtp: SdesSrtp | None = None,
    ) -> None:
        self.lease = lease
        self.srtp = srtp
        self.codec = codec
        self.remote = (remote_address, remote_port)
        self.counters = LegCounters()
        self.on_audio = on_audio
        #: Inbound audio waits here until the 20 ms clock pulls it (reorder, adapt, conceal).
        self.jitter = JitterBuffer(clock_rate=codec.clock_rate, frame_ticks=codec.timestamp_step)
        self._concealer = Concealer(codec.samples_per_frame)
        self.inbound = RtpInbound(remote_address=remote_address, remote_port=remote_port,
                                  payload_type=payload_type,
                                  decoder=codec.decoder(), counters=self.counters,
                                  telephone_event_pt=telephone_event_pt, on_dtmf=on_dtmf,
                                  srtp=srtp, jitter=self.jitter, on_rtcp=self._rtcp_received)
        self.outbound = RtpOutbound(payload_type=payload_type, timestamp_step=codec.timestamp_step,
                                    encoder=codec.encoder(), srtp=srtp)
        # CNAME (RFC 3550 6.5.1): random per leg, so it names no host, user or address.
        self.rtcp = RtcpReporter(ssrc=self.outbound.ssrc, clock_rate=codec.clock_rate,
                                 cname=f"roomgate-{random.SystemRandom().getrandbits(64):016x}")
        #: Packet types our RTCP handling does not interpret (RTPFB/PSFB feedback, APP, XR).
        self.on_rtcp_feedback: Callable[[list[RawRtcp]], None] | None = None
        self._rtcp_transport: asyncio.DatagramTransport | None = None
        self._rtcp_timer: asyncio.TimerHandle | None = None
        #: Inbound frames the clock owes after a stall, pulled one per loop iteration (_play_next).
        self._play_owed = 0
        self._play_scheduled = False
        self._set_dtmf_payload_type(telephone_event_pt)
        # Capped at OUTBOUND_MAX_MS; a backlog standing above one frame is shed (bridge.backlog).
        self.fifo = PcmFifo(codec.sample_rate * OUTBOUND_MAX_MS // 1000, target_samples=codec.samples_per_frame,
                            name="bridge.legacy_outbound")
        self._silence = silence(codec.samples_per_frame)
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._clock: FrameClock | None = None
        self._closed = False
        self._last_drop_log = float("-inf")
        self._dropped_at_last_log = 0
        #: False while the peer holds the call (``sendonly``/``inactive``): nothing is sent.
        self.sending = True
        #: True on the fast path (:meth:`relay`): no 20 ms clock, no decode.
        self.relaying = False

    @property
    def local_port(self) -> int:
        return self.lease.rtp_port

    @property
    def destination(self) -> Address:
        """Where our RTP goes: the latched source once there is one (symmetric RTP, RFC 4961 3),
        else the SDP-named ``remote`` (RFC 3264 5)."""
        return self.inbound.source.destination(self.remote)

    @property
    def started(self) -> bool:
        """Whether :meth:`start` ran (the socket is on the loop and the clock ticks)."""
        return self._transport is not None

    async def start(self) -> None:
        """Attach the bound socket to the loop and start the outbound 20 ms clock."""
        if self._closed:
            raise RuntimeError("legacy leg already closed")
        loop = asyncio.get_running_loop()
        self._loop = loop
        pair = await self.lease.attach(lambda: _Protocol(self), lambda: _RtcpProtocol(self))
        if pair is None:
            return  # closed while attaching (the caller hung up): the lease closed both
        self._transport, self._rtcp_transport = pair  # type: ignore[assignment]
        self._clock = FrameClock(loop.time())
        self._tick()
        # RFC 3550 6.2: the first report after half an interval.
        self._rtcp_timer = loop.call_later(self.rtcp.next_interval() / 2, self._send_rtcp)
        log.info("bridge.leg.up", leg="legacy", codec=self.codec.name, local_port=self.local_port,
                 encryption=self.encryption, srtp_suite=self.srtp.suite if self.srtp else None)

    def push_audio(self, pcm: np.ndarray) -> None:
        """PCM at the codec's sample rate for the endpoint to hear (any length; queued, bounded)."""
        self.fifo.push(pcm)
        self.counters.outbound_overflow_samples = self.fifo.dropped_samples

    @property
    def can_send_dtmf(self) -> bool:
        """Whether the peer negotiated telephone-event (RFC 4733), i.e. :meth:`send_dtmf` works."""
        return self.outbound.dtmf is not None

    def send_dtmf(self, digits: str, duration_ms: int = DEFAULT_DURATION_MS) -> int:
        """Queue ``digits`` (0-9 * # A-D) as RFC 4733 events on this leg's own RTP clock
        (:mod:`bridge.dtmf_sender`); returns how many were queued. :class:`DtmfError` when the
        peer has no telephone-event or the digits/duration are refused (nothing is queued then).
        Logs a count, never the digits: they may be a PIN."""
        if self.outbound.dtmf is None:
            raise DtmfError("the peer did not negotiate telephone-event (RFC 4733)")
        queued = self.outbound.dtmf.queue(digits, duration_ms)
        log.info("bridge.dtmf.queued", leg="legacy", local_port=self.local_port, count=queued,
                 pending=self.outbound.dtmf.pending, duration_ms=duration_ms)
        return queued

    def _set_dtmf_payload_type(self, telephone_event_pt: int | None) -> None:
        """Keep the outbound DTMF sender in step with the negotiated telephone-event PT."""
        if telephone_event_pt is None:
            self.outbound.dtmf = None
        elif self.outbound.dtmf is not None:
            self.outbound.dtmf.payload_type = telephone_event_pt
        else:
            self.outbound.dtmf = DtmfSender(payload_type=telephone_event_pt, clock_rate=self.codec.clock_rate,
                                            packet_ticks=self.codec.timestamp_step)

    def relay(self, on_packet: Callable[[RtpPacket], None]) -> None:
        """Switch to the fast path (:mod:`bridge.fastpath`): accepted audio packets go to
        ``on_packet`` undecoded and the 20 ms clock stops (outbound packets then come only
        through :meth:`send_relayed`, paced by the core)."""
        self.inbound.on_passthrough = on_packet
        self.relaying = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def send_relayed(self, data: bytes, *, next_sequence: int, next_timestamp: int) -> None:
        """Send one relayed plain RTP packet of our stream (protected here when SDES) and keep
        the outbound state and the counters the RTCP SR reports (RFC 3550 6.4.1) in step."""
        if self._closed or self._transport is None:
            return
        self.outbound.sequence_number, self.outbound.timestamp = next_sequence, next_timestamp
        self.outbound.octets += len(data) - 12
        if self.srtp is not None:
            data = self.srtp.protect(data)
        self._transport.sendto(data, self.destination)
        self.counters.packets_out += 1
        self.counters.bytes_out += len(data)

    def _tick(self) -> None:
        if (self._closed or self._loop is None or self._clock is None or self._transport is None
                or self.relaying):
            return
        send, skipped = self._clock.due(self._loop.time())
        if skipped:
            self.counters.clock_skipped_frames += skipped
            self.outbound.skip(skipped)
        self._play_owed += send
        if not self._play_scheduled:
            self._play_next()
        n = self.codec.samples_per_frame
        for _ in range(send):
            pcm = self.fifo.pop(n)
            if not self.sending:  # on hold (RFC 3264 8.4): time passes, nothing is sent
                self.outbound.skip(1)
                continue
            data = self.outbound.packet(self._silence if pcm is None else pcm)
            self._transport.sendto(data, self.destination)
            self.counters.packets_out += 1
            self.counters.bytes_out += len(data)
        self._timer = self._loop.call_at(self._clock.next_deadline, self._tick)

    def _play_next(self) -> None:
        """Play one owed frame; more owed ones follow one per loop iteration (``call_soon``).

        After a stall the clock owes several frames at once. Pulled all at once they would find
        the packets that piled up meanwhile still unread (asyncio reads one datagram per socket
        per iteration) and call them late; one pull per iteration interleaves with those reads.
        Time lost beyond ``MAX_CLOCK_LAG`` (skipped frames) is not pulled at all: the playout
        point falls behind and the buffer's bound and adaptation take that delay back.
        """
        self._play_scheduled = False
        if self._closed or self._loop is None or self._play_owed <= 0:
            return
        self._play_owed -= 1
        self._play(self._loop.time())
        if self._play_owed > 0:
            self._play_scheduled = True
            self._loop.call_soon(self._play_next)

    def _play(self, now: float) -> None:
        """Pull one tick from the jitter buffer and deliver it decoded, or concealed."""
        for frame in self.jitter.pull(now):
            pcm: np.ndarray | None = None
            if frame.kind == "audio":
                try:
                    pcm = self.inbound._decoder.decode(frame.payload)
                except CodecError:
                    self.counters.dropped_bad_packet += 1
                else:
                    self._concealer.good(pcm)
            if pcm is None:
                pcm = self._concealer.conceal(self.inbound._decoder)
            if self.on_audio is not None and pcm.size:
                self.on_audio(pcm)

    # -- RTCP (RFC 3550 6): reports on RTP port + 1, or on the RTP port when the peer muxes ------

    def _rtcp_datagram_received(self, data: bytes, addr: Address) -> None:
        if not self._closed:
            self.inbound.receive_rtcp(data, addr)

    def _rtcp_received(self, data: bytes) -> None:
        """A plain compound from the latched peer (either port): RTT, the peer's view, feedback."""
        now = self._loop.time() if self._loop is not None else time.monotonic()
        try:
            raw = self.rtcp.receive(data, now, self.inbound.rx_stats)
        except RtcpError as exc:
            self.counters.dropped_bad_packet += 1
            log.debug("bridge.rtcp.malformed", leg="legacy", error=str(exc))
            return
        if raw and self.on_rtcp_feedback is not None:
            self.on_rtcp_feedback(raw)

    def _rtcp_destination(self) -> tuple[asyncio.DatagramTransport | None, Address]:
        """Where our RTCP goes: back where the peer's comes from, else RTP port + 1 (RFC 3550 11)."""
        if self.inbound.rtcp_source is not None:
            return self._rtcp_transport, self.inbound.rtcp_source
        if self.inbound.rtcp_muxed:
            return self._transport, self.destination
        host, port = self.destination[0], self.destination[1]
        return self._rtcp_transport, (host, port + 1)

    def _send_rtcp(self, *, bye: bool = False) -> None:
        if self._loop is None or (self._closed and not bye):
            return
        now = self._loop.time()
        sent = None
        if self.sending and self.counters.packets_out:
            # The RTP timestamp is the next frame's, due within 20 ms of the NTP time: close
            # enough for lip sync and RTT, which is all a receiver does with it here.
            sent = SenderSnapshot(self.counters.packets_out, self.outbound.octets, self.outbound.timestamp)
        data = self.rtcp.build(now, sent=sent, rx=self.inbound.rx_stats, bye=bye)
        if self.srtp is not None:
            data = self.srtp.protect_rtcp(data)
        transport, address = self._rtcp_destination()
        if transport is not None:
            transport.sendto(data, address)
        if not bye:
            self._rtcp_timer = self._loop.call_later(self.rtcp.next_interval(), self._send_rtcp)

    def _datagram_received(self, data: bytes, addr: Address) -> None:
        if self._closed:
            return
        pcm = self.inbound.receive(data, addr)
        if pcm is not None:
            if self.on_audio is not None and pcm.size:
                self.on_audio(pcm)
        elif self.counters.dropped != self._dropped_at_last_log:
            self._maybe_log_drops()

    def _maybe_log_drops(self) -> None:
        now = self._loop.time() if self._loop is not None else 0.0
        if now - self._last_drop_log < DROP_LOG_INTERVAL:
            return
        c = self.counters
        log.warning("bridge.rtp.dropped", leg="legacy", local_port=self.local_port,
                    since_last=c.dropped - self._dropped_at_last_log, last_reason=self.inbound.last_drop_reason,
                    wrong_source=c.dropped_wrong_source, bad_packet=c.dropped_bad_packet,
                    wrong_pt=c.dropped_wrong_pt, late=c.dropped_late,
                    srtp_auth=c.dropped_srtp_auth, srtp_replay=c.dropped_srtp_replay)
        self._last_drop_log = now
        self._dropped_at_last_log = c.dropped

    def renegotiate(
        self,
        *,
        codec: AudioCodec,
        payload_type: int,
        remote_address: str,
        remote_port: int,
        telephone_event_pt: int | None,
        srtp: SdesSrtp | None,
        sending: bool,
    ) -> None:
        """Apply a new offer/answer from a re-INVITE or UPDATE (RFC 3264 8).

        * ``sending=False`` (the peer's ``sendonly``/``inactive``, or ``c=0.0.0.0``): hold,
          the 20 ms clock keeps running and the RTP timestamp moves on, nothing is sent
          (RFC 3264 8.4); ``True`` resumes.
        * A new address or port re-targets the leg and drops the latch, so the first
          packet from the new place latches again (RFC 3264 8.3.1); for a plain-RTP peer
          that proved symmetric only from exactly the new address:port (:mod:`bridge.latch`).
        * New SDES keys (RFC 4568 7.1.4) replace both SRTP contexts and drop the latch
          (only a packet under the new keys may latch).
        * A codec change must keep the sample rate (the bridge's resampling is fixed per call).
        """
        if codec.sample_rate != self.codec.sample_rate:
            raise ValueError(f"codec change {self.codec.name} -> {codec.name} changes the sample rate")
        moved = (remote_address, remote_port) != self.remote
        rekeyed = srtp is not None and srtp is not self.srtp or (srtp is None) != (self.srtp is None)
        if codec.name != self.codec.name or payload_type != self.outbound.payload_type:
            self.codec = codec
            self.inbound._decoder = codec.decoder()
            self.outbound._encoder = codec.encoder()
            self.outbound._first = True  # marker bit on the first packet of the new stream
        self.inbound.payload_type = payload_type
        self.outbound.payload_type = payload_type
        self.inbound.telephone_event_pt = telephone_event_pt
        self._set_dtmf_payload_type(telephone_event_pt)
        if moved:
            self.remote = (remote_address, remote_port)
        if rekeyed:
            self.srtp = srtp
            self.inbound.srtp = srtp
            self.outbound.srtp = srtp
        if moved or rekeyed:
            self.inbound.source.retarget(remote_address if moved else None,
                                         remote_port if moved else None,
                                         any_source=(srtp is not None) if rekeyed else None)
            self.inbound._ssrc = None
            self.inbound._last_seq = None
            self.inbound.rx_stats = None
            self.jitter.reset()
            self.inbound.rtcp_source = None
            self.inbound.rtcp_muxed = False
        if sending != self.sending:
            log.info("bridge.leg.hold" if not sending else "bridge.leg.resume", leg="legacy",
                     local_port=self.local_port)
        self.sending = sending
        log.info("bridge.leg.renegotiated", leg="legacy", codec=codec.name, moved=moved,
                 rekeyed=rekeyed, sending=sending, local_port=self.local_port)

    @property
    def encryption(self) -> str:
        """``sdes-srtp`` when keyed by SDES, else ``plain``."""
        return "sdes-srtp" if self.srtp is not None else "plain"

    def stats(self) -> dict[str, Any]:
        """Counters (top-level ints, as before) plus the jitter buffer's and RTCP's figures."""
        jb = self.jitter
        remote = self.rtcp.remote_block
        return {
            "encryption": self.encryption,
            "srtp_suite": self.srtp.suite if self.srtp is not None else None,
            "codec": self.codec.name,
            "payload_type": self.outbound.payload_type,
            "local_port": self.local_port,
            "latched": self.inbound.latched is not None,
            **self.counters.as_dict(),
            "jitter_ms": round(self.inbound.rx_stats.jitter_ms, 2) if self.inbound.rx_stats else 0.0,
            "rtt_ms": None if self.rtcp.rtt_ms is None else round(self.rtcp.rtt_ms, 2),
            "jitter_buffer": {
                "depth_ms": round(jb.depth_ms, 1), "queued": jb.queued, **vars(jb.counters),
            },
            "rtcp": {
                "sr_sent": self.rtcp.sr_sent, "rr_sent": self.rtcp.rr_sent,
                "reports_received": self.rtcp.reports_received,
                "mux": self.inbound.rtcp_muxed and self.inbound.rtcp_source is None,
                "remote_fraction_lost": None if remote is None else round(remote.loss_fraction, 4),
                "remote_cumulative_lost": None if remote is None else remote.cumulative_lost,
                "remote_jitter_ms": None if self.rtcp.remote_jitter_ms is None
                else round(self.rtcp.remote_jitter_ms, 2),
            },
        }

    def close(self) -> None:
        """Stop the clock, close the socket, release the ports. Idempotent."""
        if self._closed:
            return
        if self._transport is not None:
            try:
                self._send_rtcp(bye=True)  # RFC 3550 6.6: say we are leaving
            except Exception as exc:  # noqa: BLE001 - closing must not fail on a last report
                log.debug("bridge.rtcp.bye_failed", leg="legacy", error=type(exc).__name__)
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._rtcp_timer is not None:
            self._rtcp_timer.cancel()
        if self._transport is not None:
            self._transport.close()
        if self._rtcp_transport is not None:
            self._rtcp_transport.close()
        self.lease.release()
        if self._transport is None:
            return  # never started: it was never up
        log.info("bridge.leg.down", leg="legacy", local_port=self.local_port,
                 packets_in=self.counters.packets_in, packets_out=self.counters.packets_out,
                 dropped=self.counters.dropped)
