"""The fast path's header rewrite (bridge.fastpath.RtpRewriter) and its two relays, without sockets."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.codecs import AUDIO_CODECS
from bridge.dtmf_sender import DtmfSender
from bridge.fastpath import (
    CoreToLegacy,
    LegacyToCore,
    RtpRewriter,
    SendSuspended,
    run_to_completion,
    seq_newer,
)
from bridge.jitter import JitterBuffer
from bridge.legacy_leg import LegCounters, RtpInbound
from bridge.rtp import RtpPacket, TelephoneEvent

SEQ = 1 << 16
PCMU_DECODER = AUDIO_CODECS["PCMU"].decoder()
TS = 1 << 32


def test_first_packet_continues_our_stream_with_the_marker() -> None:
    rw = RtpRewriter(next_sequence=65535, next_timestamp=TS - 80)
    out = rw.rewrite(ssrc=7, sequence_number=1234, timestamp=999, marker=False)
    assert out is not None
    assert (out.sequence_number, out.timestamp, out.marker) == (65535, TS - 80, True)
    nxt = rw.rewrite(ssrc=7, sequence_number=1235, timestamp=999 + 160, marker=False)
    assert nxt is not None
    assert (nxt.sequence_number, nxt.timestamp, nxt.marker) == (0, 80, False)  # both wrapped


def test_a_gap_stays_a_gap_and_late_packets_are_dropped() -> None:
    rw = RtpRewriter(next_sequence=100, next_timestamp=1000)
    rw.rewrite(1, 10, 0, False)
    gap = rw.rewrite(1, 13, 480, False)
    assert gap is not None and (gap.sequence_number, gap.timestamp) == (103, 1480)
    assert rw.rewrite(1, 12, 320, False) is None  # reordered behind a newer one
    assert rw.rewrite(1, 13, 480, False) is None  # duplicate
    assert rw.dropped_late == 2


def test_a_new_source_continues_one_frame_after_the_last() -> None:
    rw = RtpRewriter(next_sequence=500, next_timestamp=8000)
    rw.rewrite(1, 40000, 123456, False)
    restarted = rw.rewrite(2, 7, 42, False)
    assert restarted is not None
    assert (restarted.sequence_number, restarted.timestamp, restarted.marker) == (501, 8160, True)
    assert rw.source_changes == 1


# A source's packets: (ssrc choice, sequence step, timestamp step); the stream is built from steps
# so each source's own numbering wraps freely and may jump back (a restart with the same SSRC is
# a late packet: dropped).
_steps = st.lists(st.tuples(st.integers(0, 2), st.integers(-3, 40), st.integers(0, 4000)),
                  min_size=1, max_size=200)


@settings(max_examples=300)
@given(steps=_steps, seq0=st.integers(0, SEQ - 1), ts0=st.integers(0, TS - 1),
       starts=st.lists(st.tuples(st.integers(0, SEQ - 1), st.integers(0, TS - 1)), min_size=3, max_size=3))
def test_output_is_never_reordered_and_stays_continuous(
        steps: list[tuple[int, int, int]], seq0: int, ts0: int, starts: list[tuple[int, int]]) -> None:
    rw = RtpRewriter(next_sequence=seq0, next_timestamp=ts0)
    position = {s: starts[s] for s in range(3)}
    previous: tuple[int, int, int] | None = None  # (out seq, out ts, input ssrc)
    last_in: dict[int, int] = {}  # per source: the last relayed sequence number
    last_in_ts: dict[int, int] = {}
    for ssrc, dseq, dts in steps:
        seq, ts = position[ssrc]
        seq, ts = (seq + dseq) % SEQ, (ts + dts) % TS
        position[ssrc] = (seq, ts)
        out = rw.rewrite(ssrc, seq, ts, False)
        if out is None:
            # only a packet no newer than the last relayed one of the same stream is dropped
            assert previous is not None and previous[2] == ssrc
            assert not seq_newer(seq, last_in[ssrc])
            continue
        if previous is None:
            assert (out.sequence_number, out.timestamp) == (seq0, ts0)
        elif previous[2] != ssrc:  # a source change: exactly one packet and one frame on
            assert out.marker
            assert out.sequence_number == (previous[0] + 1) % SEQ
            assert out.timestamp == (previous[1] + 160) % TS
        else:  # same stream: the source's spacing, always forward
            assert seq_newer(out.sequence_number, previous[0])
            assert (out.sequence_number - previous[0]) % SEQ == (seq - last_in[ssrc]) % SEQ
            assert (out.timestamp - previous[1]) % TS == (ts - last_in_ts[ssrc]) % TS
        previous = (out.sequence_number, out.timestamp, ssrc)
        last_in[ssrc] = seq
        last_in_ts[ssrc] = ts
    assert rw.relayed + rw.dropped_late == len(steps)


@dataclass
class _Outbound:
    payload_type: int = 0
    ssrc: int = 0xABCDEF01
    sequence_number: int = 65534
    timestamp: int = 1000
    timestamp_step: int = 160
    dtmf: DtmfSender | None = None


@dataclass
class _Leg:
    outbound: _Outbound = field(default_factory=_Outbound)
    sending: bool = True
    sent: list[bytes] = field(default_factory=list)

    def send_relayed(self, data: bytes, *, next_sequence: int, next_timestamp: int) -> None:
        self.sent.append(data)
        self.outbound.sequence_number, self.outbound.timestamp = next_sequence, next_timestamp


@dataclass
class _CorePacket:
    sequence_number: int
    timestamp: int
    ssrc: int = 0x11111111
    payload_type: int = 0
    marker: int = 0
    payload: bytes = b"\xff" * 160


def _core_stream(n: int, seq: int = 9000, ts: int = 5000) -> list[Any]:
    return [_CorePacket(sequence_number=(seq + i) % SEQ, timestamp=ts + 160 * i,
                        payload=bytes([i % 256]) * 160) for i in range(n)]


def test_core_packets_reach_the_legacy_side_as_our_stream_with_the_same_payload() -> None:
    leg = _Leg()
    relay = CoreToLegacy(leg, core_payload_type=0)
    for p in _core_stream(5):
        relay(p)
    relay(_CorePacket(sequence_number=1, timestamp=1, payload_type=101))  # not the negotiated codec
    sent = [RtpPacket.parse(d) for d in leg.sent]
    assert [p.sequence_number for p in sent] == [65534, 65535, 0, 1, 2]
    assert [p.timestamp for p in sent] == [1000 + 160 * i for i in range(5)]
    assert {p.ssrc for p in sent} == {0xABCDEF01}
    assert [p.payload[0] for p in sent] == [0, 1, 2, 3, 4]
    assert relay.dropped_wrong_pt == 1 and relay.packets == 5


def test_gateway_dtmf_takes_the_slot_of_relayed_audio() -> None:
    leg = _Leg()
    leg.outbound.dtmf = DtmfSender(payload_type=101, clock_rate=8000, packet_ticks=160)
    leg.outbound.dtmf.queue("5", 100)
    relay = CoreToLegacy(leg, core_payload_type=0)
    for p in _core_stream(30):
        relay(p)
    sent = [RtpPacket.parse(d) for d in leg.sent]
    seqs = [p.sequence_number for p in sent]
    assert all((b - a) % SEQ == 1 for a, b in itertools.pairwise(seqs))  # no hole, no room
    events = [p for p in sent if p.payload_type == 101]
    assert events and events[0].payload[0] == 5
    assert len({p.timestamp for p in events}) == 1  # one event: one timestamp (RFC 4733 2.5.1.2)
    assert sent[-1].payload_type == 0  # audio again once the event ended


def test_on_hold_nothing_is_relayed() -> None:
    leg = _Leg(sending=False)
    relay = CoreToLegacy(leg, core_payload_type=0)
    for p in _core_stream(3):
        relay(p)
    assert leg.sent == []


class _DtlsTransport:
    """aiortc's RTCDtlsTransport as LegacyToCore sees it: a ``_send_rtp`` coroutine."""

    def __init__(self, *, suspend: bool = False, connected: bool = True) -> None:
        self.sent: list[bytes] = []
        self.suspend, self.connected = suspend, connected

    async def _send_rtp(self, data: bytes) -> None:
        if not self.connected:
            raise ConnectionError("Cannot send encrypted RTP, not connected")
        if self.suspend:
            await asyncio.sleep(0)
        self.sent.append(data)


