"""RTCP (RFC 3550 section 6) without I/O: compound build/parse, receiver statistics, RTT.

``parse_compound(data)`` splits a compound packet into typed packets -- :class:`SenderReport`,
:class:`ReceiverReport`, :class:`SourceDescription`, :class:`Bye` -- and hands every packet
type it does not model (RTPFB 205, PSFB 206, APP 204, XR 207, anything else) back as
:class:`RawRtcp` with its header fields split out, so the feedback parser
(``bridge.rtcp_feedback``: PLI/FIR/REMB/TMMBR/NACK) can take them without re-parsing
the compound. ``build_compound(packets)`` is its inverse and accepts already-built packet
bytes (feedback built elsewhere) next to this module's packet objects.

Parsing is strict where a hostile peer could make us misread lengths (version, length words
past the datagram, padding, report counts that do not fit) and raises :class:`RtcpError`
naming the fault; it is lenient where real endpoints differ (a compound that does not start
with SR/RR is accepted: RFC 5506 reduced-size RTCP sends feedback alone).

:class:`ReceiverStatistics` is RFC 3550 appendix A.1 (sequence validation and extended
highest sequence), A.3 (expected vs received, fraction lost per interval) and A.8
(interarrival jitter), kept per received SSRC; it produces the report blocks our SR/RR carry.
:func:`round_trip_time` is RFC 3550 6.4.1: RTT = A - LSR - DLSR on the middle 32 bits of NTP.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

RTCP_VERSION = 2

PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
PT_APP = 204
PT_RTPFB = 205
PT_PSFB = 206
PT_XR = 207

SDES_END = 0
SDES_CNAME = 1

#: Seconds between 1900-01-01 (NTP era 0) and 1970-01-01 (Unix epoch).
NTP_UNIX_OFFSET = 2_208_988_800

#: RFC 3550 6.2: the minimum report interval and the randomisation range around it.
RTCP_MIN_INTERVAL = 5.0

_HEADER = struct.Struct("!BBH")
#: Reporter SSRC + RFC 3550 6.4.1 sender info (NTP hi/lo, RTP timestamp, packet and octet count).
_SENDER_INFO = struct.Struct("!IIIIII")
_REPORT_BLOCK = struct.Struct("!IIIIII")


class RtcpError(ValueError):
    """A datagram that is not a valid (compound) RTCP packet; the leg drops and counts it."""


# -- packets -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One RFC 3550 6.4.1 reception report block about source ``ssrc``.

    ``fraction_lost`` is the 8-bit fixed-point fraction (lost/expected * 256) of the last
    interval, ``cumulative_lost`` the signed 24-bit total (duplicates can make it negative),
    ``jitter`` in RTP timestamp units, ``lsr``/``dlsr`` middle-32-bit NTP and 1/65536 s.
    """

    ssrc: int
    fraction_lost: int = 0
    cumulative_lost: int = 0
    highest_seq: int = 0
    jitter: int = 0
    lsr: int = 0
    dlsr: int = 0

    @property
    def loss_fraction(self) -> float:
        """``fraction_lost`` as a float in [0, 1)."""
        return self.fraction_lost / 256.0

    def __bytes__(self) -> bytes:
        if not 0 <= self.fraction_lost <= 255:
            raise RtcpError(f"fraction lost {self.fraction_lost} does not fit 8 bits")
        cumulative = max(-0x800000, min(0x7FFFFF, self.cumulative_lost)) & 0xFFFFFF
        return _REPORT_BLOCK.pack(self.ssrc & 0xFFFFFFFF, (self.fraction_lost << 24) | cumulative,
                                  self.highest_seq & 0xFFFFFFFF, self.jitter & 0xFFFFFFFF,
                                  self.lsr & 0xFFFFFFFF, self.dlsr & 0xFFFFFFFF)

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, lost, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        return cls(ssrc, lost >> 24, cumulative, highest, jitter, lsr, dlsr)


