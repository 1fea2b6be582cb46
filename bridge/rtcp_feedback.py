"""RTCP feedback messages for video (RFC 4585, RFC 5104, draft-alvestrand-rmcat-remb), without I/O.

Room systems and browsers ask for keyframes and cap bitrates with a handful of transport-layer
(RTPFB, PT 205) and payload-specific (PSFB, PT 206) feedback messages; these are the ones the
gateway acts on or sends:

==============  ======  ===  ================================================================
message         PT      FMT  meaning
==============  ======  ===  ================================================================
Generic NACK    RTPFB   1    these sequence numbers were lost (RFC 4585 6.2.1)
TMMBR / TMMBN   RTPFB   3/4  send at most this bitrate / here is the bound I honour (5104 4.2)
PLI             PSFB    1    picture loss: send a keyframe (RFC 4585 6.3.1)
FIR             PSFB    4    full intra request with a command sequence number (5104 4.3.1)
REMB            PSFB    15   receiver-estimated maximum bitrate (application layer feedback)
==============  ======  ===  ================================================================

:func:`parse_feedback` takes the :class:`bridge.rtcp.RawRtcp` that ``parse_compound`` hands back
for PT 205/206 (sender SSRC split out; ``body`` = media source SSRC + FCI) and returns one of the
dataclasses, ``None`` for feedback we do not use (SLI, RPSI, TSTR, other AFB...), or raises
:class:`RtcpFeedbackError` when the packet is malformed. Every dataclass's ``to_bytes()`` is a
complete RTCP packet, ready for ``bridge.rtcp.build_compound``.

Bitrates travel as mantissa * 2^exponent (17-bit mantissa for TMMBR/TMMBN, 18-bit for REMB);
encoding rounds *down* (:func:`quantize_bitrate`), so a cap we send never grants more than meant.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import structlog

from bridge.rtcp import PT_PSFB, PT_RTPFB, RawRtcp

log = structlog.get_logger("bridge.rtcp_feedback")

FMT_NACK = 1
FMT_TMMBR = 3
FMT_TMMBN = 4
FMT_PLI = 1
FMT_FIR = 4
FMT_AFB = 15
REMB_ID = b"REMB"

#: Mantissa widths (bits) of the two bitrate encodings.
TMMBR_MANTISSA_BITS = 17
REMB_MANTISSA_BITS = 18
_MAX_EXP = 63


class RtcpFeedbackError(ValueError):
    """A feedback packet that is malformed (or a value that cannot be encoded); ``reason`` is stable."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _split_bitrate(bps: int, mantissa_bits: int) -> tuple[int, int]:
    """(exponent, mantissa) with mantissa * 2^exponent the largest value <= ``bps``."""
    if bps < 0:
        raise RtcpFeedbackError("negative_bitrate", str(bps))
    exp = max(0, bps.bit_length() - mantissa_bits)
    if exp > _MAX_EXP:
        raise RtcpFeedbackError("bitrate_too_large", str(bps))
    return exp, bps >> exp


def quantize_bitrate(bps: int, mantissa_bits: int = TMMBR_MANTISSA_BITS) -> int:
    """What ``bps`` becomes on the wire: rounded down to a ``mantissa_bits``-bit mantissa."""
    exp, mantissa = _split_bitrate(bps, mantissa_bits)
    return mantissa << exp


def _packet(packet_type: int, fmt: int, sender_ssrc: int, media_ssrc: int, fci: bytes) -> bytes:
    return bytes(RawRtcp(packet_type, fmt, sender_ssrc, struct.pack("!I", media_ssrc & 0xFFFFFFFF) + fci))


@dataclass(frozen=True, slots=True)
class Pli:
    """Picture Loss Indication (RFC 4585 6.3.1): "I lost picture data, send a keyframe"."""

    sender_ssrc: int
    media_ssrc: int

    def to_bytes(self) -> bytes:
        return _packet(PT_PSFB, FMT_PLI, self.sender_ssrc, self.media_ssrc, b"")


