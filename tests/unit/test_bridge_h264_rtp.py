"""H.264 RTP (RFC 6184): Annex B helpers, packetizer/depacketizer round trips with loss, hostile
payloads, and tshark as the independent judge of the FU-A/STAP-A packets we build."""

from __future__ import annotations

import random
import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.h264_rtp import (
    FU_A,
    NAL_IDR,
    NAL_PPS,
    NAL_SLICE,
    NAL_SPS,
    STAP_A,
    AccessUnit,
    H264DepacketizeError,
    H264Depacketizer,
    H264Error,
    H264PacketizeError,
    H264Packetizer,
    has_parameter_sets,
    is_keyframe,
    join_annexb,
    nal_type,
    split_annexb,
)
from bridge.rtp import RtpPacket

SPS = bytes([0x67, 0x42, 0xC0, 0x1F, 0xDA, 0x01, 0x40, 0x16, 0xE8])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])


def idr(size: int) -> bytes:
    return bytes([0x65]) + bytes((i * 7 + 1) & 0xFF or 1 for i in range(size - 1))


def p_slice(size: int) -> bytes:
    return bytes([0x41]) + bytes((i * 13 + 3) & 0xFF or 2 for i in range(size - 1))


# -- Annex B -------------------------------------------------------------------------------

def test_split_annexb_three_and_four_byte_start_codes_and_trailing_zeros() -> None:
    data = b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x01" + PPS + b"\x00\x00" + b"\x00\x00\x00\x01" + idr(20)
    assert split_annexb(data) == [SPS, PPS, idr(20)]
    assert split_annexb(join_annexb([SPS, PPS])) == [SPS, PPS]
    assert split_annexb(b"") == []


@pytest.mark.parametrize("data", [b"\x67\x42", b"\x01\x00\x00\x01\x67"])
def test_split_annexb_refuses_what_is_not_annexb(data: bytes) -> None:
    with pytest.raises(H264Error, match="not_annexb"):
        split_annexb(data)


def test_keyframe_is_an_idr_slice_and_parameter_sets_are_reported_apart() -> None:
    assert nal_type(SPS) == NAL_SPS and nal_type(PPS) == NAL_PPS and nal_type(idr(5)) == NAL_IDR
    assert is_keyframe([SPS, PPS, idr(30)]) and is_keyframe(join_annexb([idr(30)]))
    assert not is_keyframe([SPS, PPS]) and not is_keyframe([p_slice(30)])
    assert has_parameter_sets([SPS, PPS, idr(3)]) and not has_parameter_sets([idr(3)])
    with pytest.raises(H264Error):
        nal_type(b"")
    au = AccessUnit(nals=[SPS, PPS], timestamp=0, keyframe=False)
    assert au.annexb() == b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x00\x01" + PPS


# -- packetizer ----------------------------------------------------------------------------

def test_mode1_aggregates_parameter_sets_and_fragments_a_large_idr() -> None:
    pk = H264Packetizer(96, 0x1234, mtu=1200, initial_seq=65534)
    nal = idr(3000)
    packets = pk.packetize([SPS, PPS, nal], 90000)
    assert [p.sequence_number for p in packets] == [65534, 65535, 0, 1]
    assert [p.marker for p in packets] == [False, False, False, True]
    assert all(len(bytes(p)) <= 1200 for p in packets)
    stap = packets[0].payload
    assert stap[0] & 0x1F == STAP_A and stap[0] & 0x60 == 0x60  # NRI = max of SPS/PPS (3)
    assert stap[1:3] == struct.pack("!H", len(SPS)) and stap[3:3 + len(SPS)] == SPS
    fus = [p.payload for p in packets[1:]]
    assert [f[0] for f in fus] == [0x60 | FU_A] * 3
    assert [f[1] for f in fus] == [0x80 | NAL_IDR, NAL_IDR, 0x40 | NAL_IDR]
    assert bytes([0x65]) + b"".join(f[2:] for f in fus) == nal
    assert pk.next_seq == 2


