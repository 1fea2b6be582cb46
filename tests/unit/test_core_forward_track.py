"""The subscriber's audio track switching between mixing and forwarding (no peers, no sockets).

What the receiver sees is what aiortc's ``RTCRtpSender`` makes of ``recv()``: for an
``av.Packet`` it calls its encoder's ``pack``, so these tests put every packet through the
real G.711 and Opus encoders' ``pack`` and check the RTP timestamps that would go out.
"""

from __future__ import annotations

import asyncio
import fractions
import itertools

import av
import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.pacing import mono_s16_frame
from gateway.core.mixer import BLOCK_SAMPLES, SAMPLE_RATE
from gateway.core.tracks import MixAudioTrack
from tests.support.core_server import loop_and_reactor, run

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
PCMU = RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, channels=1, payloadType=0)
PUBLISHER_ORIGIN = 777_777 * 6
"""Where the publisher's own clock stands (any value: the track re-bases it; a multiple of 6
keeps 48 kHz -> 8 kHz exact, as a G.711 publisher's timestamps scaled by 6 are)."""


@pytest.fixture(scope="module", autouse=True)
def reactor() -> object:
    return loop_and_reactor()[1]


def _block(value: int) -> np.ndarray:
    return np.full(BLOCK_SAMPLES, value, dtype=np.int16)


def _rtp_timestamps(codec: RTCRtpCodecParameters, packets: list[av.Packet]) -> list[int]:
    encoder = get_encoder(codec)
    return [encoder.pack(p)[1] for p in packets]


async def recv_packet(track: MixAudioTrack) -> av.Packet:
    data = await track.recv()
    assert isinstance(data, av.Packet), "with a codec the track sends only packets"
    return data


@pytest.mark.parametrize("codec", [PCMU, OPUS], ids=["pcmu", "opus"])
def test_timestamps_stay_continuous_across_mix_forward_mix(codec: RTCRtpCodecParameters) -> None:
    async def scenario() -> tuple[list[av.Packet], list[bytes]]:
        track = MixAudioTrack()
        track.use_codec(codec)
        out: list[av.Packet] = []
        for value in (1000, 2000, 3000):
            track.push(_block(value))
        out += [await recv_packet(track) for _ in range(3)]
        track.set_forwarding(True)
        payloads = [b"fwd-%d" % i for i in range(5)]
        for i, payload in enumerate(payloads):
            track.forward(payload, PUBLISHER_ORIGIN + i * BLOCK_SAMPLES)
        forwarded = [await recv_packet(track) for _ in payloads]
        out += forwarded
        track.set_forwarding(False)
        for value in (4000, 5000, 6000):
            track.push(_block(value))
        out += [await recv_packet(track) for _ in range(3)]
        track.stop()
        assert track.forwarded_frames == 5
        return out, [bytes(p) for p in forwarded]

    packets, forwarded = run(scenario())
    assert all(isinstance(p, av.Packet) for p in packets)
    assert forwarded == [b"fwd-%d" % i for i in range(5)]  # unchanged payloads
    timestamps = _rtp_timestamps(codec, packets)
    step = codec.clockRate // 50
    print(f"{codec.name}: RTP timestamps {timestamps}")
    assert np.diff(timestamps).tolist() == [step] * (len(timestamps) - 1)


def test_without_a_codec_the_track_returns_frames_for_aiortc_to_encode() -> None:
    async def scenario() -> object:
        track = MixAudioTrack()
        track.push(_block(5))
        frame = await track.recv()
        track.stop()
        return frame

    frame = run(scenario())
    assert isinstance(frame, av.AudioFrame) and frame.pts == 0


def test_late_frames_are_dropped_and_a_publisher_restart_is_rebased() -> None:
    async def scenario() -> tuple[list[int], int]:
        track = MixAudioTrack()
        track.use_codec(OPUS)
        track.set_forwarding(True)
        for ts in (0, 960, 960, 480, 1920, 1920 + 50 * SAMPLE_RATE, 1920 + 50 * SAMPLE_RATE + 960):
            track.forward(b"x", PUBLISHER_ORIGIN + ts)
        pts = [int((await recv_packet(track)).pts or 0) for _ in range(5)]
        track.stop()
        return pts, track.late_frames

    pts, late = run(scenario())
    assert late == 2  # the duplicate 960 and the reordered 480
    # 0, 960, 1920 as sent; the 50 s jump is a restart: it continues one frame after the last.
    assert pts == [0, 960, 1920, 2880, 3840]


