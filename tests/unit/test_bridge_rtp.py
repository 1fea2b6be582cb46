"""RTP header parse/serialise (RFC 3550 5.1) incl. malformed input, and RFC 4733 telephone-events."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.rtp import (
    DtmfReceiver,
    RtpError,
    RtpPacket,
    TelephoneEvent,
    looks_like_rtcp,
    seq_newer,
)

# A PCMU packet as a SIP phone sends it: V=2, M=1, PT=0, seq 0x1234, ts 0xDEADBEEF, SSRC 0x01020304.
VECTOR = bytes.fromhex("80801234deadbeef01020304") + b"\xff" * 160


def test_parse_known_vector() -> None:
    p = RtpPacket.parse(VECTOR)
    assert (p.payload_type, p.marker, p.sequence_number, p.timestamp, p.ssrc) == (0, True, 0x1234, 0xDEADBEEF,
                                                                                 0x01020304)
    assert p.payload == b"\xff" * 160 and p.csrc == () and p.extension_profile is None and p.padding == 0
    assert bytes(p) == VECTOR


def test_csrc_extension_and_padding_round_trip() -> None:
    p = RtpPacket(payload_type=9, sequence_number=65535, timestamp=2**32 - 1, ssrc=7, payload=b"abc",
                  marker=False, csrc=(1, 2, 3), extension_profile=0xBEDE, extension=b"\x10\xaa\x00\x00", padding=4)
    data = bytes(p)
    assert data[0] == 0x80 | 0x20 | 0x10 | 3
    assert len(data) == 12 + 12 + 4 + 4 + 3 + 4 and data[-1] == 4
    assert RtpPacket.parse(data) == p


@pytest.mark.parametrize("data, match", [
    (b"", "too short"),
    (VECTOR[:11], "too short"),
    (bytes([0x40]) + VECTOR[1:], "version 1"),
    (bytes([0x00]) + VECTOR[1:], "version 0"),
    (bytes([0x8F]) + VECTOR[1:12] + b"\x00" * 8, "CSRC"),
    (bytes([0x90]) + VECTOR[1:12] + b"\xbe\xde", "extension header truncated"),
    (bytes([0x90]) + VECTOR[1:12] + b"\xbe\xde\x00\x10" + b"\x00" * 8, "extension of 16 words"),
    (bytes([0xA0]) + VECTOR[1:12] + b"\x00\x00\x00", "padding length 0"),
    (bytes([0xA0]) + VECTOR[1:12] + b"\x00\x00\x09", "padding length 9"),
])
def test_malformed_packets_raise_typed_error(data: bytes, match: str) -> None:
    with pytest.raises(RtpError, match=match):
        RtpPacket.parse(data)


def test_serialise_refuses_impossible_headers() -> None:
    with pytest.raises(RtpError):
        bytes(RtpPacket(0, 0, 0, 0, csrc=tuple(range(16))))
    with pytest.raises(RtpError):
        bytes(RtpPacket(0, 0, 0, 0, extension_profile=1, extension=b"abc"))


@given(pt=st.integers(0, 127), seq=st.integers(0, 0xFFFF), ts=st.integers(0, 2**32 - 1),
       ssrc=st.integers(0, 2**32 - 1), payload=st.binary(max_size=64), marker=st.booleans(),
       csrc=st.lists(st.integers(0, 2**32 - 1), max_size=15).map(tuple),
       ext=st.one_of(st.none(), st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=16).map(
           lambda b: b[: len(b) // 4 * 4]))),
       padding=st.integers(0, 255))
def test_round_trip_property(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool,
                             csrc: tuple[int, ...], ext: tuple[int, bytes] | None, padding: int) -> None:
    p = RtpPacket(pt, seq, ts, ssrc, payload, marker, csrc, ext[0] if ext else None, ext[1] if ext else b"",
                  padding)
    assert RtpPacket.parse(bytes(p)) == p


@given(st.binary(max_size=80))
def test_arbitrary_bytes_parse_or_raise_rtp_error(data: bytes) -> None:
    try:
        p = RtpPacket.parse(data)
    except RtpError:
        return
    assert len(p.payload) <= len(data) - 12


def test_rtcp_detection_and_sequence_order() -> None:
    assert looks_like_rtcp(bytes([0x80, 200]) + b"\x00" * 6)  # sender report
    assert not looks_like_rtcp(VECTOR)
    assert seq_newer(1, 0) and seq_newer(0, 65535) and not seq_newer(65535, 0) and not seq_newer(5, 5)


def test_telephone_event_parse() -> None:
    ev = TelephoneEvent.parse(bytes([11, 0x80 | 10]) + struct.pack("!H", 800))
    assert (ev.event, ev.digit, ev.end, ev.volume, ev.duration) == (11, "#", True, 10, 800)
    assert bytes(ev) == bytes([11, 0x8A, 0x03, 0x20])
    assert TelephoneEvent.parse(bytes([200, 0, 0, 0])).digit is None  # not a DTMF key
    with pytest.raises(RtpError):
        TelephoneEvent.parse(b"\x01\x02")


def test_dtmf_receiver_reports_each_press_once() -> None:
    digits: list[str] = []
    rx = DtmfReceiver(digits.append)

    def pkt(event: int, ts: int, end: bool, duration: int) -> RtpPacket:
        return RtpPacket(101, 0, ts, 1, bytes(TelephoneEvent(event, end, 10, duration)))

    # "5" held for 3 updates then 3 end packets; then "#" whose start packet was lost.
    for p in [pkt(5, 1000, False, 160), pkt(5, 1000, False, 320), pkt(5, 1000, False, 480),
              pkt(5, 1000, True, 640), pkt(5, 1000, True, 640), pkt(5, 1000, True, 640),
              pkt(11, 5000, True, 800), pkt(11, 5000, True, 800)]:
        rx.receive(p)
    assert digits == ["5", "#"] and rx.events == 2
