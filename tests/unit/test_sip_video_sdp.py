"""choose_video (RFC 3264 6.1, RFC 6184 8.2.2, RFC 7741, RFC 4585 4.2, RFC 4796) behind its flag."""

from __future__ import annotations

import pytest

from sip import offer_answer
from sip.offer_answer import build_answer, choose_audio, choose_video
from sip.sdp import SessionDescription

BASE = ("v=0\r\no=x 1 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def _offer(video: str) -> SessionDescription:
    return SessionDescription.parse(BASE + video)


H264_BOTH = ("m=video 4002 RTP/AVPF 97 96\r\na=rtpmap:97 H264/90000\r\n"
             "a=fmtp:97 profile-level-id=42e01f;packetization-mode=0\r\n"
             "a=rtpmap:96 H264/90000\r\na=fmtp:96 profile-level-id=42e01f;packetization-mode=1;"
             "max-mbps=999999\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n"
             "a=rtcp-fb:* ccm fir\r\na=rtcp-fb:96 trr-int 100\r\n")


def test_policy_video_off_refuses_video_with_port_zero() -> None:
    offer = _offer(H264_BOTH)
    assert choose_video(offer, enabled=False) is None
    answer = build_answer(offer, choose_audio(offer), "192.0.2.1", 20000)
    assert answer.media[1].port == 0 and answer.media[1].proto == "RTP/AVPF"


def test_module_switch_off_wins_over_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offer_answer, "VIDEO_ENABLED", False)
    assert choose_video(_offer(H264_BOTH), enabled=True) is None


def test_passthrough_takes_h264_only_by_default() -> None:
    """The bridge passes video through untranscoded: a VP8-only offer gets no video by default."""
    vp8 = "m=video 4002 RTP/AVP 100\r\na=rtpmap:100 VP8/90000\r\n"
    assert choose_video(_offer(vp8)) is None
    assert choose_video(_offer(vp8), preferred=("H264", "VP8")) is not None
    assert choose_video(_offer(H264_BOTH)) is not None


def test_h264_prefers_packetization_mode_1_and_caps_limits() -> None:
    v = choose_video(_offer(H264_BOTH), enabled=True)
    assert v is not None
    assert (v.payload_type, v.encoding, v.clock_rate) == (96, "H264", 90000)
    assert v.fmtp == (f"profile-level-id=42e01f;packetization-mode=1;"
                      f"max-mbps={offer_answer.MAX_MBPS}")
    assert v.feedback == ("nack", "nack pli", "ccm fir")  # trr-int is not ours to answer
    offer = _offer(H264_BOTH)
    answer = build_answer(offer, choose_audio(offer), "192.0.2.1", 20000, video=v,
                          video_port=20002)
    lines = answer.media[1].lines()
    assert lines[0] == "m=video 20002 RTP/AVPF 96"
    assert "a=rtcp-fb:96 nack pli" in lines


def test_h264_mode_2_only_is_not_taken_but_vp8_is() -> None:
    v = choose_video(_offer("m=video 4002 RTP/AVP 96 100\r\na=rtpmap:96 H264/90000\r\n"
                            "a=fmtp:96 packetization-mode=2\r\na=rtpmap:100 VP8/90000\r\n"
                            "a=rtcp-fb:100 nack\r\n"), preferred=("H264", "VP8"))
    assert v is not None and v.encoding == "VP8" and v.fmtp is None
    assert v.feedback == ()  # RTP/AVP has no RTCP feedback (RFC 4585 4.2)


def test_slides_line_is_never_the_main_video() -> None:
    offer = _offer("m=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=content:slides\r\n"
                   "m=video 4004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=content:main\r\n")
    v = choose_video(offer, enabled=True)
    assert v is not None and v.media_index == 2


def test_bandwidth_from_tias_and_as() -> None:
    v = choose_video(_offer("m=video 4002 RTP/AVP 100\r\nb=TIAS:512000\r\nb=AS:600\r\n"
                            "a=rtpmap:100 VP8/90000\r\n"), preferred=("VP8",))
    assert v is not None and v.bandwidth_kbps == 512


@pytest.mark.parametrize("video", [
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
    "m=video 4002 RTP/AVP 31\r\n",
    "m=video 4002 RTP/SAVP 96\r\na=rtpmap:96 H264/90000\r\n",  # SAVP without a=crypto
    "m=video 4002 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 H264/90000\r\na=fingerprint:sha-256 AA\r\n",
])
def test_unusable_video_gives_none(video: str) -> None:
    assert choose_video(_offer(video), enabled=True) is None