@dataclass
class _WhipSender:
    transport: _DtlsTransport
    _ssrc: int = 0x0BADCAFE


def _legacy_packet(seq: int, ssrc: int = 0x1234, dtmf: bool = False) -> RtpPacket:
    return RtpPacket(payload_type=101 if dtmf else 8, sequence_number=seq, timestamp=160 * seq,
                     ssrc=ssrc, payload=bytes([seq % 256]) * 160)


def test_caller_packets_go_to_the_whip_sender_re_headed_in_one_step() -> None:
    transport = _DtlsTransport()
    relay = LegacyToCore(_WhipSender(transport), payload_type=8,
                         rewriter=RtpRewriter(next_sequence=40, next_timestamp=800))
    for seq in (5, 6, 6, 8):
        relay(_legacy_packet(seq))
    relay(_legacy_packet(100, ssrc=0x9999))  # the caller restarted its stream
    sent = [RtpPacket.parse(d) for d in transport.sent]  # sent synchronously: no task, no loop
    assert [p.sequence_number for p in sent] == [40, 41, 43, 44]
    assert [p.timestamp for p in sent] == [800, 960, 1280, 1440]
    assert {p.ssrc for p in sent} == {0x0BADCAFE} and {p.payload_type for p in sent} == {8}
    assert [p.marker for p in sent] == [True, False, False, True]
    assert [p.payload[0] for p in sent] == [5, 6, 8, 100]
    assert relay.packets == 4 and relay.rewriter.dropped_late == 1


