"""Subscriber tracks and the video switch on the real loop (no peers, no sockets)."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from gateway.core.mixer import BLOCK_SAMPLES, SAMPLE_RATE
from gateway.core.tracks import MixAudioTrack, SwitchedVideoTrack
from gateway.core.video import VideoSwitch
from tests.support.core_server import loop_and_reactor, run


@pytest.fixture(scope="module", autouse=True)
def reactor() -> object:
    return loop_and_reactor()[1]


def test_mix_track_returns_queued_blocks_then_silence_with_steady_pts() -> None:
    async def scenario() -> list[av.AudioFrame]:
        track = MixAudioTrack()
        track.push(np.full(BLOCK_SAMPLES, 100, dtype=np.int16))
        track.push(np.full(BLOCK_SAMPLES, 200, dtype=np.int16))
        frames = [await track.recv() for _ in range(3)]
        track.stop()
        with pytest.raises(MediaStreamError):
            await track.recv()
        return frames

    frames = run(scenario())
    assert [f.pts for f in frames] == [0, 960, 1920]
    for frame in frames:
        assert (frame.format.name, frame.layout.name, frame.sample_rate, frame.samples) == (
            "s16", "stereo", SAMPLE_RATE, BLOCK_SAMPLES)  # L=R: see bridge.pacing.mono_s16_frame
        assert frame.time_base == frames[0].time_base and frame.time_base.denominator == SAMPLE_RATE
    levels = [int(f.to_ndarray().reshape(-1)[0]) for f in frames]
    assert levels == [100, 200, 0]


def test_mix_track_queue_drops_the_oldest_beyond_its_depth() -> None:
    async def scenario() -> tuple[list[int], int]:
        track = MixAudioTrack(depth=3)
        for value in range(1, 6):
            track.push(np.full(BLOCK_SAMPLES, value, dtype=np.int16))
        frames = [await track.recv() for _ in range(3)]
        track.stop()
        return [int(f.to_ndarray().reshape(-1)[0]) for f in frames], track.dropped_blocks

    values, dropped = run(scenario())
    assert values == [3, 4, 5] and dropped == 2


def _frame(value: int) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(np.full((16, 16, 3), value, dtype=np.uint8), format="rgb24")


def test_switch_restamps_frames_and_never_offers_the_excluded_publisher() -> None:
    async def scenario() -> None:
        energies = {"a": 0.5, "b": 0.01}
        switch = VideoSwitch(energies)
        switch.add_source("a")
        switch.add_source("b")
        assert switch.candidates(None) == {}  # no frame yet: not a candidate
        switch.deliver("a", _frame(10))
        switch.deliver("b", _frame(20))
        assert switch.candidates("a") == {"b": 0.01}
        assert set(switch.candidates(None)) == {"a", "b"}

        everyone = SwitchedVideoTrack(switch, exclude=None)
        minus_a = SwitchedVideoTrack(switch, exclude="a")
        got_full = asyncio.ensure_future(everyone.recv())
        got_minus = asyncio.ensure_future(minus_a.recv())
        await asyncio.sleep(0)
        switch.deliver("a", _frame(30))
        switch.deliver("b", _frame(40))
        full, minus = await got_full, await got_minus
        assert full.to_ndarray(format="rgb24")[0, 0, 0] == 30 and everyone.source == "a"
        assert minus.to_ndarray(format="rgb24")[0, 0, 0] == 40 and minus_a.source == "b"
        assert minus.pts > full.pts  # one meeting-wide, strictly increasing timeline

        switch.remove_source("a")
        later = asyncio.ensure_future(everyone.recv())
        await asyncio.sleep(0)
        switch.deliver("b", _frame(50))
        assert (await later).to_ndarray(format="rgb24")[0, 0, 0] == 50 and everyone.source == "b"
        everyone.stop()
        minus_a.stop()

    run(scenario())


def test_each_switch_forces_a_keyframe_and_asks_the_new_source_for_one() -> None:
    """Speaker A, then B louder past the hold: the subscriber's encoder is asked for an IDR on
    A's first frame and again on B's, and each new source gets one keyframe request."""
    async def scenario() -> None:
        energies = {"a": 0.5, "b": 0.0}
        switch = VideoSwitch(energies)
        asked: list[str] = []
        for pid in ("a", "b"):
            switch.add_source(pid)
            switch.set_keyframe_requester(pid, lambda pid=pid: asked.append(pid))  # type: ignore[misc]
        track = SwitchedVideoTrack(switch, exclude=None, hold=0.0)
        forced: list[str | None] = []
        track.force_keyframe = lambda: forced.append(track.source)

        async def next_of(pid: str, value: int) -> av.VideoFrame:
            pending = asyncio.ensure_future(track.recv())
            await asyncio.sleep(0)
            switch.deliver("a" if pid == "b" else "b", _frame(0))  # the other keeps sending too
            switch.deliver(pid, _frame(value))
            return await pending

        switch.deliver("a", _frame(1))
        switch.deliver("b", _frame(2))
        await next_of("a", 10)
        await next_of("a", 11)
        assert (forced, asked) == (["a"], ["a"])
        energies.update(a=0.0, b=0.9)  # B talks
        frame = await next_of("b", 20)
        assert frame.to_ndarray(format="rgb24")[0, 0, 0] == 20
        assert (forced, asked, track.switches) == (["a", "b"], ["a", "b"], 2)
        switch.remove_source("b")
        assert not switch.request_keyframe("b")  # a gone source cannot be asked
        track.stop()

    run(scenario())
