"""The calls benchmark's audio meter (bench/callmedia.py) on synthetic streams, no sockets.

A receiver is filled with what the far side would hear: the sender's own frames, delayed,
with some bursts dropped. The meter must find each burst's latency, including latencies
longer than the burst period (told apart by the bursts' tones), and count the lost ones.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.callmedia import FRAME_S, CallAudio, measure, percentile


def _heard(sender: CallAudio, receiver: CallAudio, frames: int, delay_s: float,
           drop_bursts: set[int] | None = None) -> None:
    """Fill ``sender.burst_sent`` and ``receiver.received`` as a link of ``delay_s`` would."""
    decoder = sender.codec.decoder()
    for index in range(frames):
        sent_at = 100.0 + index * FRAME_S
        burst, offset = divmod(index, sender.period_frames)
        if offset == 0:
            sender.burst_sent.append(sent_at)
        payload = sender._frame(index)
        pcm = decoder.decode(payload)
        if burst in (drop_bursts or set()) and offset < sender.burst_frames:
            pcm = np.zeros_like(pcm)
        receiver.received.arrivals.append(sent_at + delay_s)
        receiver.received.sequences.append(index & 0xFFFF)
        receiver.received.pcm.append(pcm)


@settings(max_examples=40, deadline=None)
@given(delay=st.floats(min_value=0.0, max_value=3.5), dropped=st.sets(st.integers(0, 11), max_size=4))
def test_latency_is_found_even_beyond_the_period_and_lost_bursts_are_counted(
    delay: float, dropped: set[int]
) -> None:
    sender, receiver = CallAudio(tone_hz=700.0), CallAudio()
    frames = 16 * sender.period_frames
    _heard(sender, receiver, frames, delay, dropped)
    window = (100.0, 100.0 + frames * FRAME_S - 0.01)
    m = measure(sender, receiver, window)
    # Bursts 0..n-1 were sent early enough to count (the window leaves a grace at its end).
    counted = m.bursts_sent
    assert counted >= 10
    assert m.bursts_heard == counted - len([b for b in dropped if b < counted])
    assert all(abs(x - 1000 * delay) < 1.0 for x in m.latencies_ms), (delay, m.latencies_ms)


def test_loss_counts_packets_missing_against_the_20ms_clock() -> None:
    sender, receiver = CallAudio(), CallAudio()
    _heard(sender, receiver, 500, 0.05)
    for _ in range(5):  # five packets never arrived
        del receiver.received.arrivals[200], receiver.received.pcm[200]
    m = measure(sender, receiver, (100.05, 100.05 + 500 * FRAME_S))
    assert m.expected == 500 and m.received == 495 and m.lost == 5


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 99) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(101)], 99) == 99.0