async def drain(track: MixAudioTrack) -> list[av.Packet]:
    """What the track sends until it has nothing queued (mixing sends silence then: stop there)."""
    out = []
    while track._forwarded or track._queue or track._pending:
        try:
            out.append(await asyncio.wait_for(recv_packet(track), 0.1))
        except TimeoutError:
            break
    return out


def test_forwarded_frames_beyond_the_queue_drop_the_oldest_and_are_ignored_while_mixing() -> None:
    async def scenario() -> tuple[list[bytes], int]:
        track = MixAudioTrack(forward_depth=3)
        track.use_codec(OPUS)
        track.forward(b"while-mixing", PUBLISHER_ORIGIN)  # not forwarding: ignored
        track.set_forwarding(True)
        for i in range(5):
            track.forward(b"%d" % i, PUBLISHER_ORIGIN + i * BLOCK_SAMPLES)
        got = [bytes(await recv_packet(track)) for _ in range(3)]
        track.stop()
        return got, track.dropped_blocks

    got, dropped = run(scenario())
    assert got == [b"2", b"3", b"4"] and dropped == 2


def test_stop_ends_a_recv_waiting_for_a_forwarded_frame() -> None:
    async def scenario() -> None:
        track = MixAudioTrack()
        track.use_codec(OPUS)
        track.set_forwarding(True)
        waiting = asyncio.ensure_future(track.recv())
        await asyncio.sleep(0.05)
        assert not waiting.done()  # a silent publisher: nothing to send, nothing sent
        track.stop()
        with pytest.raises(MediaStreamError):
            await asyncio.wait_for(waiting, 1.0)

    run(scenario())


ops = st.lists(st.one_of(
    st.tuples(st.just("push"), st.integers(1, 3)),
    st.tuples(st.just("forward"), st.lists(st.integers(-2, 4), min_size=1, max_size=4)),
    st.tuples(st.just("switch"), st.booleans()),
), max_size=8)


@settings(max_examples=25, deadline=None)
@given(ops=ops, codec=st.sampled_from([PCMU, OPUS]))
def test_whatever_happens_rtp_timestamps_only_move_forward(ops: list[tuple[str, object]],
                                                           codec: RTCRtpCodecParameters) -> None:
    """Any mix of pushes, forwarded frames (in order, duplicated, reordered) and switches: every
    packet that goes out is later than the one before it."""

    async def scenario() -> list[av.Packet]:
        track = MixAudioTrack()
        track.use_codec(codec)
        out: list[av.Packet] = []
        publisher_frame = 0
        for op, arg in ops:
            if op == "push":
                for _ in range(arg):  # type: ignore[call-overload]
                    track.push(_block(100))
            elif op == "forward":
                for step in arg:  # type: ignore[attr-defined]
                    publisher_frame += step
                    track.forward(b"f", PUBLISHER_ORIGIN + publisher_frame * BLOCK_SAMPLES)
            else:
                track.set_forwarding(bool(arg))
            out += await drain(track)
        track.stop()
        return out

    packets = run(scenario())
    timestamps = _rtp_timestamps(codec, packets)
    assert all(later > earlier for earlier, later in itertools.pairwise(timestamps)), timestamps


@pytest.mark.parametrize("codec", [PCMU, OPUS], ids=["pcmu", "opus"])
def test_why_the_track_encodes_itself_aiortc_encoders_step_back_after_packets(codec: RTCRtpCodecParameters) -> None:
    """aiortc's own encoders keep the last frame's samples; handed frames again after a run of
    packed packets, their first output carries a timestamp not after the last packet's. This is
    why :class:`MixAudioTrack` never returns frames once it has a codec. If this ever fails,
    aiortc changed and returning ``AudioFrame`` while mixing may be safe again."""
    encoder = get_encoder(codec)
    time_base = fractions.Fraction(1, SAMPLE_RATE)
    stamps: list[int] = []
    pts = 0
    for _ in range(3):
        _, _ts = encoder.encode(mono_s16_frame(_block(1000), pts, SAMPLE_RATE))
        pts += BLOCK_SAMPLES
    for _ in range(3):
        packet = av.Packet(b"p")
        packet.pts, packet.time_base = pts, time_base
        stamps.append(encoder.pack(packet)[1])
        pts += BLOCK_SAMPLES
    _, after = encoder.encode(mono_s16_frame(_block(1000), pts, SAMPLE_RATE))
    print(f"{codec.name}: packed {stamps}, then encoded at {after}")
    assert after is not None and after <= stamps[-1]
