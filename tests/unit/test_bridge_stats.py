"""CallStats and what feeds it, sans-IO: the inbound path through the jitter buffer, RTCP on
the RTCP port (latching, SRTCP auth), RTT from a report round trip on fake clocks, and the
WebRTC leg's figures from aiortc stats objects."""

from __future__ import annotations

import datetime
import os

import numpy as np
from aiortc.stats import (
    RTCInboundRtpStreamStats,
    RTCOutboundRtpStreamStats,
    RTCRemoteInboundRtpStreamStats,
)

from bridge.codecs import PCMU
from bridge.jitter import JitterBuffer
from bridge.legacy_leg import LegacyAudioLeg, LegCounters, RtpInbound
from bridge.ports import PortAllocator
from bridge.rtcp import (
    PT_PSFB,
    RawRtcp,
    ReceiverReport,
    ReceiverStatistics,
    SenderReport,
    build_compound,
    parse_compound,
)
from bridge.rtcp_reporter import RtcpReporter, SenderSnapshot
from bridge.rtp import RtpPacket
from bridge.srtp import SdesSrtp
from bridge.stats import call_stats, summarise_webrtc_report
from tests.support.audio import assert_tone, tone

PEER = ("192.0.2.10", 40000)
PEER_RTCP = ("192.0.2.10", 40001)


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def rtp(seq: int, payload: bytes = b"\xff" * 160, ssrc: int = 42) -> bytes:
    return bytes(RtpPacket(0, seq, seq * 160, ssrc, payload))


def inbound(srtp: SdesSrtp | None = None) -> tuple[RtpInbound, LegCounters, JitterBuffer, list[bytes], FakeClock]:
    counters = LegCounters()
    clock = FakeClock()
    got: list[bytes] = []
    jb = JitterBuffer(clock_rate=8000, frame_ticks=160)
    rx = RtpInbound(remote_address="192.0.2.10", payload_type=0, decoder=PCMU.decoder(), counters=counters,
                    jitter=jb, clock=clock, on_rtcp=got.append, srtp=srtp)
    return rx, counters, jb, got, clock


def test_reordered_packets_are_not_dropped_duplicates_are_and_loss_is_rfc3550() -> None:
    rx, c, jb, _, clock = inbound()
    for seq in (1, 2, 4, 3, 3, 6):  # 3 reordered then duplicated; 5 never comes
        assert rx.receive(rtp(seq), PEER) is None  # filed, not decoded on arrival
        clock.t += 0.02
    assert (c.packets_in, c.dropped_late, c.packets_lost) == (5, 1, 1)
    assert jb.counters.duplicate == 1 and jb.queued == 5
    assert rx.rx_stats is not None and rx.rx_stats.expected == 6


def test_rtcp_port_accepts_only_the_latched_ip() -> None:
    rx, c, _, got, _ = inbound()
    rr = bytes(ReceiverReport(42))
    rx.receive_rtcp(rr, ("198.51.100.9", 40001))
    assert c.dropped_wrong_source == 1 and not got  # before latching: a stranger's report is refused
    rx.receive_rtcp(rr, PEER_RTCP)  # ...the SDP-named IP's is taken (peers report before our RTP)
    assert c.rtcp_in == 1 and got == [rr] and rx.latched is None  # and RTCP never latches
    rx.receive(rtp(1), PEER)
    rx.receive_rtcp(rr, ("198.51.100.9", 40001))
    rx.receive_rtcp(b"\x00" * 8, PEER_RTCP)
    rx.receive_rtcp(rr, PEER_RTCP)
    assert (c.dropped_wrong_source, c.dropped_bad_packet, c.rtcp_in) == (2, 1, 2) and got == [rr, rr]


