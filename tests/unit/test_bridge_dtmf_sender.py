"""RFC 4733 events toward a legacy endpoint, re-timed onto the leg's own outbound stream.

The properties hold for any digits, durations, clock rates, starting timestamps (wrap-around
included) and frames skipped by the leg's clock: each event's packets share the stream timestamp
of its first tick, the first has the marker, durations follow the stream clock, the end goes out
three times, and every queued digit is sent, in order, before the sender goes idle.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.codecs import G722, PCMA, PCMU
from bridge.dtmf_sender import (
    DEFAULT_GAP_MS,
    END_COPIES,
    MAX_DURATION_MS,
    MAX_QUEUED,
    MIN_DURATION_MS,
    DtmfError,
    DtmfSender,
    EventPacket,
    validate_digits,
)
from bridge.legacy_leg import LegacyAudioLeg, RtpOutbound
from bridge.ports import PortAllocator
from bridge.rtp import DTMF_DIGITS, DtmfReceiver, RtpPacket, TelephoneEvent
from bridge.srtp import SUITES, SdesSrtp
from tests.support.audio import tone

TE_PT = 101


@dataclass
class Sent:
    seq: int
    timestamp: int  # the stream's timestamp on this tick (the packet's own may be an event's)
    event: EventPacket | None


def run(sender: DtmfSender, start_ts: int, step: int, skips: list[int] | None = None,
        limit: int = 100_000) -> list[Sent]:
    """Tick ``sender`` like RtpOutbound does until it is idle; ``skips[i]`` frames are skipped
    (time passes, nothing sent) before tick ``i``."""
    out: list[Sent] = []
    ts, seq = start_ts, 0
    for i in range(limit):
        if skips:
            ts = (ts + skips[i % len(skips)] * step) & 0xFFFFFFFF
        out.append(Sent(seq, ts, sender.tick(ts)))
        ts, seq = (ts + step) & 0xFFFFFFFF, seq + 1
        if not sender.busy:
            return out
    raise AssertionError(f"sender still busy after {limit} ticks")


def events(sent: list[Sent]) -> list[list[Sent]]:
    """The sent event packets grouped into events (runs sharing one RTP timestamp)."""
    groups: list[list[Sent]] = []
    for s in sent:
        if s.event is None:
            continue
        if groups and groups[-1][-1].event is not None and groups[-1][-1].event.timestamp == s.event.timestamp \
                and groups[-1][-1].seq == s.seq - 1:
            groups[-1].append(s)
        else:
            groups.append([s])
    return groups


def check_event(group: list[Sent], step: int, target: int) -> None:
    evs = [s.event for s in group]
    assert all(e is not None for e in evs)
    packets: list[EventPacket] = evs  # type: ignore[assignment]
    first = group[0]
    assert packets[0].marker and not any(p.marker for p in packets[1:]), "marker on the first packet only"
    assert all(p.timestamp == first.timestamp for p in packets), "one RTP timestamp per event"
    assert all(p.payload_type == TE_PT for p in packets)
    assert len({p.event.event for p in packets}) == 1
    ends = [p for p in packets if p.event.end]
    assert len(ends) == END_COPIES and packets[-END_COPIES:] == ends, "the end packet goes out 3 times, last"
    assert len({p.event.duration for p in ends}) == 1, "the end copies repeat one final duration"
    durations = [p.event.duration for p in packets[:len(packets) - END_COPIES + 1]]
    assert durations == sorted(durations) and durations[0] == step
    for s, p in zip(group, packets[:len(durations)], strict=False):
        elapsed = (s.timestamp - first.timestamp) & 0xFFFFFFFF
        assert p.event.duration == min(elapsed + step, 0xFFFF), "duration follows the stream clock"
    assert ends[0].event.duration >= min(target, 0xFFFF) or ends[0].event.duration == 0xFFFF


@given(digits=st.text(alphabet=DTMF_DIGITS + "abcd", min_size=1, max_size=8),
       duration_ms=st.integers(MIN_DURATION_MS, 400),
       codec=st.sampled_from([PCMU, PCMA, G722]),
       start_ts=st.integers(0, 0xFFFFFFFF),
       gap_ms=st.integers(20, 150))
@settings(max_examples=150, deadline=None)
def test_every_digit_is_one_well_formed_event_in_order(digits: str, duration_ms: int, codec: Any,
                                                      start_ts: int, gap_ms: int) -> None:
    step = codec.timestamp_step
    sender = DtmfSender(payload_type=TE_PT, clock_rate=codec.clock_rate, packet_ticks=step, min_gap_ms=gap_ms)
    assert sender.queue(digits, duration_ms) == len(digits)
    sent = run(sender, start_ts, step)
    groups = events(sent)
    assert "".join(DTMF_DIGITS[g[0].event.event.event] for g in groups if g[0].event) == digits.upper()
    target = -(-duration_ms * codec.clock_rate // 1000)
    for g in groups:
        check_event(g, step, target)
        # Without skipped frames: exactly one packet per packet time, durations +step each.
        tone_packets = [s.event for s in g[:len(g) - END_COPIES + 1]]
        assert [p.event.duration for p in tone_packets if p] == [step * (k + 1) for k in range(len(tone_packets))]
    gap = -(-gap_ms * codec.clock_rate // 1000)
    for prev, nxt in itertools.pairwise(groups):
        assert prev[0].event is not None and nxt[0].event is not None
        tone_end = prev[0].timestamp + prev[-1].event.event.duration  # type: ignore[union-attr]
        assert (nxt[0].timestamp - tone_end) & 0xFFFFFFFF >= gap, "minimum inter-digit gap"
    assert sender.events_sent == len(digits) and not sender.busy


@given(skips=st.lists(st.integers(0, 6), min_size=1, max_size=20),
       digits=st.text(alphabet=DTMF_DIGITS, min_size=1, max_size=4),
       duration_ms=st.integers(MIN_DURATION_MS, 300),
       start_ts=st.integers(0, 0xFFFFFFFF))
@settings(max_examples=150, deadline=None)
def test_skipped_frames_count_in_the_duration_and_every_event_still_ends(
        skips: list[int], digits: str, duration_ms: int, start_ts: int) -> None:
    sender = DtmfSender(payload_type=TE_PT, clock_rate=8000, packet_ticks=160)
    sender.queue(digits, duration_ms)
    sent = run(sender, start_ts, 160, skips)
    groups = events(sent)
    assert len(groups) == len(digits)
    for g in groups:
        check_event(g, 160, -(-duration_ms * 8))
    # Event timestamps move on with the stream clock (modulo 2^32) and never go back.
    stamps = [(g[0].timestamp - start_ts) & 0xFFFFFFFF for g in groups]
    assert stamps == sorted(stamps)


def test_48khz_stream_steps_960_per_packet() -> None:
    sender = DtmfSender(payload_type=TE_PT, clock_rate=48000, packet_ticks=960)
    sender.queue("5", 100)
    group = events(run(sender, 1000, 960))[0]
    durations = [s.event.event.duration for s in group if s.event]
    assert durations == [960, 1920, 2880, 3840, 4800, 4800, 4800]


@pytest.mark.parametrize("digits", ["", "12x", "1 2", "E", "\x00"])
def test_non_keypad_digits_are_refused_and_nothing_is_queued(digits: str) -> None:
    sender = DtmfSender(payload_type=TE_PT, clock_rate=8000, packet_ticks=160)
    with pytest.raises(DtmfError):
        sender.queue(digits)
    assert not sender.busy


@pytest.mark.parametrize("duration_ms", [0, MIN_DURATION_MS - 1, MAX_DURATION_MS + 1, -5])
def test_durations_outside_one_segment_are_refused(duration_ms: int) -> None:
    sender = DtmfSender(payload_type=TE_PT, clock_rate=8000, packet_ticks=160)
    with pytest.raises(DtmfError, match="duration"):
        sender.queue("1", duration_ms)


def test_longest_allowed_event_fits_the_16_bit_duration_field() -> None:
    sender = DtmfSender(payload_type=TE_PT, clock_rate=8000, packet_ticks=160)
    sender.queue("#", MAX_DURATION_MS)
    group = events(run(sender, 0, 160))[0]
    assert group[-1].event is not None and group[-1].event.event.duration == MAX_DURATION_MS * 8 <= 0xFFFF


def test_a_stalled_clock_clamps_the_end_duration_instead_of_wrapping() -> None:
    sender = DtmfSender(payload_type=TE_PT, clock_rate=8000, packet_ticks=160)
    sender.queue("1", MAX_DURATION_MS)
    first = sender.tick(0)
    assert first is not None and first.marker
    late = sender.tick(10 * 8000)  # ten seconds later (a long hold): past 0xFFFF ticks
    assert late is not None and late.event.end and late.event.duration == 0xFFFF
    rest = [sender.tick(10 * 8000 + 160 * k) for k in (1, 2)]
    assert all(p is not None and p.event.end and p.event.duration == 0xFFFF for p in rest)
    assert not sender.busy


def test_queue_is_bounded_all_or_nothing() -> None:
    sender = DtmfSender(payload_type=TE_PT, clock_rate=8000, packet_ticks=160)
    sender.queue("1" * (MAX_QUEUED - 2))
    with pytest.raises(DtmfError, match="at most"):
        sender.queue("123")
    assert sender.pending == MAX_QUEUED - 2


def test_volume_out_of_range_is_refused() -> None:
    with pytest.raises(DtmfError):
        DtmfSender(payload_type=TE_PT, clock_rate=8000, packet_ticks=160, volume=64)


def test_validate_digits_upper_cases() -> None:
    assert validate_digits("12ab*#") == "12AB*#"


# -- in the packetiser ------------------------------------------------------------------------


def outbound(srtp: SdesSrtp | None = None) -> RtpOutbound:
    out = RtpOutbound(payload_type=0, timestamp_step=160, encoder=PCMU.encoder(), ssrc=0x1234,
                      sequence_number=65530, timestamp=0xFFFFF000, srtp=srtp)
    out.dtmf = DtmfSender(payload_type=TE_PT, clock_rate=8000, packet_ticks=160)
    return out


def test_packetiser_interleaves_events_with_continuous_sequence_and_stream_timestamps() -> None:
    out = outbound()
    frame = tone(440, 0.02, 8000)
    packets = [RtpPacket.parse(out.packet(frame)) for _ in range(3)]
    out.dtmf.queue("19", 100)  # type: ignore[union-attr]
    while out.dtmf.busy or len(packets) < 40:  # type: ignore[union-attr]
        packets.append(RtpPacket.parse(out.packet(frame)))
    seqs = [p.sequence_number for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs)), "no sequence gap"
    received: list[str] = []
    rx = DtmfReceiver(received.append)
    for i, p in enumerate(packets):
        if p.payload_type != TE_PT:
            continue
        rx.receive(p)
        assert TelephoneEvent.parse(p.payload).volume == 10
        # The event timestamp lies on this stream's clock, between its neighbouring audio packets'.
        before = next(q.timestamp for q in reversed(packets[:i]) if q.payload_type == 0)
        after = next((q.timestamp for q in packets[i + 1:] if q.payload_type == 0), None)
        assert 0 < (p.timestamp - before) & 0xFFFFFFFF < 0x80000000
        assert after is None or 0 < (after - p.timestamp) & 0xFFFFFFFF < 0x80000000
        first_of_event = next(q for q in packets if q.timestamp == p.timestamp and q.payload_type == TE_PT)
        assert p.timestamp == (before + 160) & 0xFFFFFFFF or not p.marker
        assert first_of_event.marker
    assert received == ["1", "9"]
    assert all(p.ssrc == 0x1234 for p in packets)


def test_packetiser_events_are_srtp_protected_like_the_audio() -> None:
    suite = "AES_CM_128_HMAC_SHA1_80"
    a, b = bytes(range(SUITES[suite][1])), bytes(reversed(range(SUITES[suite][1])))
    ours, theirs = SdesSrtp(suite, remote_key=b, local_key=a), SdesSrtp(suite, remote_key=a, local_key=b)
    out = outbound(ours)
    out.dtmf.queue("7", 60)  # type: ignore[union-attr]
    wire = [out.packet(np.zeros(160, dtype=np.int16)) for _ in range(8)]
    plain = [RtpPacket.parse(theirs.unprotect(w)) for w in wire]
    events_ = [TelephoneEvent.parse(p.payload) for p in plain if p.payload_type == TE_PT]
    assert [e.event for e in events_] == [7] * len(events_) and sum(e.end for e in events_) == END_COPIES
    assert all(bytes(p)[12:] not in w for p, w in zip(plain, wire, strict=True)), "payloads are encrypted"


# -- the leg's public method --------------------------------------------------------------------


class _FakeSocket:
    def close(self) -> None:
        pass


def make_leg(telephone_event_pt: int | None) -> LegacyAudioLeg:
    ports = PortAllocator(20000, 20010, address="127.0.0.1", bind=lambda _a, _p: _FakeSocket())  # type: ignore[arg-type,return-value]
    return LegacyAudioLeg(lease=ports.allocate(), codec=PCMA, payload_type=8, remote_address="192.0.2.1",
                          remote_port=4000, telephone_event_pt=telephone_event_pt)


def test_leg_send_dtmf_needs_telephone_event_and_follows_renegotiation() -> None:
    leg = make_leg(None)
    assert not leg.can_send_dtmf
    with pytest.raises(DtmfError, match="telephone-event"):
        leg.send_dtmf("1")
    leg.renegotiate(codec=PCMA, payload_type=8, remote_address="192.0.2.1", remote_port=4000,
                    telephone_event_pt=96, srtp=None, sending=True)
    assert leg.can_send_dtmf and leg.send_dtmf("12#") == 3
    packet = RtpPacket.parse(leg.outbound.packet(np.zeros(160, dtype=np.int16)))
    assert packet.payload_type == 96 and packet.marker
    leg.renegotiate(codec=PCMA, payload_type=8, remote_address="192.0.2.1", remote_port=4000,
                    telephone_event_pt=None, srtp=None, sending=True)
    assert not leg.can_send_dtmf
    assert RtpPacket.parse(leg.outbound.packet(np.zeros(160, dtype=np.int16))).payload_type == 8
    leg.close()


def test_default_gap_is_within_the_usual_inter_digit_range() -> None:
    assert 50 <= DEFAULT_GAP_MS <= 100
