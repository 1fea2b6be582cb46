"""Send-bitrate caps toward a room system: b=TIAS/b=AS, REMB, TMMBR (answered with TMMBN) and
H.245 flow control; the encoder target is never above any of them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from bridge.bitrate import (
    CEILING_BPS,
    FULL_PAYLOAD,
    HEADERS_IPV4,
    HEADERS_IPV6,
    BitrateGovernor,
    cap_from_sdp,
    payload_share,
)
from bridge.rtcp import RawRtcp, parse_compound
from bridge.rtcp_feedback import Pli, Remb, Tmmbn, Tmmbr, parse_feedback
from sip.sdp import SessionDescription


def _video(*lines: str, address: str = "IN IP4 192.0.2.1") -> SessionDescription:
    text = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", f"c={address}", "t=0 0",
            "m=video 5000 RTP/AVP 96", *lines, "a=rtpmap:96 H264/90000"]
    return SessionDescription.parse("\r\n".join(text) + "\r\n")


def test_tias_is_taken_as_is_and_preferred_over_as() -> None:
    assert cap_from_sdp(_video("b=AS:2048", "b=TIAS:1920000").media[0]) == 1_920_000
    assert cap_from_sdp(_video("b=TIAS:768000").media[0]) == 768_000


def test_as_loses_the_headers_of_full_size_packets() -> None:
    got = cap_from_sdp(_video("b=AS:1000").media[0])
    assert got == 1_000_000 * 1188 // (1188 + 40) == 967_426
    v6 = cap_from_sdp(_video("b=AS:1000", address="IN IP6 2001:db8::1").media[0])
    assert v6 == 1_000_000 * 1188 // (1188 + 60) and v6 < got
    print("b=AS:1000 ->", got, "bps payload (IPv4),", v6, "(IPv6)")


def test_as_with_maxprate_subtracts_the_stated_packet_rate() -> None:
    # RFC 3890 6.4: 100 packets/s of 40-byte IPv4/UDP/RTP headers = 32 kbit/s
    assert cap_from_sdp(_video("b=AS:512", "a=maxprate:100").media[0]) == 512_000 - 32_000
    assert cap_from_sdp(_video("b=AS:512", "a=maxprate:bogus").media[0]) == payload_share(512_000)


def test_no_usable_bandwidth_line_is_none() -> None:
    assert cap_from_sdp(_video().media[0]) is None
    assert cap_from_sdp(_video("b=AS:0", "b=TIAS:x", "b=CT:5000").media[0]) is None


def test_governor_takes_the_least_and_tells_the_encoder_each_change() -> None:
    changes: list[int] = []
    g = BitrateGovernor(ssrc=0xAA, sdp_cap_bps=1_200_000, on_change=changes.append, call="c")
    assert g.target_bps == 1_200_000
    with capture_logs() as logs:
        assert g.remb(Remb(0xBB, 800_000, (0xAA,))) == payload_share(800_000)
        g.remb(Remb(0xBB, 5_000_000, (0xAA,)))  # the path recovered: back to the SDP cap
        assert g.flow_control(6000) == 600_000  # H.245: 6000 x 100 bit/s
        assert g.flow_control(None) == 1_200_000  # noRestriction
    assert changes == [payload_share(800_000), 1_200_000, 600_000, 1_200_000]
    assert [e["limited_by"] for e in logs if e["event"] == "video.bitrate.target"] == ["remb", "sdp", "h245", "sdp"]


def test_ceiling_applies_when_the_peer_states_nothing_or_more() -> None:
    g = BitrateGovernor(ssrc=1)
    assert g.target_bps == CEILING_BPS
    g.remb(Remb(2, 50_000_000, ()))
    assert g.target_bps == CEILING_BPS


def test_tmmbr_for_us_is_obeyed_and_answered_with_tmmbn() -> None:
    g = BitrateGovernor(ssrc=0xAA, sdp_cap_bps=2_000_000)
    answer = g.tmmbr(Tmmbr(0xBB, ((0xAA, 512_000, 60),)))
    assert answer == Tmmbn(0xAA, ((0xBB, 512_000, 60),))  # the bounding set: the requester's tuple
    assert g.target_bps == 512_000 * FULL_PAYLOAD // (FULL_PAYLOAD + 60)
    raw = parse_compound(answer.to_bytes())[0]
    assert isinstance(raw, RawRtcp) and parse_feedback(raw) == answer
    assert g.tmmbr(Tmmbr(0xBB, ((0xCC, 1000, 40),))) is None  # another source's limit
    assert g.feedback(Tmmbr(0xBB, ((0xAA, 0, 40),))) is not None and g.target_bps == 0  # 0: pause
    assert g.feedback(Pli(0xBB, 0xAA)) is None


@settings(max_examples=300, deadline=None)
@given(sdp=st.one_of(st.none(), st.integers(0, 10**8)),
       events=st.lists(st.one_of(
           st.tuples(st.just("remb"), st.integers(0, 10**8)),
           st.tuples(st.just("tmmbr"), st.integers(0, 10**8)),
           st.tuples(st.just("h245"), st.one_of(st.none(), st.integers(0, 10**6)))), max_size=20))
def test_target_never_exceeds_any_stated_limit(sdp: int | None, events: list[tuple[str, int | None]]) -> None:
    g = BitrateGovernor(ssrc=7, sdp_cap_bps=sdp)
    latest: dict[str, int | None] = {}
    for kind, value in events:
        if kind == "remb":
            assert value is not None
            g.remb(Remb(9, value, (7,)))
        elif kind == "tmmbr":
            assert value is not None
            g.tmmbr(Tmmbr(9, ((7, value, 40),)))
        else:
            g.flow_control(value)
        latest[kind] = value
    target = g.target_bps
    assert 0 <= target <= CEILING_BPS
    if sdp is not None:
        assert target <= sdp
    if latest.get("remb") is not None:
        assert target <= latest["remb"]  # type: ignore[operator]
    if latest.get("tmmbr") is not None:
        assert target <= latest["tmmbr"]  # type: ignore[operator]
    if latest.get("h245") is not None:
        assert target <= latest["h245"] * 100  # type: ignore[operator]
    assert target in {CEILING_BPS, sdp, g.remb_bps, g.tmmbr_bps, g.h245_bps}


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 100_000), st.sampled_from([HEADERS_IPV4, HEADERS_IPV6]))
def test_payload_share_of_as_never_exceeds_as(kbps: int, headers: int) -> None:
    share = payload_share(kbps * 1000, headers)
    assert share <= kbps * 1000
    # the headers of the packets needed to carry it fit in the difference
    packets = -(-share // (FULL_PAYLOAD * 8))
    assert share + packets * headers * 8 <= kbps * 1000 + headers * 8