def test_srtcp_must_authenticate() -> None:
    peer_key, our_key = os.urandom(30), os.urandom(30)
    ours = SdesSrtp("AES_CM_128_HMAC_SHA1_80", remote_key=peer_key, local_key=our_key)
    theirs = SdesSrtp("AES_CM_128_HMAC_SHA1_80", remote_key=our_key, local_key=peer_key)
    rx, c, _, got, _ = inbound(srtp=ours)
    rx.receive(theirs.protect(rtp(1)), PEER)
    good = theirs.protect_rtcp(bytes(ReceiverReport(42)))
    tampered = bytearray(theirs.protect_rtcp(bytes(ReceiverReport(42))))
    tampered[9] ^= 1
    rx.receive_rtcp(bytes(tampered), PEER_RTCP)
    rx.receive_rtcp(good, PEER_RTCP)
    assert c.dropped_srtp_auth == 1 and got == [bytes(ReceiverReport(42))]


def test_report_round_trip_gives_rtt_and_the_peers_view() -> None:
    """Gateway A sends an SR; peer B holds it 500 ms and answers with an RR; 30 ms each way."""
    wall = FakeClock(1_700_000_000.0)
    a = RtcpReporter(ssrc=0xA, cname="a", clock_rate=8000, wallclock=wall)
    b = RtcpReporter(ssrc=0xB, cname="b", clock_rate=8000, wallclock=wall)
    b_rx = ReceiverStatistics(ssrc=0xA, clock_rate=8000)
    for seq in range(100):
        if seq % 20 != 7:  # B misses 5 of A's 100 packets
            b_rx.update(seq, seq * 160, seq * 0.02)
    sr = a.build(0.0, sent=SenderSnapshot(100, 16000, 16000), rx=None)
    assert isinstance(parse_compound(sr)[0], SenderReport)
    wall.t += 0.03
    assert b.receive(sr, 2.03, b_rx) == []
    wall.t += 0.5
    rr = b.build(2.53, sent=None, rx=b_rx)
    wall.t += 0.03
    pli = bytes(RawRtcp(PT_PSFB, 1, 0xB, b"\x00\x00\x00\x0a"))
    raw = a.receive(build_compound([rr, pli]), 0.56, None)
    assert raw == [RawRtcp(PT_PSFB, 1, 0xB, b"\x00\x00\x00\x0a")]  # feedback handed on untouched
    assert a.rtt_ms is not None and abs(a.rtt_ms - 60.0) < 0.5
    assert a.remote_block is not None and a.remote_block.cumulative_lost == 5
    print(f"\nRTT {a.rtt_ms:.2f} ms, peer-reported loss {a.remote_block.loss_fraction:.3f}")
    assert (a.sr_sent, b.rr_sent) == (1, 1)


def make_leg() -> LegacyAudioLeg:
    class _Sock:
        def close(self) -> None:
            pass

    ports = PortAllocator(20000, 20010, address="127.0.0.1", bind=lambda _a, _p: _Sock())  # type: ignore[arg-type,return-value]
    return LegacyAudioLeg(lease=ports.allocate(), codec=PCMU, payload_type=0, remote_address="192.0.2.10",
                          remote_port=40000)


