"""The fast path's header rewrite (bridge.fastpath.RtpRewriter) and its two relays, without sockets."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.codecs import AUDIO_CODECS
from bridge.dtmf_sender import DtmfSender
from bridge.fastpath import (
    G711_TRANSLATION,
    CoreToLegacy,
    LawFollower,
    LegacyToCore,
    RtpRewriter,
    SendSuspended,
    quiet_idle_sender,
    run_to_completion,
    seq_newer,
)
from bridge.jitter import JitterBuffer
from bridge.legacy_leg import LegCounters, RtpInbound
from bridge.rtp import RtpPacket, TelephoneEvent
from bridge.session import fast_path_rtp
from bridge.stats import call_stats
from tests.support.audio import assert_tone, tone

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


# -- PCMU <-> PCMA after a re-INVITE: the law translated per packet ------------------------------
#
# The reference is written from ITU-T G.711 itself (tables 1a/1b, 2a/2b: sign, 3-bit segment,
# 4-bit step; even bits of A-law inverted, all bits of mu-law), independent of bridge.codecs,
# and checked against audioop (CPython's C implementation, still present in 3.11).


def _alaw_decode(code: int) -> int:
    a = code ^ 0x55
    seg, step = (a >> 4) & 7, a & 0x0F
    mag = (step << 4) + 8 if seg == 0 else ((step << 4) + 0x108) << (seg - 1)
    return mag if a & 0x80 else -mag


def _ulaw_decode(code: int) -> int:
    u = ~code & 0xFF
    mag = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 7)
    return 0x84 - mag if u & 0x80 else mag - 0x84


def _alaw_encode(pcm: int) -> int:
    pcm >>= 3  # 13-bit
    mask = 0xD5 if pcm >= 0 else 0x55
    if pcm < 0:
        pcm = -pcm - 1
    seg = next((i for i, end in enumerate((0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF))
                if pcm <= end), 8)
    if seg == 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (1 if seg < 2 else seg)) & 0x0F)) ^ mask


def _ulaw_encode(pcm: int) -> int:
    pcm >>= 2  # 14-bit
    mask = 0xFF if pcm >= 0 else 0x7F
    pcm = min(abs(pcm), 8159) + (0x84 >> 2)
    seg = next((i for i, end in enumerate((0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF))
                if pcm <= end), 8)
    if seg == 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (seg + 1)) & 0x0F)) ^ mask


def test_the_law_tables_match_g711_and_audioop_on_all_256_codes() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    every = bytes(range(256))
    u2a, a2u = G711_TRANSLATION[("PCMU", "PCMA")], G711_TRANSLATION[("PCMA", "PCMU")]
    assert len(u2a) == len(a2u) == 256
    assert u2a == bytes(_alaw_encode(_ulaw_decode(c)) for c in every)
    assert a2u == bytes(_ulaw_encode(_alaw_decode(c)) for c in every)
    assert u2a == audioop.lin2alaw(audioop.ulaw2lin(every, 2), 2)
    assert a2u == audioop.lin2ulaw(audioop.alaw2lin(every, 2), 2)
    for code in every:  # the sign survives and the value moves by less than one target step
        for table, decode, decode_out in ((u2a, _ulaw_decode, _alaw_decode),
                                          (a2u, _alaw_decode, _ulaw_decode)):
            before, after = decode(code), decode_out(table[code])
            assert (before >= 0) == (after >= 0) or abs(before) <= 8
            assert abs(after - before) <= max(16, abs(before) // 16 + 16)


def test_a_mid_call_law_switch_is_translated_both_ways_and_back() -> None:
    """The core answered PCMU; the leg moves to PCMA (a re-INVITE) and back: each relay
    translates only while the laws differ, and a tone survives it (FFT)."""
    pcmu, pcma = AUDIO_CODECS["PCMU"], AUDIO_CODECS["PCMA"]
    leg = _Leg()
    leg.codec = pcmu  # type: ignore[attr-defined]
    transport = _DtlsTransport()
    to_core = LegacyToCore(_WhipSender(transport), payload_type=0, core_codec="PCMU",
                           legacy_codec=lambda: leg.codec.name)  # type: ignore[attr-defined]
    to_legacy = CoreToLegacy(leg, core_payload_type=0, core_codec="PCMU")
    pcm = tone(1000, 1.0, rate=8000, amplitude=0.3)
    frames = [pcm[i * 160:(i + 1) * 160] for i in range(50)]
    for i, frame in enumerate(frames):
        if i == 10:
            leg.codec = pcma  # type: ignore[attr-defined]
        if i == 40:
            leg.codec = pcmu  # type: ignore[attr-defined]
        law = leg.codec  # type: ignore[attr-defined]
        to_core(RtpPacket(payload_type=law.payload_type, sequence_number=i, timestamp=160 * i, ssrc=7,
                          payload=law.encoder().encode(frame)))
        to_legacy(_CorePacket(sequence_number=i, timestamp=160 * i, payload=pcmu.encoder().encode(frame)))
    at_core = np.concatenate([pcmu.decoder().decode(RtpPacket.parse(d).payload) for d in transport.sent])
    at_leg = [RtpPacket.parse(d).payload for d in leg.sent]
    heard = np.concatenate([(pcma if 10 <= i < 40 else pcmu).decoder().decode(p) for i, p in enumerate(at_leg)])
    for name, samples in (("core", at_core), ("legacy", heard)):
        spectrum = assert_tone(samples, 8000, 1000, min_dbfs=-16, skip_seconds=0)
        error = np.abs(samples.astype(int) - pcm.astype(int))
        snr = 10 * np.log10(np.mean(pcm.astype(float) ** 2) / np.mean(error.astype(float) ** 2))
        print(f"{name} hears {spectrum.peak_hz:.0f} Hz at {spectrum.rms_dbfs:.1f} dBFS, "
              f"max error {error.max()}, SNR {snr:.1f} dB")
        # G.711 keeps ~38 dB SNR for a -13 dBFS tone; one extra law conversion costs a few dB,
        # an untranslated payload (one law read as the other) is noise.
        assert snr > 30
    assert to_core.law is not None and to_legacy.law is not None
    assert to_core.law.transcoded == to_legacy.law.transcoded == 30


def test_without_codecs_the_relays_copy_payloads_unchanged() -> None:
    follower = LawFollower("PCMA", lambda: "PCMA", direction="to_core")
    assert follower(b"\x01\x02") == b"\x01\x02" and follower.transcoded == 0
    assert CoreToLegacy(_Leg(), core_payload_type=0).law is None


class _SenderTransport(_DtlsTransport):
    """What a track-less aiortc ``RTCRtpSender`` needs of its DTLS transport."""

    state = "connected"

    def _register_rtp_sender(self, sender: Any, parameters: Any) -> None:
        del sender, parameters

    def _unregister_rtp_sender(self, sender: Any) -> None:
        del sender


async def _quiet_sender_run(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, _SenderTransport, bool]:
    from aiortc import RTCRtpSender, rtcrtpsender
    from aiortc.rtcrtpparameters import (
        RTCRtcpParameters,
        RTCRtpCodecParameters,
        RTCRtpSendParameters,
    )

    monkeypatch.setattr(rtcrtpsender.random, "random", lambda: 0.0)  # SR every 0.5 s, not 0.5-1.5
    transport = _SenderTransport()
    sender: Any = RTCRtpSender("audio", transport)  # type: ignore[arg-type]  # a stand-in transport
    quieted = quiet_idle_sender(sender)
    pcmu = RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, payloadType=0)
    await sender.send(RTCRtpSendParameters(codecs=[pcmu], rtcp=RTCRtcpParameters(cname="gw")))
    await asyncio.sleep(0.6)
    rtp_task = sender._RTCRtpSender__rtp_task
    assert rtp_task.done() and not rtp_task.cancelled()  # ran once, returned: no 20 ms loop left
    await asyncio.wait_for(sender.stop(), 5)  # a guard against a hang, not a timing claim
    return sender, transport, quieted


def test_a_quiet_idle_sender_still_sends_rtcp_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    sender, transport, quieted = asyncio.run(_quiet_sender_run(monkeypatch))
    assert quieted
    kinds = [d[1] for d in transport.sent]  # second byte of each compound: the RTCP packet type
    assert kinds.count(200) >= 1  # the SR (RFC 3550 6.4.1), what the core's RRs answer
    assert kinds[-1] == 203  # stop() still ends with aiortc's RTCP BYE
    sr = next(d for d in transport.sent if d[1] == 200)
    assert int.from_bytes(sr[4:8]) == sender._ssrc  # on the SSRC our relayed packets carry
    assert all(200 <= d[1] <= 206 for d in transport.sent)  # RTCP only: no RTP of its own


def test_an_aiortc_without_the_private_events_keeps_its_idle_loop() -> None:
    class _Other:
        async def _run_rtp(self, codec: Any) -> None:
            del codec

    other = _Other()
    original = other._run_rtp
    assert quiet_idle_sender(other) is False
    assert other._run_rtp == original


def _sized(seq: int, size: int) -> RtpPacket:
    return RtpPacket(payload_type=0, sequence_number=seq, timestamp=160 * seq, ssrc=7, payload=b"\xff" * size)


def test_the_relays_counts_become_the_webrtc_legs_packets_and_bytes() -> None:
    to_core = LegacyToCore(_WhipSender(_DtlsTransport()), payload_type=0,
                           rewriter=RtpRewriter(next_sequence=1, next_timestamp=1))
    for seq, size in ((1, 160), (2, 80), (2, 80)):  # the duplicate is dropped, not sent
        to_core(_sized(seq, size))
    broken = LegacyToCore(_WhipSender(_DtlsTransport(connected=False)), payload_type=0)
    broken(_sized(1, 160))  # a send that failed is not counted as sent
    to_legacy = CoreToLegacy(_Leg(), core_payload_type=0)
    stream = _core_stream(4)
    for p in stream:
        to_legacy(p)
    # The core's receiver reports, from the WHIP side's getStats (a cached summary).
    polled: dict[str, Any] = {"inbound": {}, "outbound": {"packets": 0, "bytes": 0, "lost": 1,
                                                          "loss_fraction": 0.01, "jitter_ms": 2.5},
                              "rtt_ms": 0.4}

    rtp = fast_path_rtp(polled, to_core, to_legacy, "PCMU")
    webrtc = call_stats({"webrtc": {"encryption": "dtls-srtp", "rtp": rtp}}).webrtc

    assert (webrtc.outbound.packets, webrtc.outbound.bytes) == (2, 240)
    assert (webrtc.inbound.packets, webrtc.inbound.bytes) == (4, sum(len(p.payload) for p in stream))
    assert (webrtc.outbound.lost, webrtc.outbound.jitter_ms, webrtc.rtt_ms) == (1, 2.5, 0.4)
    assert webrtc.codec == "PCMU"
    assert fast_path_rtp(polled, broken, None, "PCMA")["outbound"]["packets"] == 0