def test_small_nal_alone_is_sent_as_a_single_nal_unit_packet() -> None:
    pk = H264Packetizer(96, 1, initial_seq=0)
    (p,) = pk.packetize([p_slice(100)], 3000)
    assert p.payload == p_slice(100) and p.marker and p.payload_type == 96


def test_mode0_sends_single_nal_units_and_refuses_one_larger_than_the_mtu() -> None:
    pk = H264Packetizer(97, 1, mtu=200, packetization_mode=0, initial_seq=10)
    packets = pk.packetize([SPS, PPS, idr(188)], 0)
    assert [p.payload for p in packets] == [SPS, PPS, idr(188)]
    with pytest.raises(H264PacketizeError, match="nal_exceeds_mtu"):
        pk.packetize([idr(189)], 3000)
    assert pk.next_seq == 13  # nothing consumed by the refused access unit
    with pytest.raises(H264PacketizeError):
        H264Packetizer(96, 1, packetization_mode=2)


nal_st = st.builds(
    lambda kind, nri, body: bytes([nri << 5 | kind]) + body,
    st.sampled_from([NAL_SLICE, NAL_IDR, 6, NAL_SPS, NAL_PPS, 9]),
    st.integers(0, 3),
    st.binary(min_size=0, max_size=3000),
)
au_st = st.lists(nal_st, min_size=1, max_size=6)


# -- depacketizer --------------------------------------------------------------------------

def _packet(payload: bytes, seq: int, ts: int = 0, marker: bool = False, ssrc: int = 5) -> RtpPacket:
    return RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts, ssrc=ssrc, payload=payload,
                     marker=marker)


def test_depacketizer_reassembles_and_clears_needs_keyframe_on_idr() -> None:
    pk = H264Packetizer(96, 5, initial_seq=100)
    dp = H264Depacketizer()
    assert dp.needs_keyframe  # nothing decodable yet
    out = [au for p in pk.packetize([SPS, PPS, idr(5000)], 0) for au in dp.push(p)]
    assert len(out) == 1 and out[0].nals == [SPS, PPS, idr(5000)] and out[0].keyframe
    assert not dp.needs_keyframe
    out = [au for p in pk.packetize([p_slice(2500)], 3000) for au in dp.push(p)]
    assert out == [AccessUnit(nals=[p_slice(2500)], timestamp=3000, keyframe=False)]
    assert dp.access_units == 2 and dp.dropped_incomplete == 0


def test_lost_fragment_drops_the_access_unit_and_asks_for_a_keyframe() -> None:
    pk = H264Packetizer(96, 5, initial_seq=0)
    dp = H264Depacketizer()
    for p in pk.packetize([SPS, PPS, idr(300)], 0):
        dp.push(p)
    packets = pk.packetize([p_slice(4000)], 3000)
    assert len(packets) == 4
    out = [au for i, p in enumerate(packets) if i != 2 for au in dp.push(p)]
    assert out == [] and dp.dropped_incomplete == 1 and dp.needs_keyframe
    # the next P frame is whole but useless without a keyframe; the flag stays up
    assert len([au for p in pk.packetize([p_slice(50)], 6000) for au in dp.push(p)]) == 1
    assert dp.needs_keyframe
    assert [au.keyframe for p in pk.packetize([SPS, PPS, idr(2000)], 9000) for au in dp.push(p)] == [True]
    assert not dp.needs_keyframe


def test_timestamp_change_without_marker_closes_the_access_unit() -> None:
    dp = H264Depacketizer()
    assert dp.push(_packet(idr(10), 1, ts=0)) == []
    out = dp.push(_packet(p_slice(10), 2, ts=3000, marker=True))
    assert [au.timestamp for au in out] == [0, 3000]