def test_leg_plays_through_the_jitter_buffer_and_reports_call_stats() -> None:
    leg = make_leg()
    heard: list[np.ndarray] = []
    leg.on_audio = heard.append
    clock = FakeClock(0.0)
    leg.inbound._clock = clock
    enc = PCMU.encoder()
    signal = tone(700, 3.0)
    order = [i for i in range(150) if i % 25 != 5]  # 4 % loss
    for k in range(0, len(order) - 1, 10):
        order[k], order[k + 1] = order[k + 1], order[k]  # and some reordering
    sent = {seq: enc.encode(signal[seq * 160:(seq + 1) * 160]) for seq in order}
    pending = [(seq * 0.02 + (0.004 if k % 10 == 1 else 0.0), seq) for k, seq in enumerate(order)]
    pending.sort()
    t = 0.01
    while t < 3.2:
        while pending and pending[0][0] <= t:
            clock.t, seq = pending.pop(0)
            leg._datagram_received(rtp(seq, sent[seq]), PEER)
        leg._play(t)
        t += 0.02
    pcm = np.concatenate(heard)
    assert_tone(pcm, 8000, 700, min_dbfs=-20)
    stats = call_stats({"legacy": leg.stats(), "webrtc": {"encryption": "dtls-srtp"}})
    print(f"\n{stats.legacy}")
    assert stats.legacy.inbound.packets == len(order) and stats.legacy.inbound.lost == 6
    assert stats.legacy.inbound.loss_fraction == round(6 / 150, 4)
    assert stats.legacy.encryption == "plain" and stats.legacy.codec == "PCMU"
    assert stats.legacy.dropped["late"] == 0 and stats.legacy.rtt_ms is None
    assert leg.stats()["jitter_buffer"]["concealed"] >= 6
    assert stats.legacy.inbound.jitter_ms is not None and stats.legacy.inbound.jitter_ms < 5


def test_leg_takes_rtt_from_a_report_about_its_own_stream() -> None:
    leg = make_leg()
    leg._datagram_received(rtp(1), PEER)
    sr = leg.rtcp.build(0.0, sent=SenderSnapshot(50, 8000, 0), rx=None)
    lsr = parse_compound(sr)[0]
    assert isinstance(lsr, SenderReport)
    peer = ReceiverStatistics(ssrc=leg.outbound.ssrc, clock_rate=8000)
    peer.update(1, 160, 0.0)
    peer.sender_report_received(lsr, 0.0)
    block = peer.report_block(0.0)  # answered at once: RTT is only the time our code took
    leg.inbound.receive_rtcp(bytes(ReceiverReport(42, (block,))), PEER_RTCP)
    assert leg.counters.rtcp_in == 1 and leg.stats()["rtt_ms"] is not None
    assert leg.stats()["rtcp"]["remote_cumulative_lost"] == 0
    assert leg._rtcp_destination()[1] == PEER_RTCP  # our reports go back where theirs came from
    leg.inbound.receive_rtcp(b"\x80\xc9\x00\x09" + b"\x00" * 4, PEER_RTCP)  # claims more than it has
    assert leg.counters.dropped_bad_packet == 1


def test_webrtc_figures_from_aiortc_stats() -> None:
    now = datetime.datetime.now(datetime.UTC)
    sub = {"i": RTCInboundRtpStreamStats(timestamp=now, type="inbound-rtp", id="i", ssrc=1, kind="audio",
                                         transportId="t", packetsReceived=950, packetsLost=50, jitter=480)}
    pub = {"o": RTCOutboundRtpStreamStats(timestamp=now, type="outbound-rtp", id="o", ssrc=2, kind="audio",
                                          transportId="t", packetsSent=1000, bytesSent=80000, trackId="x"),
           "r": RTCRemoteInboundRtpStreamStats(timestamp=now, type="remote-inbound-rtp", id="r", ssrc=2,
                                               kind="audio", transportId="t", packetsReceived=990,
                                               packetsLost=10, jitter=96, roundTripTime=0.004, fractionLost=3)}
    summary = summarise_webrtc_report(pub, sub)
    stats = call_stats({"legacy": {}, "webrtc": {"encryption": "dtls-srtp", "rtp": summary}}).webrtc
    assert stats.inbound.jitter_ms == 10.0 and stats.inbound.loss_fraction == 0.05
    assert stats.outbound.packets == 1000 and stats.outbound.loss_fraction == round(3 / 256, 4)
    assert stats.outbound.jitter_ms == 2.0 and stats.rtt_ms == 4.0 and stats.encryption == "dtls-srtp"
    empty = call_stats({}).as_dict()
    assert empty["webrtc"]["rtt_ms"] is None and empty["legacy"]["inbound"]["packets"] == 0
