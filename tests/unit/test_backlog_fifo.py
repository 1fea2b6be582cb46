"""The draining FIFOs (bridge.backlog): a stall's backlog is shed, jitter is not, order is kept.

The fake clock is the loop of consumer reads: each read is one 20 ms tick of the consumer.
Samples carry their own sequence numbers (a ramp) so a test can see exactly what was kept.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.backlog import PATIENCE_READS, BacklogDrain
from bridge.codecs import PcmFifo
from gateway.core.mixer import BLOCK_SAMPLES, SampleFifo
from gateway.core.tracks import MixAudioTrack
from tests.support.core_server import run

FRAME = 160  # 20 ms at 8 kHz
STALL_FRAMES = 15  # 300 ms


class Ramp:
    """Consecutive int16 sample values (wrapping), so reordering or duplication shows."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, n: int) -> np.ndarray:
        out = ((np.arange(self.next, self.next + n) % 30000) - 15000).astype(np.int16)
        self.next += n
        return out


def assert_in_order(chunks: list[np.ndarray]) -> None:
    """Every sample follows the previous one by +1 or jumps forward (a drop): never back, never equal."""
    if not chunks:
        return
    seq = np.concatenate(chunks).astype(np.int64) + 15000
    steps = np.diff(seq) % 30000
    assert np.all(steps >= 1), "samples reordered or duplicated"


class TestBacklogDrain:
    def test_sheds_standing_excess_once_per_window(self) -> None:
        drain = BacklogDrain(target=2, patience=4)
        shed = [drain.after_read(d) for d in (7, 6, 9, 5)]
        assert shed == [0, 0, 0, 3]  # floor 5 over the window, target 2
        assert drain.shed == 3

    def test_leaves_jitter_alone(self) -> None:
        drain = BacklogDrain(target=1, patience=4)
        # The queue swings to 8 but touches 0 once per window: jitter, not backlog.
        assert [drain.after_read(d) for d in (8, 0, 5, 3) * 5] == [0] * 20
        assert drain.shed == 0

    def test_refuses_nonsense(self) -> None:
        with pytest.raises(ValueError):
            BacklogDrain(target=-1)
        with pytest.raises(ValueError):
            BacklogDrain(target=0, patience=0)

    @given(st.lists(st.integers(0, 10_000), max_size=300), st.integers(0, 50), st.integers(1, 30))
    def test_never_sheds_below_target_or_more_than_queued(self, depths: list[int], target: int,
                                                          patience: int) -> None:
        drain = BacklogDrain(target=target, patience=patience)
        for depth in depths:
            shed = drain.after_read(depth)
            assert shed >= 0
            if shed:
                assert depth - shed >= target


class TestPcmFifoAfterAStall:
    def run(self, fifo: PcmFifo) -> list[int]:
        """Steady flow, a 300 ms stall of the consumer side (its frames arrive at once), steady flow."""
        ramp = Ramp()
        depths: list[int] = []
        for _ in range(50):  # steady: one frame in, one out
            fifo.push(ramp.take(FRAME))
            fifo.pop(FRAME)
        fifo.push(ramp.take(FRAME * STALL_FRAMES))  # the stall's burst lands at once
        for _ in range(100):
            fifo.push(ramp.take(FRAME))
            fifo.pop(FRAME)
            depths.append(len(fifo))
        return depths

    def test_depth_returns_to_target_within_two_windows(self) -> None:
        fifo = PcmFifo(max_samples=FRAME * 20, target_samples=FRAME)
        depths = self.run(fifo)
        frames_to_drain = next(i for i, d in enumerate(depths) if d <= FRAME)
        print(f"\nbacklog of {STALL_FRAMES * FRAME} samples drained after {frames_to_drain} frames; "
              f"shed {fifo.shed_samples} samples")
        assert frames_to_drain <= 2 * PATIENCE_READS
        assert max(depths[2 * PATIENCE_READS:]) <= FRAME
        assert fifo.shed_samples == STALL_FRAMES * FRAME - FRAME  # everything above the target

    def test_without_a_target_the_backlog_stays(self) -> None:
        """The old behaviour this fixes: capped, but the stall's delay never comes back down."""
        depths = self.run(PcmFifo(max_samples=FRAME * 20))
        assert min(depths) == STALL_FRAMES * FRAME

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 3)), max_size=300),
           st.integers(160, 4000), st.integers(0, 480))
    def test_bounded_and_in_order(self, steps: list[tuple[int, int]], cap: int, target: int) -> None:
        fifo = PcmFifo(max_samples=cap, target_samples=target)
        ramp, out = Ramp(), []
        for pushed, pops in steps:
            fifo.push(ramp.take(pushed))
            assert len(fifo) <= cap
            for _ in range(pops):
                got = fifo.pop(FRAME)
                if got is not None:
                    assert got.size == FRAME
                    out.append(got)
                assert len(fifo) <= cap
        assert_in_order(out)


