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
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
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
from bridge.ports import PortLease
from bridge.rtp import DtmfReceiver, RtpError, RtpPacket, looks_like_rtcp, seq_newer
from bridge.srtp import SdesSrtp, SrtpDropped

log = structlog.get_logger("bridge.legacy_leg")

Address = tuple[Any, ...]

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


def _normalise_ip(address: str) -> str:
    return str(ipaddress.ip_address(address))


def _same_ip(address: str, expected: str) -> bool:
    try:
        return _normalise_ip(address) == expected
    except ValueError:
        return False


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
    ) -> None:
        self.expected_ip = _normalise_ip(remote_address)
        self.srtp = srtp
        #: Whether the first accepted packet may come from any IP (default: with SRTP only,
        #: where acceptance means it authenticated, RFC 3711 3.3).
        self.latch_any_source = srtp is not None if latch_any_source is None else latch_any_source
        self.payload_type = payload_type
        self.telephone_event_pt = telephone_event_pt
        self.latched: Address | None = None
        self.counters = counters
        self._decoder = decoder
        self._dtmf = DtmfReceiver(on_dtmf)
        self._ssrc: int | None = None
        self._last_seq: int | None = None
        self.last_drop_reason: str | None = None

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

    def _source_ok(self, addr: Address) -> bool:
        if self.latched is not None:
            return addr[0] == self.latched[0] and addr[1] == self.latched[1]
        if self.latch_any_source:
            return True
        try:
            return _normalise_ip(addr[0]) == self.expected_ip
        except ValueError:
            return False

    def receive(self, data: bytes, addr: Address) -> np.ndarray | None:
        """One datagram from ``addr``: decoded PCM for an accepted audio packet, else None."""
        if not self._source_ok(addr):
            self._drop("wrong_source")
            return None
        if looks_like_rtcp(data):
            if self.srtp is not None:
                try:
                    self.srtp.unprotect_rtcp(data)
                except SrtpDropped as exc:
                    self._srtp_drop(exc)
                    return None
            self.counters.rtcp_in += 1
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
        if packet.ssrc != self._ssrc:  # new stream (first packet, or the endpoint restarted it)
            self._ssrc, self._last_seq = packet.ssrc, None
        elif self._last_seq is not None and not seq_newer(packet.sequence_number, self._last_seq):
            self._drop("late")  # duplicate or reordered behind a newer one: no jitter buffer yet
            return None
        if pt == self.payload_type:
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
        if self.latched is None:
            self.latched = (addr[0], addr[1])
            log.info("bridge.rtp.latched", leg="legacy", authenticated=self.srtp is not None,
                     sdp_ip_matches=_same_ip(addr[0], self.expected_ip))
        if self._last_seq is not None:
            self.counters.packets_lost += ((packet.sequence_number - self._last_seq) & 0xFFFF) - 1
        self._last_seq = packet.sequence_number
        self.counters.packets_in += 1
        self.counters.bytes_in += len(data)
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

    def skip(self, frames: int) -> None:
        """Frames that were never sent still took time: the timestamp moves on, the sequence does not."""
        self.timestamp = (self.timestamp + frames * self.timestamp_step) & 0xFFFFFFFF

    def packet(self, pcm: np.ndarray) -> bytes:
        data = bytes(RtpPacket(
            payload_type=self.payload_type,
            sequence_number=self.sequence_number,
            timestamp=self.timestamp,
            ssrc=self.ssrc,
            payload=self._encoder.encode(pcm),
            marker=self._first,
        ))
        self._first = False
        self.sequence_number = (self.sequence_number + 1) & 0xFFFF
        self.timestamp = (self.timestamp + self.timestamp_step) & 0xFFFFFFFF
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
        self.inbound = RtpInbound(remote_address=remote_address, payload_type=payload_type,
                                  decoder=codec.decoder(), counters=self.counters,
                                  telephone_event_pt=telephone_event_pt, on_dtmf=on_dtmf,
                                  srtp=srtp)
        self.outbound = RtpOutbound(payload_type=payload_type, timestamp_step=codec.timestamp_step,
                                    encoder=codec.encoder(), srtp=srtp)
        self.fifo = PcmFifo(codec.sample_rate * OUTBOUND_MAX_MS // 1000)
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

    @property
    def local_port(self) -> int:
        return self.lease.rtp_port

    @property
    def destination(self) -> Address:
        """Where our RTP goes: the latched source once there is one (symmetric RTP, RFC 4961 3),
        else the SDP-named ``remote`` (RFC 3264 5)."""
        latched = self.inbound.latched
        return (latched[0], latched[1]) if latched is not None else self.remote

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
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=self.lease.rtp_socket)
        self._transport = transport  # type: ignore[assignment]
        self._clock = FrameClock(loop.time())
        self._tick()
        log.info("bridge.leg.up", leg="legacy", codec=self.codec.name, local_port=self.local_port,
                 encryption=self.encryption, srtp_suite=self.srtp.suite if self.srtp else None)

    def push_audio(self, pcm: np.ndarray) -> None:
        """PCM at the codec's sample rate for the endpoint to hear (any length; queued, bounded)."""
        self.fifo.push(pcm)
        self.counters.outbound_overflow_samples = self.fifo.dropped_samples

    def _tick(self) -> None:
        if self._closed or self._loop is None or self._clock is None or self._transport is None:
            return
        send, skipped = self._clock.due(self._loop.time())
        if skipped:
            self.counters.clock_skipped_frames += skipped
            self.outbound.skip(skipped)
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
          packet from the new place latches again (RFC 3264 8.3.1).
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
        if moved:
            self.remote = (remote_address, remote_port)
            self.inbound.expected_ip = _normalise_ip(remote_address)
        if rekeyed:
            self.srtp = srtp
            self.inbound.srtp = srtp
            self.outbound.srtp = srtp
            self.inbound.latch_any_source = srtp is not None
        if moved or rekeyed:
            self.inbound.latched = None
            self.inbound._ssrc = None
            self.inbound._last_seq = None
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
        return {
            "encryption": self.encryption,
            "srtp_suite": self.srtp.suite if self.srtp is not None else None,
            "codec": self.codec.name,
            "payload_type": self.outbound.payload_type,
            "local_port": self.local_port,
            "latched": self.inbound.latched is not None,
            **self.counters.as_dict(),
        }

    def close(self) -> None:
        """Stop the clock, close the socket, release the ports. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
        self.lease.release()
        if self._transport is None:
            return  # never started: it was never up
        log.info("bridge.leg.down", leg="legacy", local_port=self.local_port,
                 packets_in=self.counters.packets_in, packets_out=self.counters.packets_out,
                 dropped=self.counters.dropped)
