"""SDES-SRTP on the legacy leg (RFC 3711 with RFC 4568 keys), through pylibsrtp, without sockets:
round trips for every suite (RTP and RTCP), tampered and replayed packets dropped and counted apart,
and the leg's inbound/outbound halves with keys."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from bridge.codecs import PCMU
from bridge.legacy_leg import LegCounters, RtpInbound, RtpOutbound
from bridge.rtp import RtpPacket
from bridge.srtp import SUITES, SdesSrtp, SrtpDropped, SrtpError
from tests.support.audio import assert_tone, tone

PEER = ("192.0.2.10", 40000)
TAG_LENGTH = {"AES_CM_128_HMAC_SHA1_80": 10, "AES_CM_128_HMAC_SHA1_32": 4,
              "AEAD_AES_128_GCM": 16, "AEAD_AES_256_GCM": 16}


def pair(suite: str) -> tuple[SdesSrtp, SdesSrtp]:
    """Two ends of one SDES call: each protects with its own key and unprotects with the other's."""
    length = SUITES[suite][1]
    a_key, b_key = os.urandom(length), os.urandom(length)
    return (SdesSrtp(suite, remote_key=b_key, local_key=a_key),
            SdesSrtp(suite, remote_key=a_key, local_key=b_key))


def rtp(seq: int, payload: bytes = b"\xff" * 160, ssrc: int = 42, pt: int = 0) -> bytes:
    return bytes(RtpPacket(pt, seq, seq * 160, ssrc, payload))


RTCP_RR = struct.pack("!BBHI", 0x80, 201, 1, 42)  # an empty receiver report


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_round_trip_rtp_and_rtcp_each_suite(suite: str) -> None:
    a, b = pair(suite)
    plain = rtp(1)
    protected = a.protect(plain)
    assert len(protected) == len(plain) + TAG_LENGTH[suite]
    assert protected[:12] == plain[:12] and protected[12:172] != plain[12:]  # header clear, payload not
    assert b.unprotect(protected) == plain
    back = b.protect(rtp(7, ssrc=9))
    assert back != rtp(7, ssrc=9) and a.unprotect(back) == rtp(7, ssrc=9)
    assert b.unprotect_rtcp(a.protect_rtcp(RTCP_RR)) == RTCP_RR


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_tampered_wrong_key_and_replayed_packets_are_refused_by_reason(suite: str) -> None:
    a, b = pair(suite)
    good = a.protect(rtp(1))
    tampered = bytearray(a.protect(rtp(2)))
    tampered[20] ^= 0x01
    with pytest.raises(SrtpDropped) as info:
        b.unprotect(bytes(tampered))
    assert info.value.reason == "auth"
    with pytest.raises(SrtpDropped) as info:
        a.unprotect(a.protect(rtp(3)))  # protected with a's own key: not what a expects from b
    assert info.value.reason == "auth"
    assert b.unprotect(good) == rtp(1)
    with pytest.raises(SrtpDropped) as info:
        b.unprotect(good)
    assert info.value.reason == "replay"
    with pytest.raises(SrtpDropped) as info:
        b.unprotect(b"\x80\x00\x00")
    assert info.value.reason == "other"
    bad_rtcp = bytearray(a.protect_rtcp(RTCP_RR))
    bad_rtcp[-1] ^= 0x80
    with pytest.raises(SrtpDropped):
        b.unprotect_rtcp(bytes(bad_rtcp))


def test_context_refuses_unknown_suites_and_wrong_key_lengths() -> None:
    with pytest.raises(SrtpError, match="not supported"):
        SdesSrtp("AES_256_CM_HMAC_SHA1_80", remote_key=bytes(46), local_key=bytes(46))
    with pytest.raises(SrtpError, match="30-byte remote"):
        SdesSrtp("AES_CM_128_HMAC_SHA1_80", remote_key=bytes(28), local_key=bytes(30))


def make_inbound(srtp: SdesSrtp) -> tuple[RtpInbound, LegCounters]:
    counters = LegCounters()
    rx = RtpInbound(remote_address="192.0.2.10", payload_type=0, decoder=PCMU.decoder(),
                    counters=counters, srtp=srtp)
    return rx, counters


def test_leg_inbound_decrypts_and_counts_auth_and_replay_apart() -> None:
    peer, ours = pair("AES_CM_128_HMAC_SHA1_80")
    rx, c = make_inbound(ours)
    pcm_tone = tone(1000, 0.02)
    first = peer.protect(rtp(1, PCMU.encoder().encode(pcm_tone)))
    tampered = bytearray(peer.protect(rtp(2)))
    tampered[-1] ^= 0xFF
    assert rx.receive(bytes(tampered), PEER) is None
    assert rx.latched is None  # an unauthenticated packet never latches the source
    assert rx.receive(peer.protect(rtp(3)), ("192.0.2.10", 5004)) is not None
    assert rx.latched == ("192.0.2.10", 5004)
    assert rx.receive(first, ("192.0.2.10", 5004)) is None  # seq 1 behind 3: late (plain check)
    assert rx.receive(peer.protect(rtp(4)), ("192.0.2.10", 5004)) is not None
    replay = peer.protect(rtp(5))
    assert rx.receive(replay, ("192.0.2.10", 5004)) is not None
    assert rx.receive(replay, ("192.0.2.10", 5004)) is None
    assert rx.receive(b"\x80\x00" + bytes(20), ("192.0.2.10", 5004)) is None  # plain RTP on an SRTP leg
    assert (c.dropped_srtp_auth, c.dropped_srtp_replay, c.packets_in) == (2, 1, 3)
    assert c.dropped == c.dropped_srtp_auth + c.dropped_srtp_replay + c.dropped_late
    assert c.as_dict()["dropped_srtp_auth"] == 2
    # SRTCP multiplexed on the RTP port is authenticated too.
    assert rx.receive(peer.protect_rtcp(RTCP_RR), ("192.0.2.10", 5004)) is None
    assert c.rtcp_in == 1
    before = c.dropped
    assert rx.receive(RTCP_RR + b"\x80" + bytes(13), ("192.0.2.10", 5004)) is None  # forged trailer
    assert c.rtcp_in == 1 and c.dropped == before + 1


def test_leg_outbound_protects_and_the_peer_hears_the_tone() -> None:
    peer, ours = pair("AEAD_AES_128_GCM")
    tx = RtpOutbound(payload_type=0, timestamp_step=160, encoder=PCMU.encoder(), srtp=ours)
    signal = tone(440, 1.0)
    decoder = PCMU.decoder()
    heard = []
    for i in range(50):
        wire = tx.packet(signal[i * 160:(i + 1) * 160])
        assert len(wire) == 12 + 160 + 16
        packet = RtpPacket.parse(peer.unprotect(wire))
        heard.append(decoder.decode(packet.payload))
    assert_tone(np.concatenate(heard), 8000, 440, skip_seconds=0.0)
