"""SDP parse/serialise and RFC 3264 offer/answer for audio."""

from __future__ import annotations

from pathlib import Path

import pytest

from sip.message import parse_message
from sip.offer_answer import (
    AudioChoice,
    OfferRejected,
    build_answer,
    choose_audio,
    media_security,
)
from sip.sdp import SdpParseError, SessionDescription

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus"


def sdp(*media_lines: str, session: str = "c=IN IP4 192.0.2.10\r\n") -> SessionDescription:
    text = "v=0\r\no=- 5 6 IN IP4 192.0.2.10\r\ns=-\r\n" + session + "t=0 0\r\n"
    return SessionDescription.parse(text + "".join(media_lines))


PCMU_PCMA_TE = (
    "m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\na=ptime:30\r\n"
)


def test_parse_fields_and_fallbacks() -> None:
    offer = sdp(PCMU_PCMA_TE, "m=video 40002 RTP/AVP 96\r\nc=IN IP4 192.0.2.11\r\n"
                "a=rtpmap:96 H264/90000\r\na=sendonly\r\n")
    audio, video = offer.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio", 40000, "RTP/AVP", ["0", "8", "101"])
    assert audio.connection_address == "192.0.2.10"  # session-level fallback
    assert video.connection_address == "192.0.2.11"
    assert audio.rtpmap[101].encoding == "telephone-event"
    assert audio.fmtp == {101: "0-16"}
    assert audio.ptime == 30
    assert audio.direction == "sendrecv" and video.direction == "sendonly"


def test_serialise_round_trip() -> None:
    text = (
        "v=0\r\no=alice 1 2 IN IP4 192.0.2.1\r\ns=call\r\ni=info\r\nc=IN IP4 192.0.2.1\r\n"
        "b=AS:2048\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=audio 5004 RTP/AVP 9 0\r\nb=TIAS:64000\r\n"
        "a=rtpmap:9 G722/8000\r\na=recvonly\r\nm=video 0 RTP/AVPF 97\r\n"
    )
    parsed = SessionDescription.parse(text)
    assert str(parsed) == text
    assert str(SessionDescription.parse(str(parsed))) == text
    assert SessionDescription.parse(text.replace("\r\n", "\n")).media[0].direction == "recvonly"


@pytest.mark.parametrize("bad", [
    "", "o=- 1 1 IN IP4 h\r\n", "v=0\r\ns=-\r\n", "v=0\r\no=- 1 1 IN IP4 h\r\nm=audio x RTP/AVP 0\r\n",
    "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4\r\n", "v=0\r\no=- 1 1 IN IP4 h\r\nbogus\r\n",
])
def test_bad_sdp_raises_typed_error(bad: str) -> None:
    with pytest.raises(SdpParseError):
        SessionDescription.parse(bad)


@pytest.mark.parametrize(("offer_line", "expected"), [
    ("m=audio 4000 RTP/AVP 0\r\n", ("PCMU", 0)),
    ("m=audio 4000 RTP/AVP 8\r\n", ("PCMA", 8)),
    ("m=audio 4000 RTP/AVP 9\r\n", ("G722", 9)),
    ("m=audio 4000 RTP/AVP 8 0\r\n", ("PCMA", 8)),  # offerer's order wins
    ("m=audio 4000 RTP/AVP 96 9 0\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:9 G722/8000\r\n",
     ("G722", 9)),
    ("m=audio 4000 RTP/AVP 100\r\na=rtpmap:100 pcmu/8000\r\n", ("PCMU", 100)),
])
def test_choose_audio_codecs(offer_line: str, expected: tuple[str, int]) -> None:
    choice = choose_audio(sdp(offer_line))
    assert (choice.encoding, choice.payload_type) == expected
    assert choice.clock_rate == 8000
    assert (choice.remote_address, choice.remote_port) == ("192.0.2.10", 4000)
    assert choice.telephone_event_pt is None and choice.ptime == 20


def test_choose_audio_with_telephone_event_and_ptime() -> None:
    choice = choose_audio(sdp(PCMU_PCMA_TE))
    assert choice == AudioChoice(0, "PCMU", 8000, "192.0.2.10", 40000, 101, 30)
    assert choose_audio(sdp(PCMU_PCMA_TE), preferred=("PCMA",)).payload_type == 8