def _check_blocks(reports: tuple[ReportBlock, ...]) -> None:
    if len(reports) > 31:
        raise RtcpError(f"at most 31 report blocks fit one SR/RR, got {len(reports)}")


def _header(count: int, packet_type: int, body_len: int) -> bytes:
    """Common header for a body of ``body_len`` bytes (a multiple of 4, RFC 3550 6.4.1)."""
    return _HEADER.pack((RTCP_VERSION << 6) | count, packet_type, body_len // 4)


@dataclass(frozen=True, slots=True)
class SenderReport:
    """RFC 3550 6.4.1 SR: sender info (64-bit NTP, RTP timestamp, counts) plus report blocks."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    @property
    def ntp_middle(self) -> int:
        """The middle 32 bits of the NTP timestamp: what a receiver echoes as LSR."""
        return ntp_middle(self.ntp_timestamp)

    def __bytes__(self) -> bytes:
        _check_blocks(self.reports)
        body = _SENDER_INFO.pack(self.ssrc & 0xFFFFFFFF, (self.ntp_timestamp >> 32) & 0xFFFFFFFF,
                                 self.ntp_timestamp & 0xFFFFFFFF, self.rtp_timestamp & 0xFFFFFFFF,
                                 self.packet_count & 0xFFFFFFFF, self.octet_count & 0xFFFFFFFF)
        body += b"".join(bytes(r) for r in self.reports)
        return _header(len(self.reports), PT_SR, len(body)) + body


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RFC 3550 6.4.2 RR: the reporter's SSRC plus report blocks (none when nothing was received)."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def __bytes__(self) -> bytes:
        _check_blocks(self.reports)
        body = struct.pack("!I", self.ssrc & 0xFFFFFFFF) + b"".join(bytes(r) for r in self.reports)
        return _header(len(self.reports), PT_RR, len(body)) + body


@dataclass(frozen=True, slots=True)
class SdesChunk:
    """One SDES chunk: a source and its (item type, value) pairs, e.g. ``(SDES_CNAME, b"gw@host")``."""

    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()

    @property
    def cname(self) -> str | None:
        for kind, value in self.items:
            if kind == SDES_CNAME:
                return value.decode("utf-8", "replace")
        return None

    def __bytes__(self) -> bytes:
        out = bytearray(struct.pack("!I", self.ssrc & 0xFFFFFFFF))
        for kind, value in self.items:
            if not 1 <= kind <= 255 or len(value) > 255:
                raise RtcpError(f"SDES item type {kind} / length {len(value)} out of range")
            out += bytes([kind, len(value)]) + value
        out += b"\x00" * (4 - len(out) % 4)  # END item plus padding to the next word, at least one zero
        return bytes(out)


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """RFC 3550 6.5 SDES; in practice one chunk with our CNAME."""

    chunks: tuple[SdesChunk, ...] = ()

    @classmethod
    def cname(cls, ssrc: int, cname: str) -> SourceDescription:
        return cls((SdesChunk(ssrc, ((SDES_CNAME, cname.encode()),)),))

    def __bytes__(self) -> bytes:
        if len(self.chunks) > 31:
            raise RtcpError(f"at most 31 SDES chunks fit one packet, got {len(self.chunks)}")
        body = b"".join(bytes(c) for c in self.chunks)
        return _header(len(self.chunks), PT_SDES, len(body)) + body


@dataclass(frozen=True, slots=True)
class Bye:
    """RFC 3550 6.6 BYE: the sources leaving, with an optional reason."""

    ssrcs: tuple[int, ...]
    reason: str | None = None

    def __bytes__(self) -> bytes:
        if len(self.ssrcs) > 31:
            raise RtcpError(f"at most 31 SSRCs fit one BYE, got {len(self.ssrcs)}")
        body = b"".join(struct.pack("!I", s & 0xFFFFFFFF) for s in self.ssrcs)
        if self.reason is not None:
            text = self.reason.encode()[:255]
            reason = bytes([len(text)]) + text
            body += reason + b"\x00" * (-len(reason) % 4)
        return _header(len(self.ssrcs), PT_BYE, len(body)) + body


@dataclass(frozen=True)
class RawRtcp:
    """A packet this module does not model, split at its header (fixed contract with the
    feedback parser): ``fmt`` is the 5-bit count/FMT field, ``ssrc`` the packet sender's SSRC
    (first word after the header), ``body`` the rest of the packet without padding (for
    RTPFB/PSFB: media source SSRC + FCI)."""

    packet_type: int
    fmt: int
    ssrc: int
    body: bytes

    def __bytes__(self) -> bytes:
        if not 0 <= self.fmt <= 31:
            raise RtcpError(f"RTCP count/FMT {self.fmt} does not fit 5 bits")
        if len(self.body) % 4:
            raise RtcpError(f"RTCP body of {len(self.body)} bytes is not whole 32-bit words")
        body = struct.pack("!I", self.ssrc & 0xFFFFFFFF) + self.body
        return _header(self.fmt, self.packet_type, len(body)) + body


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | RawRtcp


# -- parse / build -------------------------------------------------------------------------------


def _parse_blocks(body: bytes, offset: int, count: int, what: str) -> tuple[ReportBlock, ...]:
    if len(body) < offset + count * _REPORT_BLOCK.size:
        raise RtcpError(f"{what} claims {count} report blocks but has room for "
                        f"{(len(body) - offset) // _REPORT_BLOCK.size}")
    return tuple(ReportBlock.parse(body, offset + i * _REPORT_BLOCK.size) for i in range(count))


def _parse_sdes(body: bytes, count: int) -> SourceDescription:
    chunks = []
    pos = 0
    for _ in range(count):
        if len(body) < pos + 4:
            raise RtcpError("SDES chunk truncated before its SSRC")
        (ssrc,) = struct.unpack_from("!I", body, pos)
        pos += 4
        items: list[tuple[int, bytes]] = []
        while True:
            if pos >= len(body):
                raise RtcpError("SDES chunk has no END item")
            kind = body[pos]
            if kind == SDES_END:
                pos = (pos + 4) & ~3  # END, then zero padding up to the next word
                break
            if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                raise RtcpError(f"SDES item {kind} runs past the packet end")
            length = body[pos + 1]
            items.append((kind, bytes(body[pos + 2:pos + 2 + length])))
            pos += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return SourceDescription(tuple(chunks))


def _parse_bye(body: bytes, count: int) -> Bye:
    if len(body) < 4 * count:
        raise RtcpError(f"BYE claims {count} sources but has room for {len(body) // 4}")
    ssrcs = struct.unpack_from(f"!{count}I", body) if count else ()
    reason = None
    pos = 4 * count
    if pos < len(body):
        length = body[pos]
        if pos + 1 + length > len(body):
            raise RtcpError("BYE reason runs past the packet end")
        reason = body[pos + 1:pos + 1 + length].decode("utf-8", "replace")
    return Bye(tuple(ssrcs), reason)


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    if packet_type == PT_SR:
        if len(body) < _SENDER_INFO.size:
            raise RtcpError(f"SR of {len(body)} bytes is shorter than its sender info")
        ssrc, ntp_hi, ntp_lo, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body)
        return SenderReport(ssrc, (ntp_hi << 32) | ntp_lo, rtp_ts, packets, octets,
                            _parse_blocks(body, _SENDER_INFO.size, count, "SR"))
    if packet_type == PT_RR:
        if len(body) < 4:
            raise RtcpError("RR without its reporter SSRC")
        return ReceiverReport(struct.unpack_from("!I", body)[0], _parse_blocks(body, 4, count, "RR"))
    if packet_type == PT_SDES:
        return _parse_sdes(body, count)
    if packet_type == PT_BYE:
        return _parse_bye(body, count)
    if len(body) < 4:
        raise RtcpError(f"RTCP packet type {packet_type} without a sender SSRC")
    return RawRtcp(packet_type, count, struct.unpack_from("!I", body)[0], bytes(body[4:]))


def parse_compound(data: bytes) -> list[SenderReport | ReceiverReport | SourceDescription | Bye | RawRtcp]:
    """Every packet of a (plain, already-unprotected) compound RTCP datagram, in order.

    Raises :class:`RtcpError` for anything malformed; nothing is returned from a datagram
    that is broken anywhere (a half-trusted compound is not trusted).
    """
    data = bytes(data)
    if len(data) < 4:
        raise RtcpError(f"RTCP datagram of {len(data)} bytes is shorter than a header")
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise RtcpError(f"{len(data) - pos} trailing bytes after the last RTCP packet")
        b0, packet_type, words = _HEADER.unpack_from(data, pos)
        if b0 >> 6 != RTCP_VERSION:
            raise RtcpError(f"RTCP version {b0 >> 6}, expected {RTCP_VERSION}")
        end = pos + 4 + 4 * words
        if end > len(data):
            raise RtcpError(f"RTCP packet type {packet_type} of {4 + 4 * words} bytes runs past "
                            f"the datagram end ({len(data) - pos} left)")
        body_end = end
        if b0 & 0x20:
            padding = data[end - 1] if end > pos + 4 else 0
            if padding == 0 or padding > end - pos - 4:
                raise RtcpError(f"RTCP padding length {padding} is invalid")
            body_end -= padding
        packets.append(_parse_one(packet_type, b0 & 0x1F, data[pos + 4:body_end]))
        pos = end
    return packets


def build_compound(packets: Iterable[bytes | SenderReport | ReceiverReport | SourceDescription | Bye
                                     | RawRtcp]) -> bytes:
    """Concatenate packets (objects of this module or already-built bytes) into one compound."""
    out = b"".join(p if isinstance(p, bytes | bytearray) else bytes(p) for p in packets)
    if not out:
        raise RtcpError("an RTCP compound needs at least one packet")
    return bytes(out)


# -- time ----------------------------------------------------------------------------------------


def ntp_from_unix(seconds: float) -> int:
    """Unix time -> 64-bit NTP timestamp (32.32 fixed point since 1900)."""
    return round((seconds + NTP_UNIX_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp (16.16 seconds): RFC 3550's LSR unit."""
    return (ntp >> 16) & 0xFFFFFFFF


def round_trip_time(block: ReportBlock, arrival_ntp: int) -> float | None:
    """RFC 3550 6.4.1 round trip in seconds from a report block about *our* stream.

    ``arrival_ntp`` is the 64-bit NTP time the report arrived. None when the peer has not
    received an SR of ours yet (LSR 0) or the result is nonsense (more than a few ms negative:
    a peer echoing a wrong LSR/DLSR); rounding noise around zero on loopback reads as 0.
    """
    if block.lsr == 0:
        return None
    rtt = (ntp_middle(arrival_ntp) - block.lsr - block.dlsr) & 0xFFFFFFFF
    if rtt >= 0x80000000:
        rtt -= 0x100000000
    seconds = rtt / 65536.0
    if seconds < -0.005:
        return None
    return max(0.0, seconds)


def report_interval(rng: random.Random | None = None, base: float = RTCP_MIN_INTERVAL) -> float:
    """RFC 3550 6.3.1 for a two-party session: the 5 s minimum randomised over [0.5, 1.5] and
    divided by e - 3/2 (the compensation 6.3.1 applies to the randomisation)."""
    r = (rng or random).uniform(0.5, 1.5)
    return base * r / 1.21828


# -- receiver statistics (RFC 3550 appendix A) ---------------------------------------------------

#: RFC 3550 A.1: a jump this large forward is a restart, not loss; this far back is misordering.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
RTP_SEQ_MOD = 1 << 16


@dataclass
class ReceiverStatistics:
    """Reception statistics for one source (RFC 3550 A.1, A.3, A.8); the clock is the caller's.

    ``update(seq, timestamp, arrival)`` for every accepted packet (``arrival`` in seconds on
    any monotonic clock), ``report_block(now)`` once per report interval.
    """

    ssrc: int
    clock_rate: int
    base_seq: int = 0
    max_seq: int = 0
    cycles: int = 0
    received: int = 0
    expected_prior: int = 0
    received_prior: int = 0
    #: RFC 3550 A.8 interarrival jitter estimate, in timestamp units (float; reports truncate).
    jitter: float = 0.0
    _transit: float | None = field(default=None, repr=False)
    _bad_seq: int | None = field(default=None, repr=False)
    _started: bool = field(default=False, repr=False)
    #: The middle 32 bits of the last SR's NTP time from this source, and when it arrived.
    last_sr: int = 0
    last_sr_arrival: float | None = None

    def _restart(self, seq: int) -> None:
        self.base_seq = self.max_seq = seq
        self.cycles = 0
        self.received = self.expected_prior = self.received_prior = 0
        self._bad_seq = None
        self._started = True

    def update(self, seq: int, timestamp: int, arrival: float) -> bool:
        """Count one packet; False when A.1 treats it as a stray (a big jump not yet confirmed)."""
        if not self._started:
            self._restart(seq)
        else:
            delta = (seq - self.max_seq) % RTP_SEQ_MOD
            if 0 < delta < MAX_DROPOUT:
                if seq < self.max_seq:
                    self.cycles += RTP_SEQ_MOD
                self.max_seq = seq
            elif delta >= RTP_SEQ_MOD - MAX_MISORDER or delta == 0:
                pass  # duplicate or reordered: counted as received, max unchanged
            elif seq == self._bad_seq:
                self._restart(seq)  # two in a row after a jump: the source restarted its sequence
                self._transit = None
            else:
                self._bad_seq = (seq + 1) % RTP_SEQ_MOD
                return False
        self.received += 1
        transit = arrival * self.clock_rate - timestamp
        if self._transit is not None:
            d = transit - self._transit
            # Timestamps wrap at 2^32: a difference near 2^32 is a small one across the wrap.
            d = (d + 2**31) % 2**32 - 2**31
            self.jitter += (abs(d) - self.jitter) / 16.0
        self._transit = transit
        return True

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_max - self.base_seq + 1 if self._started else 0

    @property
    def cumulative_lost(self) -> int:
        return self.expected - self.received

    @property
    def jitter_ms(self) -> float:
        return self.jitter * 1000.0 / self.clock_rate

    def sender_report_received(self, sr: SenderReport, arrival: float) -> None:
        """Remember the source's SR so our next block echoes it as LSR/DLSR."""
        self.last_sr = sr.ntp_middle
        self.last_sr_arrival = arrival

    def report_block(self, now: float) -> ReportBlock:
        """The block for our next SR/RR; moves the A.3 interval on (call once per report)."""
        expected = self.expected
        interval_expected = expected - self.expected_prior
        interval_lost = interval_expected - (self.received - self.received_prior)
        self.expected_prior, self.received_prior = expected, self.received
        fraction = 0
        if interval_expected > 0 and interval_lost > 0:
            fraction = min(255, (interval_lost << 8) // interval_expected)
        dlsr = 0
        if self.last_sr_arrival is not None:
            dlsr = int(max(0.0, now - self.last_sr_arrival) * 65536) & 0xFFFFFFFF
        return ReportBlock(ssrc=self.ssrc, fraction_lost=fraction, cumulative_lost=self.cumulative_lost,
                           highest_seq=self.extended_max & 0xFFFFFFFF, jitter=int(self.jitter),
                           lsr=self.last_sr, dlsr=dlsr)
