"""bridge.latch: the one source-latching rule of the audio and video legs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.latch import SourceLatch, normalise_ip, same_ip

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
