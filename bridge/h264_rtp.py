"""H.264 over RTP (RFC 6184), without I/O: Annex B helpers, a depacketizer and a packetizer.

Room systems send H.264 in packetization-mode 1 (single NAL units, STAP-A, FU-A) or mode 0
(single NAL units only); nobody we interoperate with negotiates mode 2, so its interleaved types
(STAP-B, MTAP16/24, FU-B) are refused with a counted reason rather than half-supported.

The depacketizer is the place where packet loss turns into "the picture is broken until the
next IDR": it only ever hands out *whole* access units, and after any sequence gap it raises
:attr:`H264Depacketizer.needs_keyframe`, which the leg polls to ask the sender for a keyframe
(see :mod:`bridge.keyframe`). It has no jitter buffer: a packet older than the newest one seen
is dropped and counted (``dropped_late``), which is what a real-time video path wants anyway.

Encoders configured for packetization-mode 0 must be told a slice size no larger than the
packetizer's payload budget (``mtu - 12``): a larger NAL unit cannot be sent in mode 0 and
:meth:`H264Packetizer.packetize` raises :class:`H264PacketizeError`.
"""

from __future__ import annotations

import secrets
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import structlog

from bridge.rtp import RtpPacket, seq_newer

log = structlog.get_logger("bridge.h264_rtp")

#: NAL unit types (H.264 table 7-1) the gateway cares about.
NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
#: RFC 6184 5.2 payload structure types.
STAP_A = 24
STAP_B = 25
MTAP16 = 26
MTAP24 = 27
FU_A = 28
FU_B = 29

#: RTP fixed header size; ``mtu`` counts it, the payload budget is ``mtu - RTP_HEADER``.
RTP_HEADER = 12
#: A packet further behind the newest than this is a sequence restart, not reordering (RFC 3550 A.1).
MAX_MISORDER = 100
#: Default bound on one reassembled access unit (a 1080p IDR at high quality is ~300 KiB).
MAX_AU_BYTES = 1 << 20

_START4 = b"\x00\x00\x00\x01"


