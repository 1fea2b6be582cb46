"""The conference mixer without I/O: N-1 sums, the soft limiter, the publisher FIFO, speaker hysteresis."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.mixer import (
    BLOCK_SAMPLES,
    INT16_MAX,
    INT16_MIN,
    LIMITER_THRESHOLD,
    SampleFifo,
    block_energy,
    mix_minus,
    saturating_sum,
    soft_limit,
)
from gateway.core.speaker import SpeakerSelector


def block(value: int | np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=np.int16), (BLOCK_SAMPLES,)).copy()


def ramp(seed: int, scale: int = 8000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-scale, scale, BLOCK_SAMPLES).astype(np.int16)


class TestMixMinus:
    def test_each_exclusion_is_the_sum_of_the_others(self) -> None:
        blocks = {"a": ramp(1), "b": ramp(2), "c": ramp(3)}
        mixes = mix_minus(blocks, ["a", "b", "c", None])
        wide = {k: v.astype(np.int32) for k, v in blocks.items()}
        np.testing.assert_array_equal(mixes[None], wide["a"] + wide["b"] + wide["c"])
        np.testing.assert_array_equal(mixes["a"], wide["b"] + wide["c"])
        np.testing.assert_array_equal(mixes["b"], wide["a"] + wide["c"])
        np.testing.assert_array_equal(mixes["c"], wide["a"] + wide["b"])
        assert all(m.dtype == np.int16 and m.shape == (BLOCK_SAMPLES,) for m in mixes.values())

    def test_excluding_the_only_publisher_is_silence(self) -> None:
        mixes = mix_minus({"a": ramp(4)}, ["a"])
        assert not mixes["a"].any()

    def test_unknown_exclusion_gets_the_full_mix(self) -> None:
        blocks = {"a": ramp(5), "b": ramp(6)}
        mixes = mix_minus(blocks, ["not-publishing-yet"])
        np.testing.assert_array_equal(mixes["not-publishing-yet"], mixes[None])

    def test_no_publishers_is_silence(self) -> None:
        mixes = mix_minus({}, [None, "x"])
        assert not mixes[None].any() and not mixes["x"].any()

    def test_loud_publishers_do_not_wrap_around(self) -> None:
        blocks = {k: block(30000) for k in "abc"}
        full = mix_minus(blocks, [])[None]
        assert (full > LIMITER_THRESHOLD).all() and (full <= INT16_MAX).all()
        negative = mix_minus({k: block(-30000) for k in "abc"}, [])[None]
        assert (negative < -LIMITER_THRESHOLD).all() and (negative >= INT16_MIN).all()


class TestLimiter:
    def test_quiet_sums_are_bit_exact(self) -> None:
        x = np.arange(-LIMITER_THRESHOLD, LIMITER_THRESHOLD + 1, 97, dtype=np.int32)
        np.testing.assert_array_equal(soft_limit(x), x)

    @given(st.lists(st.integers(-6 * 32768, 6 * 32767), min_size=2, max_size=200))
    def test_output_is_int16_monotonic_and_keeps_sign(self, values: list[int]) -> None:
        x = np.array(sorted(values), dtype=np.int32)
        y = soft_limit(x).astype(np.int32)
        assert y.min() >= INT16_MIN and y.max() <= INT16_MAX
        assert (np.diff(y) >= 0).all()
        assert (np.sign(y) == np.sign(x)).all()

    def test_soft_limit_is_gentler_than_clipping_but_still_saturates(self) -> None:
        x = np.array([LIMITER_THRESHOLD + 4000, 40000, 100000], dtype=np.int32)
        y = soft_limit(x)
        assert y[0] < x[0] and y[0] > LIMITER_THRESHOLD  # compressed, not flattened
        assert y[1] < y[2] <= INT16_MAX

    def test_saturating_sum_clips(self) -> None:
        out = saturating_sum([block(30000), block(30000), block(-5)])
        assert (out == INT16_MAX).all()

    def test_block_energy_is_a_fraction_of_full_scale(self) -> None:
        assert block_energy(block(0)) == 0.0
        assert 0.99 < block_energy(block(-32768)) <= 1.0


class TestSampleFifo:
    def test_silence_until_prebuffered_then_in_order(self) -> None:
        fifo = SampleFifo(capacity=10 * BLOCK_SAMPLES, prebuffer=2 * BLOCK_SAMPLES)
        data = np.arange(3 * BLOCK_SAMPLES, dtype=np.int16)
        fifo.write(data[:BLOCK_SAMPLES])
        assert not fifo.read().any()  # still prebuffering: nothing consumed
        fifo.write(data[BLOCK_SAMPLES:])
        np.testing.assert_array_equal(fifo.read(), data[:BLOCK_SAMPLES])
        np.testing.assert_array_equal(fifo.read(), data[BLOCK_SAMPLES:2 * BLOCK_SAMPLES])
        np.testing.assert_array_equal(fifo.read(), data[2 * BLOCK_SAMPLES:])

    def test_overflow_drops_the_oldest(self) -> None:
        fifo = SampleFifo(capacity=4 * BLOCK_SAMPLES, prebuffer=BLOCK_SAMPLES)
        data = np.arange(6 * BLOCK_SAMPLES, dtype=np.int32).astype(np.int16)
        for i in range(6):
            fifo.write(data[i * BLOCK_SAMPLES:(i + 1) * BLOCK_SAMPLES])
        assert len(fifo) == 4 * BLOCK_SAMPLES and fifo.dropped == 2 * BLOCK_SAMPLES
        np.testing.assert_array_equal(fifo.read(), data[2 * BLOCK_SAMPLES:3 * BLOCK_SAMPLES])

    def test_underrun_pads_with_silence_and_reprebuffers(self) -> None:
        fifo = SampleFifo(capacity=8 * BLOCK_SAMPLES, prebuffer=BLOCK_SAMPLES)
        fifo.write(np.full(BLOCK_SAMPLES + 100, 7, dtype=np.int16))
        assert (fifo.read() == 7).all()
        short = fifo.read()
        assert (short[:100] == 7).all() and not short[100:].any()
        assert fifo.underruns == 1
        fifo.write(np.full(500, 9, dtype=np.int16))
        assert not fifo.read().any()  # below the prebuffer again: waits instead of crackling

    @given(st.lists(st.integers(1, 3000), min_size=1, max_size=40))
    def test_ring_preserves_order_across_wraparound(self, sizes: list[int]) -> None:
        # The ring alone: backlog shedding reorders nothing either (tests/unit/test_backlog_fifo.py).
        fifo = SampleFifo(capacity=5 * BLOCK_SAMPLES, prebuffer=0, target=None)
        written: list[int] = []
        counter = 0
        for size in sizes:
            chunk = (np.arange(counter, counter + size) % 30000).astype(np.int16)
            counter += size
            fifo.write(chunk)
            written.extend(chunk.tolist())
            written = written[-5 * BLOCK_SAMPLES:]
            if len(fifo) >= BLOCK_SAMPLES:
                out = fifo.read()
                expected, written = written[:BLOCK_SAMPLES], written[BLOCK_SAMPLES:]
                assert out.tolist() == expected


class TestSpeakerSelector:
    def test_first_choice_is_the_loudest(self) -> None:
        assert SpeakerSelector().choose({"a": 0.1, "b": 0.3}, now=0.0) == "b"

    def test_holds_for_the_hold_time_then_switches_to_a_clearly_louder_one(self) -> None:
        sel = SpeakerSelector(hold=1.0, margin=2.0)
        assert sel.choose({"a": 0.5, "b": 0.1}, 0.0) == "a"
        assert sel.choose({"a": 0.1, "b": 0.5}, 0.5) == "a"  # within the hold
        assert sel.choose({"a": 0.3, "b": 0.5}, 1.5) == "a"  # louder, but not by the margin
        assert sel.choose({"a": 0.1, "b": 0.5}, 1.5) == "b"
        assert sel.choose({"a": 0.9, "b": 0.1}, 2.0) == "b"  # the new choice holds too

    def test_switches_at_once_when_the_speaker_goes(self) -> None:
        sel = SpeakerSelector(hold=1.0)
        assert sel.choose({"a": 0.5, "b": 0.1}, 0.0) == "a"
        assert sel.choose({"b": 0.1}, 0.1) == "b"
        assert sel.choose({}, 0.2) is None
