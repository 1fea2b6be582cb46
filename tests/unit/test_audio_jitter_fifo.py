"""bridge.audio_jitter: aiortc's audio jitter buffer, low-delay, skipping holes instead of filling up."""

from __future__ import annotations

import itertools

from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.audio_jitter import LowDelayJitterBuffer, use_low_delay_jitter_buffer

STEP = 960


def packet(seq: int) -> RtpPacket:
    p = RtpPacket(payload_type=111, sequence_number=seq & 0xFFFF, timestamp=(seq * STEP) & 0xFFFFFFFF)
    p._data = bytes([seq & 0xFF])  # type: ignore[attr-defined]  # aiortc's reassembly joins ``_data``
    return p


def released(buffer: JitterBuffer, seqs: list[int]) -> list[int | None]:
    """Per packet added: the timestamp/STEP of the frame released then, or None."""
    out: list[int | None] = []
    for s in seqs:
        _, frame = buffer.add(packet(s))
        out.append(None if frame is None else frame.timestamp // STEP)
    return out


def test_releases_each_frame_when_the_next_arrives() -> None:
    assert released(LowDelayJitterBuffer(), list(range(6))) == [None, 0, 1, 2, 3, 4]
    # aiortc's own buffer holds four frames behind the one it releases: 80 ms.
    assert released(JitterBuffer(capacity=16, prefetch=4), list(range(6))) == [None] * 4 + [0, 1]


def test_a_lost_packet_costs_one_frame_not_a_lasting_backlog() -> None:
    seqs = [s for s in range(40) if s != 10]
    ours = released(LowDelayJitterBuffer(), seqs)
    theirs = released(JitterBuffer(capacity=16, prefetch=4), seqs)
    # Behind: how many packets in minus frames out, at the end (the standing queue).
    ours_behind = len(seqs) - sum(x is not None for x in ours)
    theirs_behind = len(seqs) - sum(x is not None for x in theirs)
    print(f"\nafter one loss, frames left queued: ours {ours_behind}, aiortc's {theirs_behind}")
    assert ours_behind == 1  # the usual one frame of prefetch
    assert theirs_behind >= 15  # the stall's packets stay queued for good
    assert 10 not in ours and ours[-1] == 38
    assert ours.count(None) == 1  # only the first packet: the one after the hole releases the frame before it


def test_waiting_longer_for_a_late_packet_sheds_what_waited() -> None:
    buffer = LowDelayJitterBuffer(max_hold=3)
    out = released(buffer, [s for s in range(30) if s != 10])
    assert buffer.holes_skipped == 1 and buffer.packets_shed == 2
    queued = len(out) - sum(x is not None for x in out) - buffer.packets_shed
    assert queued == 1  # back to the one frame of prefetch
    assert [x for x in out if x is not None] == sorted(x for x in out if x is not None)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.booleans()), max_size=200), st.integers(0, 65535))
def test_frames_come_out_in_order_once(steps: list[tuple[int, bool]], base: int) -> None:
    """Gaps (losses) and swapped neighbours (reordering), across the 16-bit sequence wrap."""
    seqs, at = [], base
    for step, swap in steps:
        at += step
        seqs.append(at)
        if swap and len(seqs) >= 2:
            seqs[-1], seqs[-2] = seqs[-2], seqs[-1]
    out = [x for x in released(LowDelayJitterBuffer(), seqs) if x is not None]
    # Timestamps are seq * STEP modulo 2**32: compare the forward distance between releases.
    forward = [((b - a) * STEP) % 2**32 for a, b in itertools.pairwise(out)]
    assert all(0 < f < 2**31 for f in forward), out


class _FakeReceiver:
    def __init__(self) -> None:
        self._RTCRtpReceiver__jitter_buffer = JitterBuffer(capacity=16, prefetch=4)


def test_installs_on_a_receiver_and_refuses_one_without_the_attribute() -> None:
    receiver = _FakeReceiver()
    assert use_low_delay_jitter_buffer(receiver)
    assert isinstance(receiver._RTCRtpReceiver__jitter_buffer, LowDelayJitterBuffer)
    assert not use_low_delay_jitter_buffer(object())
