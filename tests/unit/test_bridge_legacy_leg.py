"""The legacy leg's sans-IO parts: source latching and drop counting, payload-type checks, DTMF,
the outbound packetiser's SSRC/sequence/timestamp, and the 20 ms clock on a fake time base."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.codecs import G722, PCMU
from bridge.legacy_leg import FrameClock, LegCounters, RtpInbound, RtpOutbound
from bridge.rtp import RtpPacket, TelephoneEvent
from tests.support.audio import assert_tone, tone

PEER = ("192.0.2.10", 40000)


def make_inbound(**kw: object) -> tuple[RtpInbound, LegCounters, list[str]]:
    counters = LegCounters()
    digits: list[str] = []
    args: dict[str, object] = {"remote_address": "192.0.2.10", "payload_type": 0, "decoder": PCMU.decoder(),
                               "counters": counters, "telephone_event_pt": 101, "on_dtmf": digits.append}
    args.update(kw)
    return RtpInbound(**args), counters, digits  # type: ignore[arg-type]


def rtp(seq: int, pt: int = 0, payload: bytes = b"\xff" * 160, ssrc: int = 42, ts: int | None = None) -> bytes:
    return bytes(RtpPacket(pt, seq, seq * 160 if ts is None else ts, ssrc, payload))


def test_latches_to_first_packet_from_the_sdp_address_and_drops_the_rest() -> None:
    rx, c, _ = make_inbound()
    assert rx.receive(rtp(1), ("198.51.100.7", 40000)) is None  # wrong IP, before latching
    assert rx.latched is None
    pcm = rx.receive(rtp(2), PEER)
    assert pcm is not None and pcm.size == 160 and rx.latched == PEER
    assert rx.receive(rtp(3), ("192.0.2.10", 40002)) is None  # same IP, other port: after latching
    assert rx.receive(rtp(4), ("198.51.100.7", 40000)) is None
    assert rx.receive(rtp(5), PEER) is not None
    assert (c.packets_in, c.dropped_wrong_source, c.dropped) == (2, 3, 3)
    assert c.bytes_in == 2 * 172


def test_latches_to_a_port_other_than_the_sdp_one() -> None:
    # Symmetric-RTP-less endpoints send from another port than they receive on: the IP decides.
    rx, _, _ = make_inbound()
    assert rx.receive(rtp(1), ("192.0.2.10", 5004)) is not None
    assert rx.latched == ("192.0.2.10", 5004)


def test_sdp_address_is_compared_as_an_address() -> None:
    rx, _, _ = make_inbound(remote_address="2001:db8:0:0::1")
    assert rx.receive(rtp(1), ("2001:db8::1", 4000, 0, 0)) is not None


def test_bad_packets_and_wrong_payload_types_do_not_latch() -> None:
    rx, c, _ = make_inbound()
    assert rx.receive(b"\x00garbage-not-rtp", PEER) is None
    assert rx.receive(rtp(1, pt=8), PEER) is None
    assert rx.latched is None
    assert (c.dropped_bad_packet, c.dropped_wrong_pt, c.packets_in) == (1, 1, 0)
    assert rx.last_drop_reason == "wrong_pt"


def test_rtcp_on_the_rtp_port_is_not_a_drop() -> None:
    rx, c, _ = make_inbound()
    rx.receive(rtp(1), PEER)
    assert rx.receive(bytes([0x80, 200, 0, 6]) + b"\x00" * 24, PEER) is None
    assert c.rtcp_in == 1 and c.dropped == 0


def test_duplicates_and_late_packets_are_dropped_until_the_ssrc_changes() -> None:
    rx, c, _ = make_inbound()
    assert rx.receive(rtp(65535), PEER) is not None
    assert rx.receive(rtp(0), PEER) is not None  # wrap-around is newer
    assert rx.receive(rtp(0), PEER) is None  # duplicate
    assert rx.receive(rtp(65534), PEER) is None  # late
    assert rx.receive(rtp(10, ssrc=43), PEER) is not None  # endpoint restarted its stream
    assert (c.packets_in, c.dropped_late) == (3, 2)


def test_telephone_events_reach_the_dtmf_callback() -> None:
    rx, c, digits = make_inbound()
    ev = bytes(TelephoneEvent(1, False, 10, 160))
    end = bytes(TelephoneEvent(1, True, 10, 480))
    for seq, payload in ((1, ev), (2, ev), (3, end), (4, end)):
        assert rx.receive(rtp(seq, pt=101, payload=payload, ts=8000), PEER) is None
    assert rx.receive(rtp(5, pt=101, payload=b"\x01", ts=9000), PEER) is None  # truncated event
    assert digits == ["1"] and c.dtmf_events == 1 and c.dropped_bad_packet == 1


def test_telephone_events_are_refused_when_not_negotiated() -> None:
    rx, c, digits = make_inbound(telephone_event_pt=None)
    rx.receive(rtp(1, pt=101, payload=bytes(TelephoneEvent(1, False, 10, 160))), PEER)
    assert digits == [] and c.dropped_wrong_pt == 1


def test_decoded_stream_carries_the_tone() -> None:
    rx, _, _ = make_inbound()
    enc = PCMU.encoder()
    signal = tone(1000, 1.0)
    out = [rx.receive(rtp(i, payload=enc.encode(signal[i * 160:(i + 1) * 160])), PEER) for i in range(50)]
    assert_tone(np.concatenate([o for o in out if o is not None]), 8000, 1000, skip_seconds=0.0)


def test_outbound_sequence_timestamp_marker_and_wrap() -> None:
    tx = RtpOutbound(payload_type=9, timestamp_step=G722.timestamp_step, encoder=G722.encoder(), ssrc=0xCAFE,
                     sequence_number=65534, timestamp=2**32 - 160)
    frame = np.zeros(320, dtype=np.int16)
    pkts = [RtpPacket.parse(tx.packet(frame)) for _ in range(3)]
    assert [p.sequence_number for p in pkts] == [65534, 65535, 0]
    assert [p.timestamp for p in pkts] == [2**32 - 160, 0, 160]
    assert [p.marker for p in pkts] == [True, False, False]
    assert {p.ssrc for p in pkts} == {0xCAFE} and {p.payload_type for p in pkts} == {9}
    assert all(len(p.payload) == 160 for p in pkts)
    tx.skip(5)  # time passed without sending: timestamp moves, sequence does not
    p = RtpPacket.parse(tx.packet(frame))
    assert (p.sequence_number, p.timestamp) == (1, 160 + 160 * 6)


def test_outbound_random_initial_values_differ() -> None:
    a = RtpOutbound(payload_type=0, timestamp_step=160, encoder=PCMU.encoder())
    b = RtpOutbound(payload_type=0, timestamp_step=160, encoder=PCMU.encoder())
    assert (a.ssrc, a.sequence_number, a.timestamp) != (b.ssrc, b.sequence_number, b.timestamp)


def test_clock_sends_fifty_frames_per_second_whatever_the_wakeup_jitter() -> None:
    clock = FrameClock(start=100.0)
    now, sent = 100.0, 0
    rng = np.random.default_rng(1)
    while now < 110.0:
        n, skipped = clock.due(now)
        assert skipped == 0
        sent += n
        now = clock.next_deadline + float(rng.uniform(0, 0.015))  # late wake-ups, never early
    assert sent == pytest.approx(500, abs=1)


def test_clock_catches_up_short_stalls_and_skips_long_ones() -> None:
    clock = FrameClock(start=0.0, max_lag=0.1)
    assert clock.due(0.0) == (1, 0)
    assert clock.due(0.01) == (0, 0)
    assert clock.due(0.065) == (3, 0)  # deadlines 0.02, 0.04, 0.06 passed
    assert clock.next_deadline == pytest.approx(0.08)
    n, skipped = clock.due(1.0)  # a 0.9 s stall: one frame now, the rest skipped
    assert (n, skipped) == (1, 46)
    assert clock.next_deadline == pytest.approx(1.02)


def test_latch_any_source_takes_the_first_accepted_packet_from_any_ip() -> None:
    # With SRTP (where acceptance means authenticated, RFC 3711 3.3) the SDP IP does not gate
    # the latch: a caller behind NAT names a private address (RFC 4961 symmetric RTP).
    rx, c, _ = make_inbound(latch_any_source=True)
    assert rx.receive(rtp(1), ("198.51.100.7", 40000)) is not None
    assert rx.latched == ("198.51.100.7", 40000)
    assert rx.receive(rtp(2), PEER) is None and c.dropped_wrong_source == 1


def test_plain_rtp_does_not_latch_any_source_by_default() -> None:
    rx, _, _ = make_inbound()
    assert rx.latch_any_source is False


def test_a_leg_closed_while_it_starts_never_comes_up_and_frees_its_ports() -> None:
    """The caller hangs up while the leg attaches its sockets (seen under load as EBADF and
    "File descriptor N is used by transport" on another call's connection): the leg ends
    closed, registers no dead descriptor, sends nothing, and its ports are free again."""
    import asyncio

    from bridge.codecs import PCMU
    from bridge.legacy_leg import LegacyAudioLeg
    from bridge.ports import PortAllocator

    errors: list[dict[str, object]] = []

    async def scenario() -> tuple[LegacyAudioLeg, PortAllocator]:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        allocator = PortAllocator(41000, 41999, address="127.0.0.1")
        leg = LegacyAudioLeg(lease=allocator.allocate(), codec=PCMU, payload_type=0,
                             remote_address="127.0.0.1", remote_port=9)
        starting = asyncio.ensure_future(leg.start())
        await asyncio.sleep(0)  # the attach is under way
        leg.close()
        await starting
        await asyncio.sleep(0.05)
        return leg, allocator

    leg, allocator = asyncio.run(scenario())
    assert errors == []
    assert not leg.started and leg.counters.packets_out == 0
    assert allocator.in_use == 0 and leg.lease.rtp_socket.fileno() == -1
