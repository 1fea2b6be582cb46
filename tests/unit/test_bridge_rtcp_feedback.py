"""RTCP feedback (RFC 4585, RFC 5104, REMB): known vectors, round trips through
bridge.rtcp.parse_compound, malformed packets, and tshark decoding what we build."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.rtcp import (
    PT_APP,
    PT_PSFB,
    PT_RTPFB,
    RawRtcp,
    ReceiverReport,
    build_compound,
    parse_compound,
)
from bridge.rtcp_feedback import (
    REMB_MANTISSA_BITS,
    Feedback,
    Fir,
    FirSequencer,
    GenericNack,
    Pli,
    Remb,
    RtcpFeedbackError,
    Tmmbn,
    Tmmbr,
    parse_feedback,
    quantize_bitrate,
)


def _via_compound(fb: Feedback) -> Feedback | None:
    """Put the message in a compound after an RR, as a peer sends it, and parse it back."""
    packets = parse_compound(build_compound([ReceiverReport(fb.sender_ssrc), fb.to_bytes()]))
    raw = packets[1]
    assert isinstance(raw, RawRtcp)
    return parse_feedback(raw)


def test_pli_known_vector() -> None:
    # RFC 4585 6.1: V=2 FMT=1 PT=206 length=2, sender 0x11111111, media 0x22222222
    data = Pli(0x11111111, 0x22222222).to_bytes()
    assert data == bytes.fromhex("81ce0002" "11111111" "22222222")
    assert _via_compound(Pli(0x11111111, 0x22222222)) == Pli(0x11111111, 0x22222222)


def test_fir_known_vector_and_sequencer() -> None:
    seq = FirSequencer(sender_ssrc=1)
    first, second = seq.fir(0xABCD), seq.fir(0xABCD)
    assert first == Fir(1, ((0xABCD, 0),)) and second == Fir(1, ((0xABCD, 1),))
    assert seq.fir(7).entries == ((7, 0),)  # per media source
    # RFC 5104 4.3.1.2: media source SSRC 0; FCI = SSRC, seq nr, 3 reserved bytes
    assert second.to_bytes() == bytes.fromhex("84ce0004" "00000001" "00000000" "0000abcd" "01000000")
    for _ in range(254):
        seq.next_seq(0xABCD)
    assert seq.fir(0xABCD).entries[0][1] == 0  # 8-bit wrap


def test_remb_known_vector() -> None:
    # 1 000 000 bps = 0x0F4240 -> exp 2, mantissa 250000 (fits 18 bits)
    data = Remb(5, 1_000_000, (0x1234, 0x5678)).to_bytes()
    assert data[:4] == bytes.fromhex("8fce0006") and data[12:16] == b"REMB"
    assert data[16] == 2 and (data[17] >> 2, ((data[17] & 3) << 16) | int.from_bytes(data[18:20], "big")) \
        == (2, 250_000)
    assert _via_compound(Remb(5, 1_000_000, (0x1234, 0x5678))) == Remb(5, 1_000_000, (0x1234, 0x5678))


def test_tmmbr_and_tmmbn_known_vector() -> None:
    # 2 Mbit/s: 17-bit mantissa -> exp 4, mantissa 125000; overhead 40
    data = Tmmbr(9, ((0xBEEF, 2_000_000, 40),)).to_bytes()
    word = (4 << 26) | (125000 << 9) | 40
    assert data == bytes.fromhex("83cd0004" "00000009" "00000000" "0000beef") + struct.pack("!I", word)
    assert _via_compound(Tmmbr(9, ((0xBEEF, 2_000_000, 40),))) == Tmmbr(9, ((0xBEEF, 2_000_000, 40),))
    assert _via_compound(Tmmbn(3)) == Tmmbn(3, ())  # empty bounding set is allowed


def test_bitrates_round_down_never_up() -> None:
    assert quantize_bitrate(131071) == 131071 and quantize_bitrate(131073) == 131072
    assert quantize_bitrate(10_000_001, REMB_MANTISSA_BITS) == 10_000_001 // 64 * 64  # 24 bits: exponent 6
    got = _via_compound(Remb(1, 12_345_679, ()))
    assert isinstance(got, Remb) and got.bitrate_bps == quantize_bitrate(12_345_679, REMB_MANTISSA_BITS)
    assert got.bitrate_bps <= 12_345_679


def test_generic_nack_packs_runs_into_pid_and_blp() -> None:
    nack = GenericNack(1, 2, (100, 101, 103, 116, 117, 65535, 0))
    data = nack.to_bytes()
    fci = data[12:]
    assert list(struct.iter_unpack("!HH", fci)) == [(100, 0b1000000000000101), (117, 0), (65535, 1)]
    assert _via_compound(nack) == nack


def test_feedback_we_do_not_use_is_none() -> None:
    assert parse_feedback(RawRtcp(PT_PSFB, 2, 1, b"\x00" * 8)) is None  # SLI
    assert parse_feedback(RawRtcp(PT_RTPFB, 15, 1, b"\x00" * 8)) is None  # transport-cc
    assert parse_feedback(RawRtcp(PT_PSFB, 15, 1, b"\x00" * 4 + b"ABCD" + b"\x00" * 4)) is None  # other AFB
    assert parse_feedback(RawRtcp(PT_APP, 1, 1, b"name")) is None


@pytest.mark.parametrize("raw, reason", [
    (RawRtcp(PT_PSFB, 1, 1, b""), "truncated"),
    (RawRtcp(PT_PSFB, 4, 1, b"\x00" * 4), "malformed_fir"),
    (RawRtcp(PT_PSFB, 4, 1, b"\x00" * 8), "malformed_fir"),
    (RawRtcp(PT_RTPFB, 1, 1, b"\x00" * 4), "malformed_nack"),
    (RawRtcp(PT_RTPFB, 1, 1, b"\x00" * 6), "malformed_nack"),
    (RawRtcp(PT_RTPFB, 3, 1, b"\x00" * 4), "malformed_tmmbr"),
    (RawRtcp(PT_RTPFB, 4, 1, b"\x00" * 8), "malformed_tmmbr"),
    (RawRtcp(PT_PSFB, 15, 1, b"\x00" * 4 + b"REMB"), "malformed_remb"),
    (RawRtcp(PT_PSFB, 15, 1, b"\x00" * 4 + b"REMB" + b"\x03\x00\x00\x00" + b"\x00" * 8), "malformed_remb"),
])
def test_malformed_feedback_raises_typed_error(raw: RawRtcp, reason: str) -> None:
    with pytest.raises(RtcpFeedbackError, match=reason):
        parse_feedback(raw)


def test_unencodable_values_raise_typed_error() -> None:
    with pytest.raises(RtcpFeedbackError):
        Fir(1, ()).to_bytes()
    with pytest.raises(RtcpFeedbackError):
        GenericNack(1, 2, ()).to_bytes()
    with pytest.raises(RtcpFeedbackError):
        Remb(1, 1000, tuple(range(256))).to_bytes()
    with pytest.raises(RtcpFeedbackError):
        Tmmbr(1, ((1, 1000, 512),)).to_bytes()
    with pytest.raises(RtcpFeedbackError):
        Tmmbr(1, ((1, -1, 0),)).to_bytes()


# -- properties ----------------------------------------------------------------------------

ssrc = st.integers(0, 2**32 - 1)
rate = st.integers(0, 10**10)


@st.composite
def nack_seqs(draw: st.DrawFn) -> tuple[int, ...]:
    base = draw(st.integers(0, 0xFFFF))
    offsets = draw(st.lists(st.integers(0, 2000), min_size=1, max_size=60, unique=True))
    return tuple((base + o) & 0xFFFF for o in sorted(offsets))


feedback = st.one_of(
    st.builds(Pli, ssrc, ssrc),
    st.builds(Fir, ssrc, st.lists(st.tuples(ssrc, st.integers(0, 255)), min_size=1, max_size=5).map(tuple)),
    st.builds(Remb, ssrc, rate.map(lambda r: quantize_bitrate(r, REMB_MANTISSA_BITS)),
              st.lists(ssrc, max_size=8).map(tuple)),
    st.builds(Tmmbr, ssrc, st.lists(st.tuples(ssrc, rate.map(quantize_bitrate), st.integers(0, 511)),
                                    min_size=1, max_size=4).map(tuple)),
    st.builds(Tmmbn, ssrc, st.lists(st.tuples(ssrc, rate.map(quantize_bitrate), st.integers(0, 511)),
                                    max_size=4).map(tuple)),
    st.builds(GenericNack, ssrc, ssrc, nack_seqs()),
)


@settings(max_examples=300, deadline=None)
@given(feedback)
def test_every_message_round_trips_through_a_compound(fb: Feedback) -> None:
    assert _via_compound(fb) == fb


@settings(max_examples=300, deadline=None)
@given(rate, st.sampled_from([17, 18]))
def test_quantized_bitrate_is_the_largest_representable_value_not_above(bps: int, bits: int) -> None:
    q = quantize_bitrate(bps, bits)
    exp = max(0, bps.bit_length() - bits)
    assert q <= bps < q + (1 << exp)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([PT_RTPFB, PT_PSFB]), st.integers(0, 31), ssrc, st.binary(max_size=80))
def test_parser_only_raises_its_typed_error(pt: int, fmt: int, sender: int, body: bytes) -> None:
    try:
        parse_feedback(RawRtcp(pt, fmt, sender, body))
    except RtcpFeedbackError:
        pass


# -- tshark --------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_decodes_our_feedback_without_malformed_fields(tmp_path: Path) -> None:
    from tests.support.pcap import Flow, write_pcap
    from tests.support.tshark import decode

    messages: list[Feedback] = [
        Pli(0x1111, 0x2222), FirSequencer(0x1111).fir(0x2222), Remb(0x1111, 1_500_000, (0x2222,)),
        Tmmbr(0x1111, ((0x2222, 768_000, 40),)), Tmmbn(0x2222, ((0x1111, 768_000, 40),)),
        GenericNack(0x1111, 0x2222, (10, 12, 40)),
    ]
    path = tmp_path / "fb.pcap"
    write_pcap(path, [Flow(build_compound([ReceiverReport(0x1111), m.to_bytes()]),
                           ("192.0.2.10", 40001), ("192.0.2.20", 50001), proto="udp") for m in messages])
    rows = decode(path, None, ["rtcp.pt", "rtcp.rtpfb.fmt", "rtcp.psfb.fmt", "rtcp.psfb.fir.fci.csn",
                               "rtcp.psfb.remb.fci.br_exp", "rtcp.psfb.remb.fci.br_mantissa",
                               "rtcp.rtpfb.tmmbr.fci.exp", "rtcp.rtpfb.tmmbr.fci.mantissa",
                               "rtcp.rtpfb.tmmbr.fci.measuredoverhead", "rtcp.rtpfb.nack_pid",
                               "rtcp.rtpfb.nack_blp", "_ws.malformed", "_ws.expert.message"],
                  decode_as=["udp.port==40001,rtcp"])
    for row in rows:
        print(row)
    assert len(rows) == len(messages) and not any(r["_ws.malformed"] for r in rows)
    assert [r["rtcp.pt"] for r in rows] == ["201,206", "201,206", "201,206", "201,205", "201,205", "201,205"]
    assert [r["rtcp.psfb.fmt"] for r in rows[:3]] == ["1", "4", "15"]
    assert [r["rtcp.rtpfb.fmt"] for r in rows[3:]] == ["3", "4", "1"]
    assert rows[1]["rtcp.psfb.fir.fci.csn"] == "0"
    assert int(rows[2]["rtcp.psfb.remb.fci.br_mantissa"]) << int(rows[2]["rtcp.psfb.remb.fci.br_exp"]) == 1_500_000
    for row in rows[3:5]:
        assert int(row["rtcp.rtpfb.tmmbr.fci.mantissa"]) << int(row["rtcp.rtpfb.tmmbr.fci.exp"]) == 768_000
        assert row["rtcp.rtpfb.tmmbr.fci.measuredoverhead"] == "40"
    assert rows[5]["rtcp.rtpfb.nack_blp"] == "0x0002,0x0000"  # (10, 12 as bit 1) and (40)