def test_a_send_that_would_wait_or_fails_is_counted_not_raised() -> None:
    for transport in (_DtlsTransport(suspend=True), _DtlsTransport(connected=False)):
        relay = LegacyToCore(_WhipSender(transport), payload_type=0)
        relay(_legacy_packet(1))
        relay(_legacy_packet(2))
        assert transport.sent == [] and relay.send_errors == 2


def test_run_to_completion_refuses_a_coroutine_that_suspends() -> None:
    async def waits() -> None:
        await asyncio.sleep(0)

    with pytest.raises(SendSuspended):
        run_to_completion(waits())


def test_the_legacy_leg_hands_accepted_audio_to_the_relay_and_keeps_dtmf_and_checks() -> None:
    """``RtpInbound.on_passthrough``: accepted audio goes to the relay undecoded (the jitter buffer
    stays empty); DTMF is still detected locally, not relayed; wrong sources are still dropped."""
    counters, digits, relayed = LegCounters(), list[str](), list[RtpPacket]()
    jitter = JitterBuffer(clock_rate=8000, frame_ticks=160)
    rx = RtpInbound(remote_address="192.0.2.10", payload_type=0, decoder=PCMU_DECODER, counters=counters,
                    telephone_event_pt=101, on_dtmf=digits.append, jitter=jitter)
    rx.on_passthrough = relayed.append
    peer = ("192.0.2.10", 40000)
    for seq in range(3):
        rx.receive(bytes(RtpPacket(0, seq, seq * 160, 42, b"\xff" * 160)), peer)
    end = bytes(TelephoneEvent(7, True, 10, 480))
    rx.receive(bytes(RtpPacket(101, 3, 480, 42, end)), peer)
    rx.receive(bytes(RtpPacket(0, 4, 640, 42, b"\xff" * 160)), ("198.51.100.1", 40000))  # not the caller
    assert [p.sequence_number for p in relayed] == [0, 1, 2]
    assert digits == ["7"] and jitter.queued == 0 and jitter.counters.buffered == 0
    assert counters.packets_in == 4 and counters.dropped_wrong_source == 1