class H264Error(ValueError):
    """H.264 data that cannot be handled; ``reason`` is a short stable token for counters."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class H264DepacketizeError(H264Error):
    """An RTP payload the depacketizer refuses (malformed or packetization-mode 2).

    ``access_units`` holds what the same push completed before the refusal (an earlier access
    unit closed by this packet's new timestamp), so a caller that catches it loses nothing.
    """

    access_units: list[AccessUnit]

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.access_units = []


class H264PacketizeError(H264Error):
    """An access unit the packetizer cannot send as configured (e.g. mode 0 and a NAL > MTU)."""


def nal_type(nal: bytes) -> int:
    """``nal_unit_type`` (the low five bits of the first byte)."""
    if not nal:
        raise H264Error("empty_nal", "a NAL unit has at least its header byte")
    return nal[0] & 0x1F


def split_annexb(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream, start codes removed.

    Both 3- and 4-byte start codes are accepted; zero bytes before a start code are
    ``trailing_zero_8bits`` (or the 4-byte code's leading zero) and are stripped. Bytes before
    the first start code other than zeros are an error: that is not Annex B.
    """
    nals: list[bytes] = []
    pos = data.find(b"\x00\x00\x01")
    if pos < 0:
        if data.strip(b"\x00"):
            raise H264Error("not_annexb", "no start code in a non-empty buffer")
        return nals
    if data[:pos].strip(b"\x00"):
        raise H264Error("not_annexb", f"{pos} bytes before the first start code")
    start = pos + 3
    while True:
        nxt = data.find(b"\x00\x00\x01", start)
        end = len(data) if nxt < 0 else nxt
        nal = data[start:end].rstrip(b"\x00")
        if nal:
            nals.append(bytes(nal))
        if nxt < 0:
            return nals
        start = nxt + 3


def join_annexb(nals: Iterable[bytes]) -> bytes:
    """An Annex B byte stream of ``nals`` with 4-byte start codes (what decoders like best)."""
    return b"".join(_START4 + nal for nal in nals)


def is_keyframe(nals_or_annexb: Sequence[bytes] | bytes) -> bool:
    """Whether the access unit holds an IDR slice (type 5).

    A decoder joining mid-stream also needs the SPS and PPS, which encoders put in front of
    every IDR when asked to (libx264 ``repeat-headers``, WebRTC always); :func:`has_parameter_sets`
    tells whether they are there. The keyframe test itself is the IDR alone, as RFC 6184
    receivers do.
    """
    nals = split_annexb(nals_or_annexb) if isinstance(nals_or_annexb, bytes | bytearray) else nals_or_annexb
    return any(nal and nal[0] & 0x1F == NAL_IDR for nal in nals)


def has_parameter_sets(nals: Sequence[bytes]) -> bool:
    """Whether both an SPS and a PPS are present (a decoder can start here given an IDR)."""
    types = {nal[0] & 0x1F for nal in nals if nal}
    return NAL_SPS in types and NAL_PPS in types


@dataclass
class AccessUnit:
    """One coded picture: its NAL units (no start codes), RTP timestamp and whether it is an IDR."""

    nals: list[bytes]
    timestamp: int
    keyframe: bool

    def annexb(self) -> bytes:
        """The access unit as an Annex B buffer (what PyAV's H.264 decoder parses)."""
        return join_annexb(self.nals)


@dataclass
class H264Depacketizer:
    """RTP packets in, whole access units out (RFC 6184 modes 0 and 1).

    An access unit ends with the marker bit, or -- for senders that forget it -- when a packet
    with another timestamp arrives. After a sequence gap the access unit being built (and the
    one the next packet belongs to, which may have lost its head) is dropped and counted in
    ``dropped_incomplete``, and :attr:`needs_keyframe` is set until an IDR comes out. The
    latter is also true before the first IDR: a decoder cannot start on a P slice.
    """

    max_au_bytes: int = MAX_AU_BYTES
    #: Access units handed out.
    access_units: int = 0
    #: Access units dropped because a packet was missing (gap, lost FU-A fragment, bad packet).
    dropped_incomplete: int = 0
    #: Access units dropped because they grew past ``max_au_bytes``.
    dropped_oversize: int = 0
    #: Packets older than (or a duplicate of) the newest one seen, up to ``MAX_MISORDER`` behind.
    dropped_late: int = 0
    #: Refused packets by reason (``mode2_stap_b``, ``malformed_fu_a``, ...).
    rejected: Counter[str] = field(default_factory=Counter)
    _needs_keyframe: bool = field(default=True, repr=False)
    _ssrc: int | None = field(default=None, repr=False)
    _last_seq: int | None = field(default=None, repr=False)
    _ts: int | None = field(default=None, repr=False)
    _nals: list[bytes] = field(default_factory=list, repr=False)
    _size: int = field(default=0, repr=False)
    _fu: bytearray | None = field(default=None, repr=False)
    _broken: bool = field(default=False, repr=False)
    _oversize: bool = field(default=False, repr=False)

    @property
    def needs_keyframe(self) -> bool:
        """Whether the picture is broken until the next IDR (the leg should ask for one)."""
        return self._needs_keyframe

    def push(self, packet: RtpPacket) -> list[AccessUnit]:
        """Feed one RTP packet; returns the access units it completed (0, 1 or, rarely, 2).

        Raises :class:`H264DepacketizeError` for a payload it refuses, after counting it in
        ``rejected`` and marking the current access unit broken (its content is lost).
        """
        out: list[AccessUnit] = []
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None:
                self._abandon(out)
                self._needs_keyframe = True
            self._ssrc, self._last_seq = packet.ssrc, None
        seq = packet.sequence_number
        gap = False
        if self._last_seq is not None:
            behind = (self._last_seq - seq) & 0xFFFF
            if not seq_newer(seq, self._last_seq) and behind <= MAX_MISORDER:
                self.dropped_late += 1
                return out
            # far behind: the sender restarted its sequence numbers (RFC 3550 A.1): a discontinuity
            gap = seq != (self._last_seq + 1) & 0xFFFF
        self._last_seq = seq
        if gap:
            self._needs_keyframe = True
            if self._ts is not None:
                self._broken = True  # the access unit being built lost its middle or tail
        if self._ts is not None and packet.timestamp != self._ts:
            self._finish(out)  # no marker seen: the sender moved on to the next picture
        if gap:
            self._broken = True  # this packet's access unit may have lost its head
        self._ts = packet.timestamp
        try:
            self._take_payload(packet.payload)
        except H264DepacketizeError as exc:
            self.rejected[exc.reason] += 1
            self._broken = True
            self._needs_keyframe = True
            log.debug("video.h264.packet_rejected", reason=exc.reason, seq=seq)
            if packet.marker:
                self._finish(out)
            exc.access_units = out
            raise
        if packet.marker:
            self._finish(out)
        return out

    # -- payload structures ------------------------------------------------------------------

    def _take_payload(self, payload: bytes) -> None:
        if not payload:
            raise H264DepacketizeError("empty_payload", "RTP payload with no NAL header")
        kind = payload[0] & 0x1F
        if 1 <= kind <= 23:
            self._end_fu_if_open()
            self._add_nal(payload)
        elif kind == STAP_A:
            self._end_fu_if_open()
            self._take_stap_a(payload)
        elif kind == FU_A:
            self._take_fu_a(payload)
        elif kind in (STAP_B, MTAP16, MTAP24, FU_B):
            name = {STAP_B: "stap_b", MTAP16: "mtap16", MTAP24: "mtap24", FU_B: "fu_b"}[kind]
            raise H264DepacketizeError(f"mode2_{name}", "packetization-mode 2 is not negotiated")
        else:
            raise H264DepacketizeError("reserved_type", f"NAL/payload type {kind} is reserved")

    def _take_stap_a(self, payload: bytes) -> None:
        pos, end = 1, len(payload)
        nals: list[bytes] = []
        while pos < end:
            if end - pos < 2:
                raise H264DepacketizeError("malformed_stap_a", "truncated NAL size")
            (size,) = struct.unpack_from("!H", payload, pos)
            pos += 2
            if size == 0 or pos + size > end:
                raise H264DepacketizeError("malformed_stap_a", f"NAL size {size} at {pos - 2} of {end}")
            nals.append(payload[pos:pos + size])
            pos += size
        if not nals:
            raise H264DepacketizeError("malformed_stap_a", "no NAL units")
        for nal in nals:
            self._add_nal(nal)

    def _take_fu_a(self, payload: bytes) -> None:
        if len(payload) < 3:
            raise H264DepacketizeError("malformed_fu_a", f"{len(payload)} bytes, need 3")
        indicator, header = payload[0], payload[1]
        start, end = bool(header & 0x80), bool(header & 0x40)
        if start and end:
            raise H264DepacketizeError("malformed_fu_a", "start and end bit both set")
        if start:
            if self._fu is not None:
                self._broken = True  # the previous fragmented NAL never ended
            self._fu = bytearray([(indicator & 0xE0) | (header & 0x1F)])
        elif self._fu is None:
            self._broken = True  # we missed this NAL's start
            return
        self._fu += payload[2:]
        self._grow(len(payload) - 2)
        if end and self._fu is not None:
            nal, self._fu = bytes(self._fu), None
            self._nals.append(nal)

    def _end_fu_if_open(self) -> None:
        if self._fu is not None:
            self._fu = None
            self._broken = True

    def _add_nal(self, nal: bytes) -> None:
        self._grow(len(nal))
        if not self._oversize:
            self._nals.append(bytes(nal))

    def _grow(self, n: int) -> None:
        self._size += n
        if self._size > self.max_au_bytes and not self._oversize:
            self._oversize = True
            self._nals, self._fu = [], None  # free it now: bounded memory is the point

    # -- access unit boundaries --------------------------------------------------------------

    def _finish(self, out: list[AccessUnit]) -> None:
        """Close the access unit being built: hand it out if whole, else drop and count it."""
        if self._fu is not None:
            self._broken = True
        if self._oversize:
            self.dropped_oversize += 1
            self._needs_keyframe = True
            log.info("video.h264.au_oversize", limit=self.max_au_bytes)
        elif self._broken:
            self.dropped_incomplete += 1
            self._needs_keyframe = True
        elif self._nals and self._ts is not None:
            keyframe = is_keyframe(self._nals)
            out.append(AccessUnit(nals=self._nals, timestamp=self._ts, keyframe=keyframe))
            self.access_units += 1
            if keyframe:
                self._needs_keyframe = False
        self._reset()

    def _abandon(self, out: list[AccessUnit]) -> None:
        if self._nals or self._fu is not None:
            self._broken = True
        self._finish(out)

    def _reset(self) -> None:
        self._ts, self._nals, self._size, self._fu = None, [], 0, None
        self._broken = self._oversize = False


class H264Packetizer:
    """Access units in, RTP packets out (RFC 6184 mode 1 by default, or mode 0).

    ``mtu`` is the largest RTP packet (header included) to produce. Mode 1 sends a NAL unit
    alone when it fits, aggregates runs of small ones (SPS + PPS + a tiny slice) into one
    STAP-A, and fragments large ones into FU-A. Mode 0 sends single NAL units only and refuses
    larger ones (:class:`H264PacketizeError`): configure the encoder's slice size instead.
    Sequence numbers continue across calls; the marker is set on each access unit's last packet.
    """

    def __init__(self, payload_type: int, ssrc: int, *, mtu: int = 1200, packetization_mode: int = 1,
                 initial_seq: int | None = None) -> None:
        if packetization_mode not in (0, 1):
            raise H264PacketizeError("unsupported_mode", f"packetization-mode {packetization_mode}")
        if mtu < RTP_HEADER + 3:
            raise H264PacketizeError("mtu_too_small", f"mtu {mtu}")
        self.payload_type = payload_type
        self.ssrc = ssrc
        self.mtu = mtu
        self.packetization_mode = packetization_mode
        self.max_payload = mtu - RTP_HEADER
        self._seq = secrets.randbelow(0x10000) if initial_seq is None else initial_seq & 0xFFFF

    @property
    def next_seq(self) -> int:
        return self._seq

    def packetize(self, au_nals: Sequence[bytes], timestamp: int) -> list[RtpPacket]:
        """The RTP packets carrying one access unit (``bytes(packet)`` serialises each)."""
        if any(not nal for nal in au_nals):
            raise H264PacketizeError("empty_nal", "an access unit holds an empty NAL unit")
        payloads: list[bytes] = []
        if self.packetization_mode == 0:
            for nal in au_nals:
                if len(nal) > self.max_payload:
                    raise H264PacketizeError(
                        "nal_exceeds_mtu",
                        f"{len(nal)}-byte NAL in packetization-mode 0 (budget {self.max_payload}); "
                        "configure the encoder's slice size")
                payloads.append(bytes(nal))
        else:
            payloads = self._mode1_payloads(au_nals)
        packets = []
        for i, payload in enumerate(payloads):
            packets.append(RtpPacket(payload_type=self.payload_type, sequence_number=self._seq,
                                     timestamp=timestamp & 0xFFFFFFFF, ssrc=self.ssrc, payload=payload,
                                     marker=i == len(payloads) - 1))
            self._seq = (self._seq + 1) & 0xFFFF
        return packets

    def _mode1_payloads(self, nals: Sequence[bytes]) -> list[bytes]:
        payloads: list[bytes] = []
        run: list[bytes] = []  # small NALs waiting to be aggregated
        run_size = 1  # the STAP-A header byte

        def flush() -> None:
            nonlocal run, run_size
            if len(run) == 1:
                payloads.append(run[0])
            elif run:
                payloads.append(_stap_a(run))
            run, run_size = [], 1

        for nal in nals:
            if len(nal) > self.max_payload:
                flush()
                payloads.extend(_fu_a(nal, self.max_payload))
                continue
            if run_size + 2 + len(nal) > self.max_payload:
                flush()
            run.append(bytes(nal))
            run_size += 2 + len(nal)
        flush()
        return payloads


def _stap_a(nals: Sequence[bytes]) -> bytes:
    """RFC 6184 5.7.1: F is the OR of the units' F bits, NRI their maximum."""
    f = max(n[0] & 0x80 for n in nals)
    nri = max(n[0] & 0x60 for n in nals)
    return bytes([f | nri | STAP_A]) + b"".join(struct.pack("!H", len(n)) + n for n in nals)


def _fu_a(nal: bytes, max_payload: int) -> list[bytes]:
    """RFC 6184 5.8: the NAL header is carried in the FU indicator/header, not in the fragments."""
    indicator = (nal[0] & 0xE0) | FU_A
    kind = nal[0] & 0x1F
    body = nal[1:]
    chunk = max_payload - 2
    count = -(-len(body) // chunk)
    size = -(-len(body) // count)  # even fragments: no runt packet at the end
    out = []
    for i in range(count):
        header = kind | (0x80 if i == 0 else 0) | (0x40 if i == count - 1 else 0)
        out.append(bytes([indicator, header]) + body[i * size:(i + 1) * size])
    return out
