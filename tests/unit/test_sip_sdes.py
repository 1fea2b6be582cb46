"""SDES (RFC 4568): ``a=crypto`` parsing and refusals, and offer/answer of SRTP audio in every shape."""

from __future__ import annotations

import base64

import pytest

from sip.offer_answer import (
    AudioChoice,
    OfferRejected,
    build_answer,
    choose_audio,
    media_security,
)
from sip.sdes import CryptoAttribute, CryptoError, choose_crypto, parse_crypto
from sip.sdp import SessionDescription

KEY30 = base64.b64encode(bytes(range(30))).decode()  # AES_CM_128: 16-byte key + 14-byte salt
KEY28 = base64.b64encode(bytes(range(28))).decode()  # AEAD_AES_128_GCM: 16 + 12
KEY44 = base64.b64encode(bytes(range(44))).decode()  # AEAD_AES_256_GCM: 32 + 12
RFC_EXAMPLE_KEY = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"  # RFC 4568 section 4 (30 bytes)


def sdp(*media_lines: str) -> SessionDescription:
    text = "v=0\r\no=- 5 6 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    return SessionDescription.parse(text + "".join(media_lines))


# -- a=crypto parsing ---------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "suite", "key_len", "lifetime"), [
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}", "AES_CM_128_HMAC_SHA1_80", 30, None),
    (f"2 AES_CM_128_HMAC_SHA1_32 inline:{KEY30}|2^31", "AES_CM_128_HMAC_SHA1_32", 30, 2 ** 31),
    (f"3 AEAD_AES_128_GCM inline:{KEY28}|1048576", "AEAD_AES_128_GCM", 28, 2 ** 20),
    (f"4 AEAD_AES_256_GCM inline:{KEY44}|2^48 WSH=128", "AEAD_AES_256_GCM", 44, 2 ** 48),
    (f"9 AES_CM_128_HMAC_SHA1_80 inline:{RFC_EXAMPLE_KEY}|2^20", "AES_CM_128_HMAC_SHA1_80", 30, 2 ** 20),
])
def test_parse_supported(value: str, suite: str, key_len: int, lifetime: int | None) -> None:
    c = parse_crypto(value)
    assert c.tag == int(value.split()[0]) and c.suite == suite
    assert len(c.key) == key_len and c.lifetime == lifetime and c.mki is None
    assert parse_crypto(c.to_sdp()) == c  # serialise round trip
    assert "inline" not in repr(c) and str(bytes(range(30))) not in repr(c)  # keys never printed


@pytest.mark.parametrize(("value", "reason", "shape_ok"), [
    # well formed, but not something this gateway does: the reason says what
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_EXAMPLE_KEY}|2^20|1:4", "MKI 1:4 is not supported", True),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|7:1", "MKI 7:1 is not supported", True),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^10", "shorter than 2^20", True),
    (f"1 AES_256_CM_HMAC_SHA1_80 inline:{KEY30}", "AES_256_CM_HMAC_SHA1_80 is known but not supported", True),
    (f"1 F8_128_HMAC_SHA1_80 inline:{KEY30}", "known but not supported", True),
    (f"1 ROT13 inline:{KEY30}", "ROT13 is unknown", True),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30};inline:{KEY30}", "several master keys", True),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} UNENCRYPTED_SRTP", "UNENCRYPTED_SRTP", True),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} KDR=1", "KDR=1", True),
    # malformed
    ("1 AES_CM_128_HMAC_SHA1_80", "needs a tag, a suite and key parameters", False),
    (f"x AES_CM_128_HMAC_SHA1_80 inline:{KEY30}", "tag", False),
    (f"1 AES_CM_128_HMAC_SHA1_80 uri:{KEY30}", "only inline", False),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:!!notbase64!!", "not base64", False),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY28}", "needs a 30-byte key||salt", False),
    (f"1 AEAD_AES_256_GCM inline:{KEY30}", "needs a 44-byte key||salt", False),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^49", "exceeds the SRTP maximum", False),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^x", "bad key lifetime", False),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|1:0", "bad MKI", False),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|1:4|2^20", "before the MKI", False),
])
def test_parse_refusals_are_typed_and_explained(value: str, reason: str, shape_ok: bool) -> None:
    with pytest.raises(CryptoError) as info:
        parse_crypto(value)
    assert reason in info.value.reason
    assert info.value.supported_shape is shape_ok


def test_choose_crypto_prefers_80_then_32_then_gcm_and_makes_a_fresh_key() -> None:
    values = [f"1 AEAD_AES_256_GCM inline:{KEY44}", f"2 AES_CM_128_HMAC_SHA1_32 inline:{KEY30}",
              f"3 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}", f"4 AES_256_CM_HMAC_SHA1_80 inline:{KEY30}"]
    choice, refused = choose_crypto(values)
    assert choice is not None and choice.remote.tag == 3 and choice.suite == "AES_CM_128_HMAC_SHA1_80"
    assert choice.local.tag == 3 and choice.local.suite == choice.remote.suite
    assert len(choice.local.key) == 30 and choice.local.key != choice.remote.key
    assert choose_crypto(values)[0].local.key != choice.local.key  # type: ignore[union-attr]
    assert refused == [("a=crypto 4: crypto suite AES_256_CM_HMAC_SHA1_80 is known but not supported "
                        "(supported: AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32, "
                        "AEAD_AES_128_GCM, AEAD_AES_256_GCM)")]
    assert choose_crypto(values[:2])[0].suite == "AES_CM_128_HMAC_SHA1_32"  # type: ignore[union-attr]
    assert choose_crypto([f"5 AEAD_AES_256_GCM inline:{KEY44}", f"6 AEAD_AES_128_GCM inline:{KEY28}"])[0] \
        .remote.tag == 6  # type: ignore[union-attr]
    assert choose_crypto([values[3]])[0] is None


