"""A timestamp inside the H.264 stream itself, for the video benchmark's end-to-end frame latency.

Each access unit a benchmark caller sends carries one SEI NAL unit (H.264 7.3.2.3.1, payloadType
5, "user data unregistered") with the benchmark's own 16-byte UUID and 16 bytes of user data:
the call id, the frame number and the sender's ``CLOCK_REALTIME`` in nanoseconds. A path that
forwards access units untouched delivers it to the far caller, which reads it for the frame's
one-way latency; a path that decodes and re-encodes drops it, and the benchmark says so instead of
inventing a figure. Sans-IO: bytes in, bytes out.

The RBSP is escaped with emulation-prevention bytes (H.264 7.4.1: no ``00 00 0x`` with x <= 3
inside a NAL unit), which the timestamp's bytes would otherwise produce now and then.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from bridge.h264_rtp import nal_type

#: This benchmark's UUID (uuid_iso_iec_11578): SEI of any other UUID (x264's own) is not ours.
BENCH_UUID = bytes.fromhex("726f6f6d676174652d62656e63682d31")  # "roomgate-bench-1"
NAL_SEI = 6
PAYLOAD_USER_DATA_UNREGISTERED = 5
_STAMP = struct.Struct("!IIQ")  # call id, frame number, CLOCK_REALTIME ns
_PAYLOAD_SIZE = len(BENCH_UUID) + _STAMP.size
_VCL = range(1, 6)


class SeiError(ValueError):
    """An SEI NAL unit that claims to be ours but cannot be read (truncated or malformed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Stamp:
    """What the sender wrote into one access unit."""

    call_id: int
    frame: int
    realtime_ns: int


def escape(rbsp: bytes) -> bytes:
    """RBSP -> NAL payload: an emulation-prevention 0x03 after every ``00 00`` before a byte <= 3."""
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def unescape(payload: bytes) -> bytes:
    """NAL payload -> RBSP: drop each 0x03 that follows ``00 00``."""
    if b"\x00\x00\x03" not in payload:
        return payload
    out = bytearray()
    zeros = 0
    for b in payload:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def stamp_nal(stamp: Stamp) -> bytes:
    """The SEI NAL unit carrying ``stamp`` (nal_ref_idc 0: a decoder may drop it)."""
    rbsp = (bytes([PAYLOAD_USER_DATA_UNREGISTERED, _PAYLOAD_SIZE]) + BENCH_UUID
            + _STAMP.pack(stamp.call_id & 0xFFFFFFFF, stamp.frame & 0xFFFFFFFF, stamp.realtime_ns)
            + b"\x80")  # rbsp_trailing_bits
    return bytes([NAL_SEI]) + escape(rbsp)


def read_stamp(nal: bytes) -> Stamp | None:
    """Our stamp from an SEI NAL unit; None for any other NAL or SEI (x264 writes its own).

    Raises :class:`SeiError` when the SEI has our UUID but the rest cannot be read.
    """
    if not nal or nal_type(nal) != NAL_SEI:
        return None
    rbsp = unescape(nal[1:])
    if len(rbsp) < 2 or rbsp[0] != PAYLOAD_USER_DATA_UNREGISTERED or rbsp[1] != _PAYLOAD_SIZE:
        return None
    if rbsp[2:2 + len(BENCH_UUID)] != BENCH_UUID:
        return None
    body = rbsp[2 + len(BENCH_UUID):2 + _PAYLOAD_SIZE]
    if len(body) != _STAMP.size:
        raise SeiError("truncated")
    call_id, frame, realtime_ns = _STAMP.unpack(body)
    return Stamp(call_id, frame, realtime_ns)


def with_stamp(nals: Sequence[bytes], stamp: Stamp) -> list[bytes]:
    """The access unit's NAL units with the stamp's SEI before the first slice (7.4.1.2.3: SEI
    precedes the primary coded picture; after any SPS/PPS)."""
    first_vcl = next((i for i, n in enumerate(nals) if nal_type(n) in _VCL), len(nals))
    return [*nals[:first_vcl], stamp_nal(stamp), *nals[first_vcl:]]


STAP_A = 24


def stamp_in_payload(payload: bytes) -> Stamp | None:
    """Our stamp from one H.264 RTP payload (RFC 6184): a single SEI NAL unit, or one inside a
    STAP-A (the packetizer aggregates the SEI with small NAL units). Cheap on every other payload:
    one byte is looked at. Raises :class:`SeiError` on a STAP-A whose lengths overrun it."""
    if not payload:
        return None
    kind = payload[0] & 0x1F
    if kind == NAL_SEI:
        return read_stamp(payload)
    if kind != STAP_A:
        return None
    i = 1
    while i + 2 <= len(payload):
        size = int.from_bytes(payload[i:i + 2], "big")
        nal = payload[i + 2:i + 2 + size]
        if size == 0 or len(nal) != size:
            raise SeiError("stap_a_truncated")
        found = read_stamp(nal)
        if found is not None:
            return found
        i += 2 + size
    return None