@dataclass(frozen=True, slots=True)
class Fir:
    """Full Intra Request (RFC 5104 4.3.1): ``entries`` are (media SSRC, command sequence number).

    The sequence number identifies the request: a repeat (the peer did not answer yet) keeps
    it, a new request increments it (:class:`FirSequencer`).
    """

    sender_ssrc: int
    entries: tuple[tuple[int, int], ...]

    def to_bytes(self) -> bytes:
        if not self.entries:
            raise RtcpFeedbackError("empty_fir", "a FIR names at least one media source")
        fci = b"".join(struct.pack("!IB3x", ssrc & 0xFFFFFFFF, seq & 0xFF) for ssrc, seq in self.entries)
        return _packet(PT_PSFB, FMT_FIR, self.sender_ssrc, 0, fci)  # 4.3.1.2: media source SSRC 0


@dataclass(frozen=True, slots=True)
class Remb:
    """Receiver Estimated Maximum Bitrate (PSFB FMT 15, "REMB"): total bps for ``ssrcs``."""

    sender_ssrc: int
    bitrate_bps: int
    ssrcs: tuple[int, ...]

    def to_bytes(self) -> bytes:
        if len(self.ssrcs) > 255:
            raise RtcpFeedbackError("too_many_ssrcs", f"{len(self.ssrcs)} (REMB carries at most 255)")
        exp, mantissa = _split_bitrate(self.bitrate_bps, REMB_MANTISSA_BITS)
        fci = REMB_ID + struct.pack("!BBH", len(self.ssrcs), (exp << 2) | (mantissa >> 16), mantissa & 0xFFFF)
        fci += b"".join(struct.pack("!I", s & 0xFFFFFFFF) for s in self.ssrcs)
        return _packet(PT_PSFB, FMT_AFB, self.sender_ssrc, 0, fci)


def _tmmb_fci(entries: tuple[tuple[int, int, int], ...]) -> bytes:
    out = []
    for ssrc, bps, overhead in entries:
        if not 0 <= overhead <= 511:
            raise RtcpFeedbackError("bad_overhead", f"measured overhead {overhead} does not fit 9 bits")
        exp, mantissa = _split_bitrate(bps, TMMBR_MANTISSA_BITS)
        out.append(struct.pack("!II", ssrc & 0xFFFFFFFF, (exp << 26) | (mantissa << 9) | overhead))
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class Tmmbr:
    """Temporary Maximum Media Stream Bit Rate Request (RFC 5104 4.2.1):
    ``entries`` are (media SSRC, max total bitrate bps, per-packet overhead bytes)."""

    sender_ssrc: int
    entries: tuple[tuple[int, int, int], ...]

    def to_bytes(self) -> bytes:
        if not self.entries:
            raise RtcpFeedbackError("empty_tmmbr", "a TMMBR names at least one media source")
        return _packet(PT_RTPFB, FMT_TMMBR, self.sender_ssrc, 0, _tmmb_fci(self.entries))


@dataclass(frozen=True, slots=True)
class Tmmbn:
    """TMMB Notification (RFC 5104 4.2.2): the bounding set the media sender honours
    (entries name the *requesters'* SSRCs; an empty set is allowed)."""

    sender_ssrc: int
    entries: tuple[tuple[int, int, int], ...] = ()

    def to_bytes(self) -> bytes:
        return _packet(PT_RTPFB, FMT_TMMBN, self.sender_ssrc, 0, _tmmb_fci(self.entries))


@dataclass(frozen=True, slots=True)
class GenericNack:
    """Generic NACK (RFC 4585 6.2.1): the sequence numbers of ``media_ssrc`` that were lost.

    ``lost_seqs`` are in stream order; each FCI entry covers a PID and the 16 after it (BLP).
    """

    sender_ssrc: int
    media_ssrc: int
    lost_seqs: tuple[int, ...]

    def to_bytes(self) -> bytes:
        if not self.lost_seqs:
            raise RtcpFeedbackError("empty_nack", "a NACK names at least one lost packet")
        entries: list[list[int]] = []  # [pid, blp, highest bit used]
        for seq in self.lost_seqs:
            seq &= 0xFFFF
            if entries:
                pid, _, top = entries[-1]
                offset = (seq - pid) & 0xFFFF
                if top < offset <= 16:
                    entries[-1][1] |= 1 << (offset - 1)
                    entries[-1][2] = offset
                    continue
            entries.append([seq, 0, 0])
        fci = b"".join(struct.pack("!HH", pid, blp) for pid, blp, _ in entries)
        return _packet(PT_RTPFB, FMT_NACK, self.sender_ssrc, self.media_ssrc, fci)


Feedback = Pli | Fir | Remb | Tmmbr | Tmmbn | GenericNack