# -- offer/answer ------------------------------------------------------------------------------

SAVP = f"m=audio 40000 RTP/SAVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n" \
       f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}\r\na=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY30}\r\n"
AVP = "m=audio 40002 RTP/AVP 0 8\r\n"
AVP_CRYPTO = f"m=audio 40004 RTP/AVP 8\r\na=crypto:7 AES_CM_128_HMAC_SHA1_32 inline:{KEY30}\r\n"


def test_savp_answered_with_offer_tag_suite_and_our_key() -> None:
    offer = sdp(SAVP)
    choice = choose_audio(offer)
    assert choice.secure and choice.srtp_suite == "AES_CM_128_HMAC_SHA1_80"
    assert choice.srtp_remote_key == bytes(range(30)) and choice.srtp_local_key != choice.srtp_remote_key
    answer = build_answer(offer, choice, "198.51.100.1", 30000, session_id=1)
    (m,) = answer.media
    assert m.proto == "RTP/SAVP" and m.port == 30000 and m.formats == ["0", "101"]
    (crypto,) = m.attribute_values("crypto")
    ours = parse_crypto(crypto)
    assert (ours.tag, ours.suite, ours.key) == (1, "AES_CM_128_HMAC_SHA1_80", choice.srtp_local_key)


def test_savpf_accepted() -> None:
    offer = sdp(SAVP.replace("RTP/SAVP", "RTP/SAVPF"))
    answer = build_answer(offer, choose_audio(offer), "198.51.100.1", 30000)
    assert answer.media[0].proto == "RTP/SAVPF" and answer.media[0].attribute("crypto")


def test_best_effort_crypto_in_avp_is_answered_with_srtp_in_avp() -> None:
    offer = sdp(AVP_CRYPTO)
    assert media_security(offer) == "sdes"
    choice = choose_audio(offer)
    assert choice.srtp_suite == "AES_CM_128_HMAC_SHA1_32" and choice.encoding == "PCMA"
    m = build_answer(offer, choice, "198.51.100.1", 30000).media[0]
    assert m.proto == "RTP/AVP" and parse_crypto(m.attribute("crypto") or "").tag == 7


def test_best_effort_with_unusable_crypto_falls_back_to_plain_unless_required() -> None:
    offer = sdp(f"m=audio 40004 RTP/AVP 0\r\na=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{KEY30}\r\n")
    choice = choose_audio(offer)
    assert not choice.secure
    assert build_answer(offer, choice, "198.51.100.1", 30000).media[0].attribute("crypto") is None
    with pytest.raises(OfferRejected) as info:
        choose_audio(offer, require_srtp=True)
    assert "no usable SRTP" in info.value.reason and "AES_256_CM_HMAC_SHA1_80" in info.value.reason


@pytest.mark.parametrize("order", ["savp-first", "avp-first"])
def test_two_m_lines_for_the_same_audio_take_srtp_and_refuse_the_other(order: str) -> None:
    lines = [SAVP, AVP] if order == "savp-first" else [AVP, SAVP]
    offer = sdp(*lines)
    assert media_security(offer) == "sdes"
    choice = choose_audio(offer)
    assert choice.secure and choice.remote_port == 40000
    answer = build_answer(offer, choice, "198.51.100.1", 30000)
    ports = [(m.proto, m.port) for m in answer.media]
    expected = [("RTP/SAVP", 30000), ("RTP/AVP", 0)]
    assert ports == (expected if order == "savp-first" else expected[::-1])
    refused = next(m for m in answer.media if m.port == 0)
    assert refused.attribute("crypto") is None


def test_two_m_lines_with_bad_crypto_use_the_plain_line() -> None:
    offer = sdp(SAVP.replace(KEY30, KEY28), AVP)  # wrong key length on both crypto lines
    choice = choose_audio(offer)
    assert not choice.secure and choice.remote_port == 40002
    assert [m.port for m in build_answer(offer, choice, "198.51.100.1", 30000).media] == [0, 30000]


def test_require_srtp_refuses_plain_and_savp_without_crypto() -> None:
    with pytest.raises(OfferRejected, match="no usable SRTP"):
        choose_audio(sdp(AVP), require_srtp=True)
    with pytest.raises(OfferRejected, match="RTP/SAVP without a=crypto"):
        choose_audio(sdp("m=audio 4000 RTP/SAVP 0\r\n"))
    with pytest.raises(OfferRejected, match="DTLS-SRTP"):
        choose_audio(sdp("m=audio 4000 UDP/TLS/RTP/SAVPF 0\r\na=fingerprint:sha-256 AB\r\n"))
    assert choose_audio(sdp(SAVP), require_srtp=True).secure


def test_audio_choice_stays_backward_compatible() -> None:
    hand_made = AudioChoice(0, "PCMU", 8000, "192.0.2.10", 40002, None, 20)
    assert not hand_made.secure and hand_made.srtp_suite is None and hand_made.srtp_local_key is None
    offer = sdp(SAVP, AVP)
    answer = build_answer(offer, hand_made, "198.51.100.1", 30000)  # no media_index: plain line found
    assert [m.port for m in answer.media] == [0, 30000]
    assert choose_audio(sdp(AVP)) == AudioChoice(0, "PCMU", 8000, "192.0.2.10", 40002, None, 20)


def test_crypto_attribute_to_sdp_keeps_lifetime() -> None:
    c = CryptoAttribute(tag=5, suite="AES_CM_128_HMAC_SHA1_80", key=bytes(30), lifetime=2 ** 31)
    assert c.to_sdp() == f"5 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(bytes(30)).decode()}|2^31"
