"""RTCP compound build/parse (RFC 3550 6), hostile input, receiver statistics (A.1/A.3/A.8), RTT."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.rtcp import (
    PT_PSFB,
    PT_RTPFB,
    Bye,
    RawRtcp,
    ReceiverReport,
    ReceiverStatistics,
    ReportBlock,
    RtcpError,
    SdesChunk,
    SenderReport,
    SourceDescription,
    build_compound,
    ntp_from_unix,
    ntp_middle,
    parse_compound,
    report_interval,
    round_trip_time,
)

# Hand-assembled from the RFC 3550 6.4.1 / 6.5 layouts: SR from SSRC 0x11223344 (NTP
# 0xE3A1B2C3.0x80000000, RTP ts 160, 10 packets, 1600 octets) with one block about
# 0xAABBCCDD (fraction 0x40, cumulative 3, ext. highest 0x0001FFFF, jitter 40, LSR 0x1234,
# DLSR 0x10000), then SDES CNAME "gw@r" for the same SSRC.
SR_SDES = bytes.fromhex(
    "81c8000c" "11223344" "e3a1b2c3" "80000000" "000000a0" "0000000a" "00000640"
    "aabbccdd" "40000003" "0001ffff" "00000028" "00001234" "00010000"
    "81ca0003" "11223344" "0104" "67774072" "0000"
)

u32 = st.integers(0, 2**32 - 1)
blocks = st.builds(ReportBlock, u32, st.integers(0, 255), st.integers(-0x800000, 0x7FFFFF), u32, u32, u32, u32)
packets = st.one_of(
    st.builds(SenderReport, u32, st.integers(0, 2**64 - 1), u32, u32, u32,
              st.lists(blocks, max_size=31).map(tuple)),
    st.builds(ReceiverReport, u32, st.lists(blocks, max_size=31).map(tuple)),
    st.builds(SourceDescription, st.lists(st.builds(
        SdesChunk, u32, st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=255)), max_size=4).map(tuple)),
        max_size=4).map(tuple)),
    st.builds(Bye, st.lists(u32, max_size=31).map(tuple),
              st.one_of(st.none(), st.text(st.characters(codec="ascii"), max_size=255))),
    st.builds(RawRtcp, st.sampled_from([PT_RTPFB, PT_PSFB, 204, 207, 195]), st.integers(0, 31), u32,
              st.binary(max_size=64).map(lambda b: b[: len(b) // 4 * 4])),
)


def test_known_vector_parses_and_rebuilds() -> None:
    sr, sdes = parse_compound(SR_SDES)
    assert isinstance(sr, SenderReport) and isinstance(sdes, SourceDescription)
    assert (sr.ssrc, sr.ntp_timestamp, sr.rtp_timestamp, sr.packet_count, sr.octet_count) == (
        0x11223344, 0xE3A1B2C3_80000000, 160, 10, 1600)
    assert sr.reports == (ReportBlock(0xAABBCCDD, 0x40, 3, 0x1FFFF, 40, 0x1234, 0x10000),)
    assert sr.reports[0].loss_fraction == 0.25
    assert sr.ntp_middle == 0xB2C38000
    assert sdes.chunks[0].cname == "gw@r"
    assert build_compound([sr, sdes]) == SR_SDES


@given(st.lists(packets, min_size=1, max_size=5))
def test_round_trip(items: list) -> None:
    assert parse_compound(build_compound(items)) == items


@given(st.lists(packets, min_size=1, max_size=3))
def test_prebuilt_bytes_mix_with_objects(items: list) -> None:
    pli = bytes(RawRtcp(PT_PSFB, 1, 0x01020304, struct.pack("!I", 0x05060708)))
    out = parse_compound(build_compound([items[0], pli, *items[1:]]))
    assert out[1] == RawRtcp(PT_PSFB, 1, 0x01020304, b"\x05\x06\x07\x08")
    assert [out[0], *out[2:]] == items


def test_unknown_types_come_back_raw_with_padding_removed() -> None:
    # RTPFB generic NACK (FMT 1) with padding: 3 words of body + 4 padding octets (last = 4).
    nack = bytes.fromhex("a1cd0004" "deadbeef" "cafebabe" "00640003" "00000004")
    rr = bytes(ReceiverReport(7))
    out = parse_compound(rr + nack)
    assert out == [ReceiverReport(7), RawRtcp(PT_RTPFB, 1, 0xDEADBEEF, bytes.fromhex("cafebabe00640003"))]


def test_negative_cumulative_lost_is_signed_24_bits() -> None:
    block = ReportBlock(1, cumulative_lost=-1)
    assert bytes(block)[5:8] == b"\xff\xff\xff"
    assert parse_compound(bytes(ReceiverReport(2, (block,))))[0].reports[0].cumulative_lost == -1


@pytest.mark.parametrize(("data", "fault"), [
    (b"", "shorter than a header"),
    (b"\x81\xc9\x00", "shorter than a header"),
    (bytes.fromhex("41c90001 00000001"), "version"),
    (bytes.fromhex("81c90007 00000001"), "runs past"),
    (bytes.fromhex("81c90001 00000001"), "report blocks"),
    (bytes.fromhex("80c80001 00000001"), "sender info"),
    (bytes.fromhex("a0c90001 00000000"), "padding"),
    (bytes.fromhex("a0c90001 00000009"), "padding"),
    (bytes.fromhex("81ca0001 00000001"), "END"),
    (bytes.fromhex("81ca0002 00000001 01090000"), "runs past"),
    (bytes.fromhex("82cb0001 00000001"), "BYE claims"),
    (bytes.fromhex("81cb0002 00000001 05610000"), "reason"),
    (bytes.fromhex("81cd0000"), "sender SSRC"),
    (bytes.fromhex("80c90001 00000001 0000"), "trailing"),
])
def test_hostile_input_is_a_typed_error(data: bytes, fault: str) -> None:
    with pytest.raises(RtcpError, match=fault):
        parse_compound(data)


@given(st.binary(max_size=200))
def test_fuzz_never_crashes(data: bytes) -> None:
    try:
        parse_compound(data)
    except RtcpError:
        pass


@given(st.lists(packets, min_size=1, max_size=3), st.data())
def test_mutated_compounds_never_crash(items: list, data: st.DataObject) -> None:
    raw = bytearray(build_compound(items))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        parse_compound(bytes(raw))
    except RtcpError:
        pass


def test_build_refuses_what_does_not_fit() -> None:
    with pytest.raises(RtcpError):
        build_compound([])
    with pytest.raises(RtcpError):
        bytes(ReceiverReport(1, tuple(ReportBlock(i) for i in range(32))))
    with pytest.raises(RtcpError):
        bytes(RawRtcp(PT_PSFB, 1, 1, b"abc"))


# -- statistics ---------------------------------------------------------------------------------


def feed(stats: ReceiverStatistics, seqs: list[int], *, jitter_s: float = 0.0, seed: int = 1) -> None:
    rng = random.Random(seed)
    for seq in seqs:
        t = (seq - seqs[0]) % 65536 * 0.02
        stats.update(seq % 65536, (1000 + (seq - seqs[0]) * 160) % 2**32, 100.0 + t + rng.uniform(0, jitter_s))


def test_loss_fraction_and_cumulative_over_intervals() -> None:
    s = ReceiverStatistics(ssrc=9, clock_rate=8000)
    feed(s, [i for i in range(65500, 65500 + 100) if i % 10 != 3])  # 10 % loss across the seq wrap
    first = s.report_block(now=200.0)
    assert first.cumulative_lost == 10 and first.fraction_lost == 25  # 10/99 * 256 (last one lost never counts)
    assert first.highest_seq == 65536 + (65599 - 65536)
    feed(s, list(range(65600, 65700)))
    second = s.report_block(now=202.0)
    assert second.fraction_lost == 0 and second.cumulative_lost == 10


def test_jitter_tracks_arrival_variation_in_ms() -> None:
    steady = ReceiverStatistics(ssrc=1, clock_rate=8000)
    feed(steady, list(range(500)))
    jittery = ReceiverStatistics(ssrc=1, clock_rate=8000)
    feed(jittery, list(range(500)), jitter_s=0.05)
    print(f"jitter steady={steady.jitter_ms:.2f} ms, 50 ms uniform={jittery.jitter_ms:.2f} ms")
    assert steady.jitter_ms < 0.01
    # Uniform 0..50 ms arrival noise: E|D| = 50/3 ms ~ 16.7 ms.
    assert 10 < jittery.jitter_ms < 25


def test_jitter_is_wrap_safe_on_timestamps() -> None:
    s = ReceiverStatistics(ssrc=1, clock_rate=8000)
    for i in range(200):
        s.update(i, (2**32 - 50 * 160 + i * 160) % 2**32, i * 0.02)
    assert s.jitter_ms < 0.01


def test_restart_after_a_big_jump_needs_two_in_a_row() -> None:
    s = ReceiverStatistics(ssrc=1, clock_rate=8000)
    feed(s, list(range(100)))
    assert s.update(20_000, 0, 10.0) is False  # a stray
    assert s.update(20_001, 160, 10.02) is True  # confirmed: sequence restarted
    assert s.expected == 1 and s.received == 1


def test_dlsr_and_round_trip() -> None:
    s = ReceiverStatistics(ssrc=1, clock_rate=8000)
    sent_at = 1_700_000_000.0
    sr = SenderReport(5, ntp_from_unix(sent_at), 0, 0, 0)
    s.sender_report_received(sr, arrival=50.0)
    block = s.report_block(now=50.25)  # we hold it 250 ms before reporting
    assert block.lsr == ntp_middle(ntp_from_unix(sent_at)) and abs(block.dlsr / 65536 - 0.25) < 1e-4
    # The original sender gets the report back 40 ms of network later in total.
    rtt = round_trip_time(block, ntp_from_unix(sent_at + 0.25 + 0.04))
    assert rtt is not None and abs(rtt - 0.04) < 1e-3
    assert round_trip_time(ReportBlock(1), ntp_from_unix(sent_at)) is None
    assert round_trip_time(block, ntp_from_unix(sent_at - 10)) is None


def test_report_interval_is_randomised_around_five_seconds() -> None:
    rng = random.Random(3)
    values = [report_interval(rng) for _ in range(1000)]
    assert min(values) >= 5 * 0.5 / 1.21828 and max(values) <= 5 * 1.5 / 1.21828
    assert len({round(v, 3) for v in values}) > 100


@given(st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 2**32 - 1)), max_size=200), st.integers(0, 3))
def test_receiver_statistics_survive_any_sequence(packets: list[tuple[int, int]], reports: int) -> None:
    s = ReceiverStatistics(ssrc=1, clock_rate=8000)
    for i, (seq, ts) in enumerate(packets):
        s.update(seq, ts, i * 0.02)
        if reports and i % 50 == 0:
            block = s.report_block(now=i * 0.02)
            assert 0 <= block.fraction_lost <= 255 and block.jitter >= 0
            assert ReportBlock.parse(bytes(block), 0).fraction_lost == block.fraction_lost
    assert s.received <= len(packets) and s.jitter >= 0