def test_duplicates_and_late_packets_are_dropped_and_counted_across_the_wrap() -> None:
    dp = H264Depacketizer()
    dp.push(_packet(idr(10), 65535, ts=0, marker=True))
    assert dp.push(_packet(idr(10), 65535, ts=0, marker=True)) == []
    assert dp.push(_packet(p_slice(10), 65500, ts=0, marker=True)) == []  # reordered, 35 behind
    assert dp.dropped_late == 2
    assert len(dp.push(_packet(p_slice(10), 0, ts=3000, marker=True))) == 1  # 65535 -> 0 is no gap
    assert dp.dropped_incomplete == 0


def test_sequence_restart_far_behind_is_a_discontinuity_not_late() -> None:
    dp = H264Depacketizer()
    dp.push(_packet(idr(10), 5000, ts=0, marker=True))
    assert dp.push(_packet(p_slice(10), 4899, ts=3000, marker=True)) == []  # 101 behind: restart
    assert dp.dropped_late == 0 and dp.dropped_incomplete == 1 and dp.needs_keyframe
    assert len(dp.push(_packet(idr(10), 4900, ts=6000, marker=True))) == 1 and not dp.needs_keyframe
    assert dp.push(_packet(idr(10), 4800, ts=6000, marker=True)) == [] and dp.dropped_late == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(nal_st.filter(lambda n: b"\x00\x00" not in n and not n.endswith(b"\x00")), max_size=8))
def test_annexb_join_split_round_trip(nals: list[bytes]) -> None:
    # emulation prevention (H.264 7.4.1) keeps 00 00 out of NAL units; trailing zeros are not payload
    assert split_annexb(join_annexb(nals)) == nals


def test_fragment_without_its_start_is_incomplete() -> None:
    dp = H264Depacketizer()
    assert dp.push(_packet(bytes([0x7C, 0x05]) + b"xx", 1)) == []  # FU-A middle, never started
    assert dp.push(_packet(bytes([0x7C, 0x45]) + b"yy", 2, marker=True)) == []
    assert dp.dropped_incomplete == 1


@pytest.mark.parametrize("kind, reason", [(25, "mode2_stap_b"), (26, "mode2_mtap16"), (27, "mode2_mtap24"),
                                          (29, "mode2_fu_b"), (0, "reserved_type"), (30, "reserved_type")])
def test_mode2_and_reserved_types_are_refused_with_a_counted_reason(kind: int, reason: str) -> None:
    dp = H264Depacketizer()
    with pytest.raises(H264DepacketizeError, match=reason):
        dp.push(_packet(bytes([0x60 | kind, 0, 1, 2]), 1, marker=True))
    assert dp.rejected[reason] == 1 and dp.dropped_incomplete == 1


@pytest.mark.parametrize("payload, reason", [
    (b"", "empty_payload"),
    (bytes([STAP_A, 0x00]), "malformed_stap_a"),
    (bytes([STAP_A, 0x00, 0x09, 0x67]), "malformed_stap_a"),
    (bytes([STAP_A, 0x00, 0x00]), "malformed_stap_a"),
    (bytes([STAP_A]), "malformed_stap_a"),
    (bytes([FU_A, 0x85]), "malformed_fu_a"),
    (bytes([FU_A, 0xC5, 0x00]), "malformed_fu_a"),
])
def test_malformed_aggregates_and_fragments(payload: bytes, reason: str) -> None:
    with pytest.raises(H264DepacketizeError, match=reason):
        H264Depacketizer().push(_packet(payload, 1, marker=True))


def test_refusal_keeps_the_access_unit_closed_by_its_timestamp() -> None:
    dp = H264Depacketizer()
    dp.push(_packet(idr(10), 1, ts=0))
    with pytest.raises(H264DepacketizeError) as info:
        dp.push(_packet(bytes([0x60 | 25, 0, 0]), 2, ts=3000))
    assert [au.timestamp for au in info.value.access_units] == [0]