def test_choose_audio_rejections() -> None:
    with pytest.raises(OfferRejected) as info:
        choose_audio(sdp("m=audio 4000 RTP/AVP 18 96\r\na=rtpmap:96 opus/48000/2\r\n"))
    assert info.value.status == 488
    with pytest.raises(OfferRejected):
        choose_audio(sdp("m=video 4000 RTP/AVP 96\r\n"))
    with pytest.raises(OfferRejected):
        choose_audio(sdp("m=audio 0 RTP/AVP 0\r\n"))
    with pytest.raises(OfferRejected):  # a G722 rtpmap at the wrong clock is not G722 here
        choose_audio(sdp("m=audio 4000 RTP/AVP 97\r\na=rtpmap:97 G722/16000\r\n"))
    with pytest.raises(OfferRejected, match="AES_256_CM_HMAC_SHA1_80 is known but not supported"):
        choose_audio(sdp("m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_256_CM_HMAC_SHA1_80 "
                         "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"))
    with pytest.raises(OfferRejected, match="RTP/SAVP without a=crypto"):
        choose_audio(sdp("m=audio 4000 RTP/SAVP 0\r\n"))


def test_media_security() -> None:
    assert media_security(sdp("m=audio 4000 RTP/AVP 0\r\n")) == "plain"
    assert media_security(sdp("m=audio 4000 RTP/SAVP 0\r\n")) == "sdes"
    assert media_security(sdp("m=audio 4000 RTP/AVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 "
                              "inline:abc\r\n")) == "sdes"
    assert media_security(sdp("m=audio 4000 UDP/TLS/RTP/SAVPF 111\r\n")) == "dtls"
    assert media_security(sdp("m=audio 4000 RTP/SAVPF 0\r\na=fingerprint:sha-256 AB:CD\r\n")) \
        == "dtls"
    assert media_security(sdp("m=audio 4000 RTP/AVP 0\r\n",
                              session="c=IN IP4 192.0.2.10\r\na=fingerprint:sha-256 AB\r\n")) \
        == "dtls"


def test_build_answer_audio_only_with_dtmf() -> None:
    offer = sdp(PCMU_PCMA_TE)
    answer = build_answer(offer, choose_audio(offer), "198.51.100.1", 30000,
                          session_id=42, session_version=43)
    text = str(answer)
    assert text == (
        "v=0\r\no=roomgate 42 43 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\n"
        "t=0 0\r\nm=audio 30000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:30\r\na=sendrecv\r\n"
    )
    assert SessionDescription.parse(text).media[0].port == 30000


def test_build_answer_video_and_audio_offer_keeps_order_and_refuses_video() -> None:
    offer = sdp(
        "m=video 40002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
        "m=audio 40000 RTP/AVP 9 0\r\na=sendonly\r\n",
        "m=application 5070 UDP/BFCP *\r\n",
    )
    choice = choose_audio(offer)
    assert choice.encoding == "G722"
    answer = build_answer(offer, choice, "198.51.100.1", 30000)
    assert [(m.media, m.port) for m in answer.media] == [
        ("video", 0), ("audio", 30000), ("application", 0)]
    assert answer.media[0].formats == ["96"] and answer.media[2].proto == "UDP/BFCP"
    assert answer.media[1].direction == "recvonly"  # mirror of sendonly (RFC 3264 6.1)
    assert answer.media[1].formats == ["9"]


def test_ipv6_answer_addrtype() -> None:
    offer = sdp("m=audio 4000 RTP/AVP 0\r\n", session="c=IN IP6 2001:db8::1\r\n")
    choice = choose_audio(offer)
    assert choice.remote_address == "2001:db8::1"
    text = str(build_answer(offer, choice, "2001:db8::2", 30000, session_id=1))
    assert "c=IN IP6 2001:db8::2" in text and "IN IP6 2001:db8::2\r\n" in text


def _roomsys_bodies() -> list[Path]:
    base = CORPUS / "sip" / "roomsys"
    if not base.is_dir():
        pytest.skip(f"../shared/corpus not present: {base}")
    return sorted(p for p in base.iterdir() if p.suffix in (".sip", ".sdp")
                  and "invite" in p.name or p.suffix == ".sdp")


#: Real offers with no audio codec we support (not a bug: 488 is the right answer).
NO_COMMON_CODEC = {"pexip_pexep_invite_sdes_bfcp.sip": "offers MP4A-LATM audio only"}


def test_real_room_system_offers() -> None:
    """Offers published from real room systems parse, and an answer can be built for each."""
    answered = 0
    for path in _roomsys_bodies():
        raw = path.read_bytes()
        if path.suffix == ".sip":
            msg = parse_message(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
            body = msg.body
        else:
            body = raw
        offer = SessionDescription.parse(body)
        assert offer.media, path.name
        if path.name in NO_COMMON_CODEC:
            with pytest.raises(OfferRejected, match="no common audio codec"):
                choose_audio(offer)
            continue
        choice = choose_audio(offer)
        answer = build_answer(offer, choice, "198.51.100.1", 30000)
        assert len(answer.media) == len(offer.media), path.name
        assert sum(1 for m in answer.media if m.port) == 1, path.name
        answered += 1
    assert answered >= 8
