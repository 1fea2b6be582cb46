"""bridge.latch: the one source-latching rule of the audio and video legs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.codecs import PCMU
from bridge.latch import SourceLatch, normalise_ip, same_ip
from bridge.legacy_leg import LegacyAudioLeg
from bridge.ports import PortAllocator
from bridge.rtp import RtpPacket
from bridge.video_leg import LegacyVideoLeg, VideoLegParams

SDP = ("192.0.2.10", 40000)


def test_plain_rtp_accepts_only_the_sdp_ip_then_only_the_latched_address() -> None:
    latch = SourceLatch(SDP[0], any_source=False, leg="video")
    assert latch.accepts(SDP) and latch.accepts((SDP[0], 5555))  # NATs rewrite ports
    assert not latch.accepts(("203.0.113.9", SDP[1]))
    assert latch.destination(SDP) == SDP  # the SDP's address until something latches
    latch.latch((SDP[0], 5555), authenticated=False)
    assert latch.latched == (SDP[0], 5555) and latch.destination(SDP) == (SDP[0], 5555)
    assert not latch.accepts(SDP) and latch.accepts((SDP[0], 5555))
    # RTCP: any port of the latched IP (it comes from the peer's RTCP port), never another IP.
    assert latch.accepts_rtcp((SDP[0], 5556)) and not latch.accepts_rtcp(("203.0.113.9", 5556))
    latch.latch(("203.0.113.9", 1), authenticated=False)  # a second latch changes nothing
    assert latch.latched == (SDP[0], 5555)


def test_srtp_latches_the_first_authenticated_source_wherever_it_is() -> None:
    latch = SourceLatch(SDP[0], any_source=True, leg="legacy")
    assert latch.accepts(("198.51.100.7", 1)) and latch.accepts_rtcp(("198.51.100.7", 2))
    latch.latch(("198.51.100.7", 1), authenticated=True)
    assert not latch.accepts(SDP) and latch.destination(SDP) == ("198.51.100.7", 1)


def test_retarget_forgets_the_latch_and_takes_the_new_rule() -> None:
    latch = SourceLatch(SDP[0], any_source=False, leg="video")
    latch.latch(SDP, authenticated=False)
    latch.retarget("192.0.2.77")
    assert latch.latched is None and latch.accepts(("192.0.2.77", 1)) and not latch.accepts(SDP)
    latch.retarget(any_source=True)
    assert latch.accepts(("203.0.113.9", 1)) and latch.expected_ip == "192.0.2.77"


def test_ipv6_forms_compare_normalised_and_garbage_is_no_match() -> None:
    assert normalise_ip("0:0:0::1") == "::1"
    latch = SourceLatch("2001:db8::0:1", any_source=False, leg="video")
    assert latch.accepts(("2001:db8::1", 4000, 0, 0)) and not latch.accepts(("not an ip", 4000))
    assert not same_ip("", "::1")


_ADDRS = st.tuples(st.sampled_from(["192.0.2.10", "203.0.113.9", "::1", "garbage", ""]),
                   st.integers(min_value=0, max_value=3))


@settings(max_examples=300)
@given(st.booleans(), st.lists(st.tuples(_ADDRS, st.booleans()), max_size=30))
def test_once_latched_only_that_address_is_accepted_until_retargeted(
        any_source: bool, steps: list[tuple[tuple[str, int], bool]]) -> None:
    """Any sequence of datagrams: never raises, latches the first accepted one that the leg
    latches, and from then on accepts exactly that address (RTCP: its IP)."""
    latch = SourceLatch(SDP[0], any_source=any_source, leg="video")
    first: tuple[str, int] | None = None
    for addr, leg_latches in steps:
        ok = latch.accepts(addr)
        if first is None:
            assert ok == (any_source or addr[0] == SDP[0])
            if ok and leg_latches:
                latch.latch(addr, authenticated=any_source)
                first = addr
        else:
            assert ok == (addr == first) and latch.accepts_rtcp(addr) == (addr[0] == first[0])
        assert latch.latched == first
        assert latch.destination(SDP) == (first or SDP)


# -- re-targets: strict to the new address:port for a peer that proved symmetric ----------------

NEW = (SDP[0], 40100)
OLD_RTCP = (SDP[0], SDP[1] + 1)


def _symmetric_then_moved(new: tuple[str, int] = NEW) -> SourceLatch:
    latch = SourceLatch(SDP[0], any_source=False, leg="legacy", remote_port=SDP[1])
    latch.latch(SDP, authenticated=False)  # sent from exactly the port its SDP named: no NAT
    assert latch.symmetric is True
    latch.retarget(new[0], new[1])
    return latch


def test_a_symmetric_peer_moved_by_a_reoffer_latches_only_from_the_new_port() -> None:
    latch = _symmetric_then_moved()
    assert latch.strict and latch.latched is None
    assert not latch.accepts(SDP)  # the late packet from the old port
    assert not latch.accepts((SDP[0], 5555)) and not latch.accepts(("203.0.113.9", NEW[1]))
    assert latch.accepts(NEW) and latch.destination(NEW) == NEW
    assert latch.accepts_rtcp(OLD_RTCP)  # RTCP never latches: the IP rule, as before
    latch.latch(NEW, authenticated=False)
    assert latch.latched == NEW and not latch.strict and latch.symmetric is True
    assert not latch.accepts(SDP)


def test_a_peer_behind_nat_keeps_any_port_from_the_new_address() -> None:
    latch = SourceLatch(SDP[0], any_source=False, leg="legacy", remote_port=SDP[1])
    latch.latch((SDP[0], 61000), authenticated=False)  # a NAT rewrote the port
    assert latch.symmetric is False
    latch.retarget(NEW[0], NEW[1])
    assert not latch.strict and latch.accepts((SDP[0], 61000)) and latch.accepts((SDP[0], 62000))


def test_no_strictness_without_evidence_a_known_port_srtp_or_a_move() -> None:
    never_latched = SourceLatch(SDP[0], any_source=False, leg="legacy", remote_port=SDP[1])
    never_latched.retarget(NEW[0], NEW[1])
    assert not never_latched.strict and never_latched.accepts(SDP)
    unknown_port = SourceLatch(SDP[0], any_source=False, leg="video")
    unknown_port.latch(SDP, authenticated=False)
    unknown_port.retarget(NEW[0], NEW[1])
    assert unknown_port.symmetric is None and not unknown_port.strict and unknown_port.accepts(SDP)
    srtp = SourceLatch(SDP[0], any_source=True, leg="legacy", remote_port=SDP[1])
    srtp.latch(SDP, authenticated=True)
    srtp.retarget(NEW[0], NEW[1])
    assert not srtp.strict and srtp.accepts(SDP)
    same_place = SourceLatch(SDP[0], any_source=False, leg="legacy", remote_port=SDP[1])
    same_place.latch(SDP, authenticated=False)
    same_place.retarget(SDP[0], SDP[1])  # a hold/resume or new keys: nothing moved
    assert not same_place.strict and same_place.accepts((SDP[0], 5555))


def test_two_reoffers_before_the_first_packet_stay_strict_and_srtp_lifts_it() -> None:
    latch = _symmetric_then_moved()
    latch.retarget(SDP[0], 40200)
    assert latch.strict and not latch.accepts(NEW) and latch.accepts((SDP[0], 40200))
    latch.retarget(any_source=True)  # an SDES re-key: authentication decides from now on
    assert not latch.strict and latch.accepts(("203.0.113.9", 1))


_SENDERS = st.sampled_from([SDP, NEW, (SDP[0], 5555), ("203.0.113.9", NEW[1])])


@settings(max_examples=300)
@given(st.lists(_SENDERS, max_size=40))
def test_after_a_move_only_the_new_address_port_ever_latches(senders: list[tuple[str, int]]) -> None:
    """Any interleaving of late old-port packets, the new stream and strangers after the
    re-target of a symmetric peer: the latch is taken by the new address:port and nothing else,
    and every other packet is refused (the leg counts it as ``wrong_source``)."""
    latch = _symmetric_then_moved()
    refused = 0
    for addr in senders:
        if latch.accepts(addr):
            assert addr == NEW
            latch.latch(addr, authenticated=False)
        else:
            refused += 1
    assert refused == sum(1 for a in senders if a != NEW)
    assert latch.latched == (NEW if NEW in senders else None)


# -- the legs: a late packet from the old port after a re-INVITE is a wrong_source drop ---------


class _FakeSocket:
    def close(self) -> None:
        pass


def _ports() -> PortAllocator:
    return PortAllocator(20100, 20110, address="127.0.0.1",
                         bind=lambda _a, _p: _FakeSocket())  # type: ignore[arg-type,return-value]


def _audio(seq: int) -> bytes:
    return bytes(RtpPacket(0, seq, seq * 160, 0x5EED, b"\xff" * 160))


def test_audio_leg_reinvite_refuses_the_old_port_until_the_new_one_latches() -> None:
    leg = LegacyAudioLeg(lease=_ports().allocate(), codec=PCMU, payload_type=0, remote_address=SDP[0],
                         remote_port=SDP[1])
    try:
        leg.inbound.receive(_audio(1), SDP)
        assert leg.inbound.latched == SDP
        leg.renegotiate(codec=PCMU, payload_type=0, remote_address=NEW[0], remote_port=NEW[1],
                        telephone_event_pt=None, srtp=None, sending=True)
        leg.inbound.receive(_audio(2), SDP)  # in flight when the peer switched
        leg.inbound.receive(_audio(3), SDP)
        assert leg.inbound.latched is None and leg.counters.dropped_wrong_source == 2
        leg.inbound.receive(_audio(1000), NEW)
        leg.inbound.receive(_audio(4), SDP)
        assert leg.inbound.latched == NEW and leg.destination == NEW
        assert leg.counters.dropped_wrong_source == 3 and leg.counters.packets_in == 2
    finally:
        leg.close()


def test_video_leg_reoffer_refuses_the_old_port_until_the_new_one_latches() -> None:
    leg = LegacyVideoLeg(lease=_ports().allocate(),
                         params=VideoLegParams(payload_type=96, remote_address=SDP[0], remote_port=SDP[1]))
    # A single-NAL IDR slice (type 5): enough to be accepted and latch.
    idr = bytes(RtpPacket(96, 1, 0, 0xF1DE0, b"\x65\x88\x80", marker=True))
    try:
        leg.inbound.receive(idr, SDP)
        assert leg.inbound.latched == SDP
        leg.renegotiate(remote_address=NEW[0], remote_port=NEW[1], sending=True)
        leg.inbound.receive(idr, SDP)
        assert leg.inbound.latched is None and leg.counters.dropped_wrong_source == 1
        leg.inbound.receive(idr, NEW)
        assert leg.inbound.latched == NEW
    finally:
        leg.close()