def test_oversize_access_unit_is_dropped_and_memory_released() -> None:
    dp = H264Depacketizer(max_au_bytes=4000)
    pk = H264Packetizer(96, 5, initial_seq=0)
    assert [au for p in pk.packetize([idr(6000)], 0) for au in dp.push(p)] == []
    assert dp.dropped_oversize == 1 and dp.needs_keyframe and dp._nals == []
    assert len([au for p in pk.packetize([idr(3000)], 3000) for au in dp.push(p)]) == 1


def test_ssrc_change_abandons_the_partial_access_unit() -> None:
    dp = H264Depacketizer()
    dp.push(_packet(idr(10), 1, ts=0, ssrc=1))
    assert dp.push(_packet(idr(10), 500, ts=9, marker=True, ssrc=2))[0].timestamp == 9
    assert dp.dropped_incomplete == 1


# -- properties ----------------------------------------------------------------------------



@settings(max_examples=150, deadline=None)
@given(aus=st.lists(au_st, min_size=1, max_size=8), mtu=st.integers(60, 1500),
       seq0=st.integers(0, 0xFFFF), loss_seed=st.integers(0, 2**32), loss=st.sampled_from([0.0, 0.05, 0.3]))
def test_round_trip_with_random_loss_only_yields_whole_access_units(
        aus: list[list[bytes]], mtu: int, seq0: int, loss_seed: int, loss: float) -> None:
    pk = H264Packetizer(96, 7, mtu=mtu, initial_seq=seq0)
    per_au = [pk.packetize(nals, 3000 * i) for i, nals in enumerate(aus)]
    assert all(len(bytes(p)) <= mtu for ps in per_au for p in ps)
    rng = random.Random(loss_seed)
    flat = [p for ps in per_au for p in ps]
    delivered = [i == 0 or rng.random() >= loss for i in range(len(flat))]  # join at an AU boundary
    dp = H264Depacketizer()
    out: list[AccessUnit] = []
    for p, ok in zip(flat, delivered):
        if ok:
            out.extend(dp.push(RtpPacket.parse(bytes(p))))
    # An AU comes out exactly when all its packets and the packet before it arrived.
    expected, index = [], 0
    for i, ps in enumerate(per_au):
        mine = delivered[index:index + len(ps)]
        before = index == 0 or delivered[index - 1]
        if all(mine) and before:
            expected.append((aus[i], 3000 * i))
        index += len(ps)
    assert [(au.nals, au.timestamp) for au in out] == expected
    last_delivered = max(i for i, ok in enumerate(delivered) if ok)
    noticed = [i for i, ok in enumerate(delivered) if not ok and i < last_delivered]  # a later packet shows the gap
    if noticed:
        last_loss = noticed[-1]
        owner = next(i for i in range(len(per_au)) if sum(map(len, per_au[:i + 1])) > last_loss)
        healed = any(is_keyframe(nals) for nals, ts in expected if ts > 3000 * owner)
        assert dp.needs_keyframe != healed
        assert dp.dropped_incomplete >= 1 or len(expected) == len(aus)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=60), st.integers(0, 0xFFFF), st.integers(0, 5), st.booleans()),
                max_size=30))
def test_depacketizer_only_ever_raises_its_typed_error(packets: list[tuple[bytes, int, int, bool]]) -> None:
    dp = H264Depacketizer(max_au_bytes=200)
    for payload, seq, ts, marker in packets:
        try:
            for au in dp.push(_packet(payload, seq, ts, marker)):
                assert au.nals and all(au.nals)
        except H264DepacketizeError:
            pass


# -- a real encoder and decoder ------------------------------------------------------------

def _encode(frames: int) -> list[bytes]:
    """Annex B access units from libx264 (baseline, zerolatency: one AU per frame, SPS/PPS up front)."""
    import fractions

    import av
    import numpy as np

    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = 176, 144, "yuv420p"
    enc.time_base, enc.framerate = fractions.Fraction(1, 30), fractions.Fraction(30)
    enc.options = {"tune": "zerolatency", "preset": "ultrafast", "profile": "baseline", "g": "5"}
    out = []
    rng = np.random.default_rng(1)
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (144, 176, 3), dtype=np.uint8), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in enc.encode(frame)]
    out += [bytes(p) for p in enc.encode(None)]
    return out


