"""The keyframe-request translator: method choice from SDP/H.323 caps, coalescing on an injected
clock, the periodic refresh for peers without feedback, and the RTCP bytes of its actions."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from bridge.keyframe import (
    KeyframeAction,
    KeyframeTranslator,
    LegacyKeyframeCaps,
    Method,
    Side,
    caps_from_feedback,
    caps_from_sdp,
    h323_caps,
)
from bridge.rtcp import RawRtcp, parse_compound
from bridge.rtcp_feedback import Fir, FirSequencer, Pli, parse_feedback
from sip.sdp import SessionDescription


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _video(proto: str, *fb: str) -> SessionDescription:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0",
             f"m=video 5000 {proto} 96 97", "a=rtpmap:96 H264/90000", "a=rtpmap:97 VP8/90000"]
    lines += [f"a=rtcp-fb:{f}" for f in fb]
    return SessionDescription.parse("\r\n".join(lines) + "\r\n")


def test_method_preference_pli_then_fir_then_h245_then_info() -> None:
    assert LegacyKeyframeCaps(pli=True, fir=True, sip_info=True).method is Method.RTCP_PLI
    assert LegacyKeyframeCaps(fir=True, sip_info=True).method is Method.RTCP_FIR
    assert h323_caps().method is Method.H245
    assert LegacyKeyframeCaps(sip_info=True).method is Method.SIP_INFO
    assert LegacyKeyframeCaps().method is None


def test_caps_from_sdp_reads_rtcp_fb_for_the_payload_type_or_wildcard() -> None:
    sdp = _video("RTP/AVPF", "96 nack", "97 nack pli", "* ccm fir")
    caps = caps_from_sdp(sdp.media[0], 96)
    assert caps == LegacyKeyframeCaps(pli=False, fir=True, sip_info=True)  # bare nack is not PLI
    assert caps_from_sdp(sdp.media[0], 97).method is Method.RTCP_PLI
    assert caps_from_sdp(sdp.media[0]).pli  # any payload type
    assert caps_from_sdp(_video("RTP/AVPF", "*   nack   pli").media[0], 96).pli  # spacing
    # RFC 4585 4.2: no feedback outside AVPF (what sip.offer_answer answers, too)
    assert caps_from_sdp(_video("RTP/AVP", "* nack pli").media[0], 96).method is Method.SIP_INFO
    assert caps_from_feedback(("nack", "nack pli", "goog-remb")).method is Method.RTCP_PLI


def test_core_request_goes_to_the_legacy_peer_by_its_best_method() -> None:
    clock = Clock()
    for caps, method in [(LegacyKeyframeCaps(pli=True, sip_info=True), Method.RTCP_PLI),
                         (LegacyKeyframeCaps(fir=True, sip_info=True), Method.RTCP_FIR),
                         (LegacyKeyframeCaps(sip_info=True), Method.SIP_INFO),
                         (h323_caps(), Method.H245)]:
        t = KeyframeTranslator(caps, clock)
        assert t.from_core("vas_switch") == [KeyframeAction(Side.LEGACY, method, "vas_switch")]


def test_legacy_request_forces_a_keyframe_on_the_core_side() -> None:
    t = KeyframeTranslator(LegacyKeyframeCaps(pli=True), Clock())
    assert t.from_legacy("sip_info") == [KeyframeAction(Side.CORE, Method.FORCE_KEYFRAME, "sip_info")]


def test_requests_inside_the_window_are_coalesced_per_direction_and_logged() -> None:
    clock = Clock()
    t = KeyframeTranslator(LegacyKeyframeCaps(pli=True), clock, call="c1")
    with capture_logs() as logs:
        assert len(t.from_core("picture_lost")) == 1
        clock.now += 0.1
        assert t.from_core("picture_lost") == []
        assert len(t.from_legacy("rtcp_pli")) == 1  # the other direction has its own window
        clock.now += 0.149
        assert t.from_core("core_pli") == []
        clock.now += 0.002
        assert len(t.from_core("core_pli")) == 1
    assert t.suppressed == {"legacy": 2} and t.sent == {"legacy/rtcp_pli": 2, "core/force_keyframe": 1}
    requested = [e for e in logs if e["event"] == "video.keyframe.requested"]
    assert [(e["toward"], e["method"], e["reason"]) for e in requested] == [
        ("legacy", "rtcp_pli", "picture_lost"), ("core", "force_keyframe", "rtcp_pli"),
        ("legacy", "rtcp_pli", "core_pli")]
    assert requested[-1]["suppressed"] == 2 and requested[0]["call"] == "c1"


def test_periodic_refresh_only_for_a_peer_that_cannot_ask() -> None:
    clock = Clock()
    quiet = KeyframeTranslator(LegacyKeyframeCaps(sip_info=True), clock, fallback_interval=10.0)
    assert quiet.fallback_active and quiet.next_deadline() == 1010.0
    clock.now += 9.9
    assert quiet.tick() == []
    clock.now += 0.1
    assert quiet.tick() == [KeyframeAction(Side.CORE, Method.FORCE_KEYFRAME, "periodic_fallback")]
    assert quiet.tick() == [] and quiet.next_deadline() == 1020.0
    clock.now += 5
    quiet.from_legacy("sip_info")  # a forced keyframe restarts the period
    assert quiet.next_deadline() == 1025.0
    for caps in (LegacyKeyframeCaps(pli=True), LegacyKeyframeCaps(fir=True), h323_caps()):
        t = KeyframeTranslator(caps, clock)
        clock.now += 100
        assert not t.fallback_active and t.tick() == [] and t.next_deadline() is None
    assert not KeyframeTranslator(LegacyKeyframeCaps(), clock, fallback_interval=None).fallback_active


def test_a_peer_with_no_method_is_counted_not_asked() -> None:
    t = KeyframeTranslator(LegacyKeyframeCaps(), Clock())
    assert t.from_core("picture_lost") == [] and t.unanswerable == 1


def test_actions_build_pli_and_fir_with_incrementing_sequence_numbers() -> None:
    fir = FirSequencer(0xA)
    pli_bytes = KeyframeAction(Side.LEGACY, Method.RTCP_PLI, "x").rtcp(0xA, 0xB, fir)
    assert pli_bytes is not None
    raw = parse_compound(pli_bytes)[0]
    assert isinstance(raw, RawRtcp) and parse_feedback(raw) == Pli(0xA, 0xB)
    firs = []
    for _ in range(2):
        data = KeyframeAction(Side.LEGACY, Method.RTCP_FIR, "x").rtcp(0xA, 0xB, fir)
        assert data is not None
        raw = parse_compound(data)[0]
        assert isinstance(raw, RawRtcp)
        firs.append(parse_feedback(raw))
    assert firs == [Fir(0xA, ((0xB, 0),)), Fir(0xA, ((0xB, 1),))]
    assert KeyframeAction(Side.CORE, Method.FORCE_KEYFRAME, "x").rtcp(0xA, 0xB, fir) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 2, allow_nan=False), st.sampled_from(["core", "legacy", "tick"])),
                max_size=60),
       st.booleans())
def test_sent_requests_per_direction_are_never_closer_than_the_window(
        steps: list[tuple[float, str]], can_ask: bool) -> None:
    clock = Clock()
    t = KeyframeTranslator(LegacyKeyframeCaps(pli=can_ask, sip_info=True), clock, fallback_interval=3.0)
    times: dict[Side, list[float]] = {Side.LEGACY: [], Side.CORE: []}
    calls, fallbacks, returned = 0, 0, 0
    for dt, what in steps:
        clock.now += dt
        if what == "tick":
            actions = t.tick()
        else:
            calls += 1
            actions = t.from_core() if what == "core" else t.from_legacy()
        for a in actions:
            times[a.toward].append(clock.now)
            fallbacks += a.reason == "periodic_fallback"
        returned += len(actions)
    for side_times in times.values():
        assert all(b - a >= t.min_interval for a, b in pairwise(side_times))
    assert sum(t.sent.values()) == returned
    assert returned - fallbacks + sum(t.suppressed.values()) == calls  # every request sent or counted
    if can_ask:
        assert fallbacks == 0  # no periodic refresh toward a peer that can ask