def parse_feedback(raw: RawRtcp) -> Feedback | None:
    """The feedback message in ``raw`` (a packet ``bridge.rtcp.parse_compound`` did not model).

    ``None`` for packet types or formats we do not use; :class:`RtcpFeedbackError` (and a
    ``video.rtcp_fb.malformed`` debug event) for a malformed one.
    """
    try:
        return _parse(raw)
    except RtcpFeedbackError as exc:
        log.debug("video.rtcp_fb.malformed", packet_type=raw.packet_type, fmt=raw.fmt, reason=exc.reason)
        raise


def _parse(raw: RawRtcp) -> Feedback | None:
    kind = (raw.packet_type, raw.fmt)
    if kind not in ((PT_RTPFB, FMT_NACK), (PT_RTPFB, FMT_TMMBR), (PT_RTPFB, FMT_TMMBN),
                    (PT_PSFB, FMT_PLI), (PT_PSFB, FMT_FIR), (PT_PSFB, FMT_AFB)):
        return None
    body = raw.body
    if len(body) < 4:
        raise RtcpFeedbackError("truncated", "no media source SSRC")
    (media,) = struct.unpack_from("!I", body)
    fci = body[4:]
    if kind == (PT_PSFB, FMT_PLI):
        return Pli(raw.ssrc, media)  # RFC 4585 6.3.1.2: no FCI (extra words are ignored)
    if kind == (PT_PSFB, FMT_AFB):
        return _parse_remb(raw.ssrc, fci)
    if kind == (PT_PSFB, FMT_FIR):
        if not fci or len(fci) % 8:
            raise RtcpFeedbackError("malformed_fir", f"FCI of {len(fci)} bytes (entries are 8)")
        return Fir(raw.ssrc, tuple((ssrc, seq) for ssrc, seq in struct.iter_unpack("!IB3x", fci)))
    if kind == (PT_RTPFB, FMT_NACK):
        if not fci or len(fci) % 4:
            raise RtcpFeedbackError("malformed_nack", f"FCI of {len(fci)} bytes (entries are 4)")
        lost: list[int] = []
        for pid, blp in struct.iter_unpack("!HH", fci):
            lost.append(pid)
            lost.extend((pid + bit + 1) & 0xFFFF for bit in range(16) if blp >> bit & 1)
        return GenericNack(raw.ssrc, media, tuple(lost))
    if len(fci) % 8 or (kind == (PT_RTPFB, FMT_TMMBR) and not fci):
        raise RtcpFeedbackError("malformed_tmmbr", f"FCI of {len(fci)} bytes (entries are 8)")
    entries = tuple((ssrc, ((word >> 9) & 0x1FFFF) << (word >> 26), word & 0x1FF)
                    for ssrc, word in struct.iter_unpack("!II", fci))
    return Tmmbr(raw.ssrc, entries) if raw.fmt == FMT_TMMBR else Tmmbn(raw.ssrc, entries)


def _parse_remb(sender: int, fci: bytes) -> Remb | None:
    if fci[:4] != REMB_ID:
        return None  # some other application layer feedback
    if len(fci) < 8:
        raise RtcpFeedbackError("malformed_remb", f"FCI of {len(fci)} bytes, need 8")
    count, b1, low = struct.unpack_from("!BBH", fci, 4)
    if len(fci) < 8 + 4 * count:
        raise RtcpFeedbackError("malformed_remb", f"{count} SSRCs announced, room for {(len(fci) - 8) // 4}")
    mantissa = ((b1 & 0x03) << 16) | low
    ssrcs = struct.unpack_from(f"!{count}I", fci, 8) if count else ()
    return Remb(sender, mantissa << (b1 >> 2), tuple(ssrcs))


@dataclass
class FirSequencer:
    """FIR command sequence numbers per media source (RFC 5104 4.3.1.1): +1 mod 256 per new
    request, starting at 0; :meth:`fir` builds the message."""

    sender_ssrc: int
    _seq: dict[int, int] = field(default_factory=dict, repr=False)

    def next_seq(self, media_ssrc: int) -> int:
        seq = (self._seq.get(media_ssrc, -1) + 1) & 0xFF
        self._seq[media_ssrc] = seq
        return seq

    def fir(self, media_ssrc: int) -> Fir:
        """A new FIR for ``media_ssrc`` (a new request: the sequence number moves on)."""
        return Fir(self.sender_ssrc, ((media_ssrc, self.next_seq(media_ssrc)),))