@pytest.fixture(scope="module")
def encoded() -> list[bytes]:
    return _encode(10)


def _decode(aus: list[AccessUnit]) -> int:
    import av

    dec = av.CodecContext.create("h264", "r")
    frames = 0
    for au in aus:
        frames += len([f for f in dec.decode(av.Packet(au.annexb())) if f.width == 176])
    return frames


def test_libx264_stream_survives_packetize_depacketize_and_decodes(encoded: list[bytes]) -> None:
    pk = H264Packetizer(96, 9, mtu=1200, initial_seq=65500)
    dp = H264Depacketizer()
    aus = [au for i, data in enumerate(encoded)
           for p in pk.packetize(split_annexb(data), 3000 * i) for au in dp.push(RtpPacket.parse(bytes(p)))]
    print("access units", len(aus), "keyframes", sum(au.keyframe for au in aus),
          "bytes", sum(len(d) for d in encoded))
    assert [au.annexb() for au in aus] == [join_annexb(split_annexb(d)) for d in encoded]
    assert aus[0].keyframe and has_parameter_sets(aus[0].nals)
    assert _decode(aus) == len(encoded)


def test_a_lost_fragment_drops_exactly_its_picture_from_a_real_stream(encoded: list[bytes]) -> None:
    pk = H264Packetizer(96, 9, mtu=1200, initial_seq=0)
    dp = H264Depacketizer()
    per_au = [pk.packetize(split_annexb(d), 3000 * i) for i, d in enumerate(encoded)]
    victim = per_au[2][1]  # a fragment of the third picture (a P frame)
    aus = [au for ps in per_au for p in ps if p is not victim for au in dp.push(p)]
    assert dp.dropped_incomplete == 1
    assert [au.timestamp for au in aus] == [3000 * i for i in range(len(encoded)) if i != 2]
    print("decoded frames after one loss:", _decode(aus), "of", len(encoded))


# -- tshark --------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_decodes_our_stap_a_and_fu_a_packets_as_h264(tmp_path: Path) -> None:
    from tests.support.pcap import Flow, write_pcap
    from tests.support.tshark import decode

    first, second = _encode(2)[:2]
    pk = H264Packetizer(96, 0xCAFE, initial_seq=1)
    packets = pk.packetize(split_annexb(first), 90000) + pk.packetize(split_annexb(second), 93000)
    path = tmp_path / "h264.pcap"
    write_pcap(path, [Flow(bytes(p), ("192.0.2.10", 40000), ("192.0.2.20", 50000), proto="udp")
                      for p in packets])
    rows = decode(path, None, ["rtp.seq", "rtp.marker", "h264.nal_unit_hdr", "h264.nal_unit_type",
                               "h264.start.bit", "h264.end.bit", "_ws.expert.message", "_ws.malformed"],
                  decode_as=["udp.port==40000,rtp", "rtp.pt==96,h264"])
    for row in rows:
        print(row)
    assert len(rows) == len(packets) and not any(r["_ws.malformed"] for r in rows)
    assert rows[0]["h264.nal_unit_hdr"].split(",")[:3] == ["24", "7", "8"]  # STAP-A of SPS, PPS, SEI
    fu_rows = [r for r in rows if r["h264.nal_unit_hdr"] == "28"]
    assert fu_rows and {r["h264.nal_unit_type"] for r in fu_rows} <= {"1", "5"}
    starts = [r["h264.start.bit"] for r in fu_rows]
    ends = [r["h264.end.bit"] for r in fu_rows]
    assert starts.count("1") == ends.count("1") >= 2
    assert [r["rtp.marker"] for r in rows].count("1") == 2 and rows[-1]["rtp.marker"] == "1"