class TestSampleFifoAfterAStall:
    def test_publisher_backlog_drains(self) -> None:
        fifo = SampleFifo()
        ramp = Ramp()
        for _ in range(50):
            fifo.write(ramp.take(BLOCK_SAMPLES))
            fifo.read()
        fifo.write(ramp.take(BLOCK_SAMPLES * 8))
        depths, out = [], []
        for _ in range(60):
            fifo.write(ramp.take(BLOCK_SAMPLES))
            out.append(fifo.read())
            depths.append(len(fifo))
        frames_to_drain = next(i for i, d in enumerate(depths) if d <= BLOCK_SAMPLES)
        print(f"\ncore publisher backlog drained after {frames_to_drain} ticks, shed {fifo.shed} samples")
        assert frames_to_drain <= 2 * PATIENCE_READS
        assert max(depths[2 * PATIENCE_READS:]) <= 2 * BLOCK_SAMPLES
        assert fifo.underruns == 0
        assert_in_order(out)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 3)), max_size=300))
    def test_bounded_and_in_order(self, steps: list[tuple[int, int]]) -> None:
        fifo = SampleFifo(capacity=6 * BLOCK_SAMPLES, prebuffer=BLOCK_SAMPLES)
        ramp, out = Ramp(), []
        for pushed, reads in steps:
            fifo.write(ramp.take(pushed))
            assert len(fifo) <= 6 * BLOCK_SAMPLES
            for _ in range(reads):
                block = fifo.read()
                assert block.size == BLOCK_SAMPLES
                # Only the samples actually taken (silence padding is zeros, which the ramp can hold too).
                out.append(block)
        nonzero = [b[b != 0] for b in out]
        assert_in_order([b for b in nonzero if b.size])


class TestMixAudioTrackAfterAStall:
    def test_subscriber_backlog_drains(self) -> None:
        async def scenario() -> tuple[list[int], int]:
            track = MixAudioTrack(depth=10)
            track._pacer.next_pts = _no_wait  # type: ignore[method-assign]  # the reads are the clock
            for i in range(8):  # a stall: eight blocks queued before the sender reads again
                track.push(np.full(BLOCK_SAMPLES, i, dtype=np.int16))
            depths, firsts = [], []
            for i in range(40):
                track.push(np.full(BLOCK_SAMPLES, 8 + i, dtype=np.int16))
                frame = await track.recv()
                firsts.append(int(frame.to_ndarray().reshape(-1)[0]))
                depths.append(len(track._queue))
            assert firsts == sorted(firsts)
            return depths, track.dropped_blocks

        depths, dropped = run(scenario())  # the shared loop: asyncio.run would close the process's loop
        print(f"\nsubscriber queue depths after the stall: {depths}")
        assert max(depths[2 * PATIENCE_READS:]) <= 1
        assert dropped == 7  # eight standing blocks, one kept as the target


async def _no_wait() -> int:
    return 0
