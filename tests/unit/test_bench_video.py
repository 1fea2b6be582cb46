"""The video benchmark's load and meters (bench/videosei.py, bench/videoload.py), no sockets.

The SEI stamp must survive escaping, packetization and depacketization and be found by the
cheap per-packet reader; hostile bytes give a typed error or nothing, never a crash. A caller's
receive side is fed the datagrams another caller's packetizer produced, with one left out, and
must count that loss, read each frame's stamp and decode the sample it kept.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.video import Settings, failures_of, settings_from
from bench.videoload import Clip, ClipSource, VideoCaller, encode_clip
from bench.videoproc import drops_between, thread_cpu, top_threads, udp_drops
from bench.videosei import (
    BENCH_UUID,
    SeiError,
    Stamp,
    escape,
    read_stamp,
    stamp_in_payload,
    stamp_nal,
    unescape,
    with_stamp,
)
from bridge.h264_rtp import H264Packetizer, nal_type

SPS, PPS = b"\x67\x42\xc0\x1f\xda\x01", b"\x68\xce\x3c\x80"

stamps = st.builds(Stamp, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))


@settings(max_examples=300)
@given(stamp=stamps)
def test_a_stamp_reads_back_and_its_nal_has_no_start_code_emulation(stamp: Stamp) -> None:
    nal = stamp_nal(stamp)
    assert nal_type(nal) == 6
    for bad in (b"\x00\x00\x00", b"\x00\x00\x01", b"\x00\x00\x02"):
        assert bad not in nal
    assert read_stamp(nal) == stamp


@given(data=st.binary(max_size=200))
def test_escaping_round_trips(data: bytes) -> None:
    escaped = escape(data)
    assert unescape(escaped) == data
    assert all(escaped[i:i + 3] not in (b"\x00\x00\x00", b"\x00\x00\x01", b"\x00\x00\x02")
               for i in range(len(escaped) - 2))


def test_foreign_sei_and_other_nals_are_not_ours() -> None:
    x264_like = bytes([6, 5, 32]) + bytes(16) + b"x264 - core 164" + b"\x00\x80"
    assert read_stamp(x264_like) is None
    assert read_stamp(SPS) is None
    assert read_stamp(b"") is None
    assert stamp_in_payload(b"\x41\x9a\x00") is None


def test_a_truncated_stamp_is_a_typed_error() -> None:
    nal = bytes([6, 5, 32]) + BENCH_UUID + b"\x01\x02"
    with pytest.raises(SeiError) as err:
        read_stamp(nal)
    assert err.value.reason == "truncated"
    with pytest.raises(SeiError):
        stamp_in_payload(b"\x18\x00\x30\x06\x05")  # a STAP-A whose length overruns it


@given(payload=st.binary(max_size=120))
def test_hostile_payloads_give_a_stamp_none_or_a_typed_error(payload: bytes) -> None:
    try:
        got = stamp_in_payload(payload)
    except SeiError:
        return
    assert got is None or isinstance(got, Stamp)


@given(stamp=stamps, slice_size=st.integers(1, 4000))
def test_the_stamp_goes_before_the_first_slice_and_survives_packetization(stamp: Stamp, slice_size: int) -> None:
    idr = bytes([0x65]) + bytes(range(256)) * (slice_size // 256) + b"\x01" * (slice_size % 256)
    nals = with_stamp([SPS, PPS, idr], stamp)
    assert [nal_type(n) for n in nals] == [7, 8, 6, 5]
    packets = H264Packetizer(96, 1234).packetize(nals, 0)
    found = [s for s in (stamp_in_payload(p.payload) for p in packets) if s is not None]
    assert found == [stamp]


@pytest.fixture(scope="module")
def clip() -> Clip:
    return encode_clip(160, 96, 30, 0.5, 300_000)


def test_the_clip_loops_from_its_idr_and_a_keyframe_request_sends_the_idr_next(clip: Clip) -> None:
    assert len(clip.units) == 15 and clip.bitrate_bps > 0
    source = ClipSource(clip, call_id=7)
    units = [source.next_unit() for _ in range(20)]
    assert [u.keyframe for u in units] == [i % 15 == 0 for i in range(20)]
    assert [u.timestamp for u in units] == [3000 * i for i in range(20)]
    source.request_keyframe()
    assert source.next_unit().keyframe and source.keyframes == 3
    (stamp,) = [s for s in (read_stamp(n) for n in units[4].nals) if s is not None]
    assert (stamp.call_id, stamp.frame) == (7, 4)


def test_a_caller_counts_loss_reads_stamps_and_decodes_its_sample(clip: Clip) -> None:
    async def scenario() -> VideoCaller:
        rx = VideoCaller(ClipSource(clip, call_id=1))
        rx.start_sample(60.0, ("127.0.0.1", 9))  # no socket: the PLI is not sent, the sample kept
        tx_source = ClipSource(clip, call_id=2)
        tx = H264Packetizer(96, 0xABCD)
        dropped = 0
        for i in range(30):
            unit = tx_source.next_unit()
            for j, packet in enumerate(tx.packetize(unit.nals, unit.timestamp)):
                if i == 20 and j == 0:  # a packet lost on the way: the gateway's stream has a gap
                    dropped += 1
                    continue
                rx._rtp_in(bytes(packet), ("127.0.0.1", 9))
        rx._rtp_in(b"\x80\x60junk", ("127.0.0.1", 9))
        assert dropped == 1
        return rx

    rx = asyncio.run(scenario())
    counters = rx.counters()
    assert counters.expected - counters.received == 1
    assert rx.malformed == 1
    # every whole frame but the one that lost its first packet (the stamp's) gave a latency
    assert len(rx.latencies) == 29 and {x.call_id for x in rx.latencies} == {2}
    assert all(x.ms >= 0 for x in rx.latencies)
    units, pictures = rx.decode_sample()
    assert units >= 28 and pictures >= 20


def test_thread_cpu_reads_this_process() -> None:
    before = thread_cpu(os.getpid())
    sum(i * i for i in range(200_000))
    after = thread_cpu(os.getpid())
    assert after and sum(after.values()) >= sum(before.values())
    top = top_threads(before, after, 1.0, n=1)
    assert len(top) == 1 and all(v >= 0 for v in top.values())


def _step(**over: object) -> dict[str, object]:
    step: dict[str, object] = {
        "setup_failures": 0, "setup_errors": [], "dropped_during_hold": 0, "video_packets_received": 100,
        "video_loss_pct": 0.0, "frame_added_p99_ms": None, "gateway_udp_drops": 0, "packets_to_gateway": 5000,
        "audio": {"loss_pct": 0.0, "burst_miss_pct": 0.0, "added_p99_ms": 3.0}}
    step.update(over)
    return step


def test_bounds_judge_video_audio_and_stamps_only_when_present() -> None:
    s = Settings()
    assert failures_of(_step(), s) == []
    assert failures_of(_step(video_packets_received=0), s) == ["no video received"]
    assert failures_of(_step(video_loss_pct=0.2), s) == ["video packet loss 0.2%"]
    assert failures_of(_step(gateway_udp_drops=5), s) == [
        "the gateway's sockets dropped 5 of 5000 packets (receive buffer full)"]
    assert failures_of(_step(gateway_udp_drops=4), s) == []  # 0.08 %: under the bound
    assert failures_of(_step(frame_added_p99_ms=25.0), s) == ["video frame p99 added latency 25.0 ms"]
    assert failures_of(_step(audio={"loss_pct": 0.0, "burst_miss_pct": 0.0, "added_p99_ms": 30.0}), s) == [
        "audio p99 added latency 30.0 ms"]


def test_command_line_overrides_widen_the_media_range_for_two_pairs_per_call() -> None:
    s = settings_from(False, 1, hold=20, max_calls=200, start_calls=2)
    assert (s.repeat, s.hold, s.max_calls, s.start_calls) == (1, 20, 200, 2)
    assert s.media_ports >= 4 * 200
    quick = settings_from(True, None)
    assert quick.repeat == 1 and quick.start_calls == quick.max_calls == 2


def test_udp_drops_reads_this_process_socket() -> None:
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    try:
        mine = udp_drops(range(port, port + 1))
        assert len(mine) == 1 and list(mine.values()) == [0]
        assert not udp_drops(range(port, port + 1), not_host="127.0.0.1")
        assert drops_between({1: 5, 2: 1}, {1: 9, 3: 4}) == 4  # only sockets in both readings
    finally:
        sock.close()


def test_pairs_figures_sums_both_directions_of_every_meeting() -> None:
    from bench.callmedia import CallAudio, pairs_figures
    from tests.unit.test_bench_callmedia import _heard

    a, b = CallAudio(tone_hz=700.0), CallAudio(tone_hz=1100.0)
    _heard(a, b, 500, 0.25)
    _heard(b, a, 500, 0.25, drop_bursts={3})
    fig = pairs_figures([(a, b)], (100.5, 108.5))  # arrivals run 100.25-110.25
    assert fig["packets_expected"] == 2 * 400 and fig["packets_lost"] == 0
    assert fig["bursts_sent"] > fig["bursts_heard"] > 0  # one burst of b's was not heard by a
    assert fig["latency_p50_ms"] is not None and abs(fig["latency_p50_ms"] - 250) < 25
    assert fig["added_p99_ms"] is not None and fig["added_p99_ms"] < 25
