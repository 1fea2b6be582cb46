"""A re-INVITE without SDP (RFC 3261 14.2, RFC 3264 8; CUCM on transfer and resume): our 2xx
offers the current SDP, the ACK carries the answer, which re-targets the running legacy leg;
an ACK without a usable answer ends the call with BYE and a Reason.

Sans-IO: the SDP side (:func:`sip.delayed_offer.reoffer_current`), the endpoint on the fake
clock, and the gateway's controller on fake sockets (:class:`tests.unit.test_gateway_reoffer._Setup`).
"""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as hs

from sip.calls import CallState, EndReason, InboundCall
from sip.delayed_offer import choose_answer, reoffer_current
from sip.message import SipRequest, SipResponse
from sip.sdes import parse_crypto
from sip.sdp import SessionDescription
from sip.testing import OFFER_SDP, Harness, in_dialog, invite, parsed
from tests.unit.test_gateway_reoffer import _key, _offer, _Setup

CURRENT = ("v=0\r\no=roomgate 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
           "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n")


def _answer(*, ip: str = "192.0.2.10", port: int = 41000, pts: str = "0 101",
            direction: str = "sendrecv", crypto: str | None = None, video: bool = False) -> str:
    proto = "RTP/SAVP" if crypto else "RTP/AVP"
    sdp = (f"v=0\r\no=- 1 9 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
           f"m=audio {port} {proto} {pts}\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
           f"a=rtpmap:101 telephone-event/8000\r\na={direction}\r\n")
    if crypto:
        sdp += f"a=crypto:{crypto}\r\n"
    if video:
        sdp += "m=video 0 RTP/AVP 96\r\n"
    return sdp


def _bodiless_reinvite(h: Harness, inv: SipRequest, tag: str, cseq: int) -> tuple[SipRequest, SipResponse]:
    re = invite(to_tag=tag, cseq=cseq, branch=f"z9hG4bK-re{cseq}", sdp=None,
                call_id=inv.call_id)
    (resp,) = [m for m in parsed(h.send(re)) if isinstance(m, SipResponse)]
    return re, resp


def _ack(re: SipRequest, tag: str, body: str | None, ctype: str = "application/sdp") -> SipRequest:
    ack = in_dialog("ACK", re, tag, re.cseq[0], f"z9hG4bK-ack{re.cseq[0]}")
    if body is not None:
        ack.headers.add("Content-Type", ctype)
        ack.body = body.encode()
    return ack


# -- our offer: the current SDP -----------------------------------------------------------------

def test_unchanged_sdp_is_offered_with_the_same_version() -> None:
    offer = reoffer_current(SessionDescription.parse(CURRENT))
    assert str(offer) == str(SessionDescription.parse(CURRENT))  # RFC 3264 8: same version
    assert offer.codecs == ("PCMU",) and offer.srtp == "off" and offer.audio_index == 0


def test_held_answer_is_offered_as_sendrecv_with_the_version_incremented() -> None:
    offer = reoffer_current(SessionDescription.parse(CURRENT.replace("sendrecv", "recvonly")))
    assert offer.sdp.media[0].direction == "sendrecv"
    assert offer.sdp.origin.session_version == "8" and offer.sdp.origin.session_id == "7"
    assert str(offer).count("a=sendrecv") == 1 and "recvonly" not in str(offer)


def test_srtp_keys_are_offered_again_and_required_in_the_answer() -> None:
    key = _key()
    current = CURRENT.replace("RTP/AVP", "RTP/SAVP") + f"a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"
    offer = reoffer_current(SessionDescription.parse(current))
    assert offer.srtp == "required"
    (ours,) = offer.cryptos
    assert ours.tag == 3 and ours.key == base64.b64decode(key)
    theirs = _key()
    choice = choose_answer(offer, SessionDescription.parse(
        _answer(crypto=f"3 AES_CM_128_HMAC_SHA1_80 inline:{theirs}")))
    assert choice.crypto is not None and choice.crypto.local.key == ours.key
    assert choice.crypto.remote.key == parse_crypto(f"3 AES_CM_128_HMAC_SHA1_80 inline:{theirs}").key


def test_refused_lines_are_kept_and_the_audio_line_is_found() -> None:
    current = ("v=0\r\no=roomgate 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               "m=audio 0 RTP/AVP 0\r\n" + CURRENT.split("t=0 0\r\n")[1] + "m=video 0 RTP/AVP 96\r\n")
    offer = reoffer_current(SessionDescription.parse(current))
    assert offer.audio_index == 1 and len(offer.sdp.media) == 3
    answer = _answer().replace("m=audio 41000", "m=audio 0 RTP/AVP 0\r\nm=audio 41000") + \
        "m=video 0 RTP/AVP 96\r\n"
    choice = choose_answer(offer, SessionDescription.parse(answer))
    assert choice.media_index == 1 and choice.remote_port == 41000


# -- the SIP core ----------------------------------------------------------------------------

def _confirmed(h: Harness) -> tuple[InboundCall, SipRequest, str]:
    inv = invite(sdp=OFFER_SDP)
    h.send(inv)
    call = h.handler.offered[-1]
    (ok,) = parsed(h.act(lambda: call.accept(CURRENT)))
    assert isinstance(ok, SipResponse)
    tag = ok.to_addr.tag or ""
    h.send(in_dialog("ACK", inv, tag, 1, "z9hG4bK-a1"))
    assert call.state is CallState.CONFIRMED
    return call, inv, tag


def test_core_offers_in_the_2xx_and_hands_the_ack_answer_over() -> None:
    h = Harness()
    call, inv, tag = _confirmed(h)
    seen: list[SessionDescription] = []
    call.on_offer_request = lambda _c: CURRENT.replace("7 7", "7 8")
    call.on_answer = lambda _c, sdp: seen.append(sdp)  # type: ignore[func-returns-value]
    re, ok = _bodiless_reinvite(h, inv, tag, 2)
    assert ok.status == 200 and ok.headers.get("Content-Type") == "application/sdp"
    assert SessionDescription.parse(ok.body).origin.session_version == "8"
    assert call.answer_sdp == ok.body.decode()
    assert h.send(_ack(re, tag, _answer())) == []
    assert len(seen) == 1 and seen[0].media[0].port == 41000 and call.offer is seen[0]
    assert h.advance(40) == [] and not call.ended


def test_core_without_the_hook_offers_the_current_sdp_unchanged() -> None:
    h = Harness()
    call, inv, tag = _confirmed(h)
    re, ok = _bodiless_reinvite(h, inv, tag, 2)
    assert ok.body.decode() == CURRENT
    assert h.send(_ack(re, tag, _answer())) == [] and not call.ended


def test_ack_without_sdp_ends_the_call_with_bye_and_reason() -> None:
    h = Harness()
    call, inv, tag = _confirmed(h)
    re, _ok = _bodiless_reinvite(h, inv, tag, 2)
    (bye,) = parsed(h.send(_ack(re, tag, None)))
    assert isinstance(bye, SipRequest) and bye.method == "BYE"
    reason = bye.headers.get("Reason") or ""
    assert reason.startswith("SIP;cause=488;text=") and "no SDP answer" in reason
    assert h.handler.ended == [(call, EndReason.ANSWER_REFUSED)]


def test_reinvite_with_sdp_still_needs_no_answer_in_the_ack() -> None:
    h = Harness()
    call, _inv, tag = _confirmed(h)
    call.on_answer = lambda _c, _sdp: "must not be asked"
    re = invite(to_tag=tag, cseq=2, branch="z9hG4bK-re2", sdp=OFFER_SDP)
    h.send(re)
    assert h.send(_ack(re, tag, None)) == [] and not call.ended


@settings(max_examples=60, deadline=None)
@given(body=hs.one_of(hs.none(), hs.binary(max_size=300),
                      hs.sampled_from([_answer(), _answer(pts="96"), _answer(port=0), "v=0\r\n"])))
def test_any_ack_body_is_taken_or_ends_the_call_cleanly(body: bytes | str | None) -> None:
    h = Harness()
    call, inv, tag = _confirmed(h)
    call.on_answer = lambda _c, sdp: None if sdp.media and sdp.media[0].port else "unusable"
    re, _ok = _bodiless_reinvite(h, inv, tag, 2)
    ack = _ack(re, tag, None)
    if body is not None:
        ack.headers.add("Content-Type", "application/sdp")
        ack.body = body.encode() if isinstance(body, str) else body
    out = parsed(h.send(ack))
    if call.ended:
        assert [m.method for m in out if isinstance(m, SipRequest)] == ["BYE"]
        assert h.handler.ended == [(call, EndReason.ANSWER_REFUSED)]
    else:
        assert out == [] and call.state is CallState.CONFIRMED


# -- the gateway: the ACK's answer re-targets the running leg -------------------------------

def _gateway(first: str | None = None) -> _Setup:
    s = _Setup(first or _offer(1))
    s.ctl._allow_reoffers(s.entry)
    return s


def test_resume_after_hold_by_bodiless_reinvite_moves_and_resumes_the_leg() -> None:
    s = _gateway()
    assert s.reinvite(_offer(2, direction="sendonly")).status == 200 and s.leg.sending is False
    held = SessionDescription.parse(s.call.answer_sdp or "")
    s.leg.inbound.latched = ("192.0.2.10", 40000)
    re, ok = _bodiless_reinvite(s.h, s.inv, s.tag, 3)
    offer = SessionDescription.parse(ok.body)
    assert ok.status == 200 and offer.media[0].direction == "sendrecv"
    assert int(offer.origin.session_version) == int(held.origin.session_version) + 1
    assert offer.media[0].port == s.leg.local_port
    assert s.h.send(_ack(re, s.tag, _answer(ip="192.0.2.77", port=42000))) == []
    assert s.leg.sending is True and s.leg.remote == ("192.0.2.77", 42000)
    assert s.leg.inbound.latched is None and not s.call.ended
    # The next offer with SDP is answered against what the ACK said (version 9 -> a change).
    s.cseq = 3
    assert s.reinvite(_offer(10, direction="sendonly")).status == 200 and s.leg.sending is False
    s.leg.close()


def test_answer_naming_a_codec_we_did_not_offer_ends_the_call() -> None:
    s = _gateway()
    re, _ok = _bodiless_reinvite(s.h, s.inv, s.tag, 2)
    (bye,) = parsed(s.h.send(_ack(re, s.tag, _answer(pts="8 101"))))  # PCMA: we offered PCMU
    assert isinstance(bye, SipRequest) and "names no codec we offered" in (bye.headers.get("Reason") or "")
    assert s.call.ended and s.leg.codec.name == "PCMU"
    s.leg.close()


def test_srtp_call_keeps_contexts_for_the_same_key_and_rekeys_for_a_new_one() -> None:
    k1 = _key()
    s = _gateway(_offer(1, crypto=k1))
    first = s.leg.srtp
    assert first is not None
    re, ok = _bodiless_reinvite(s.h, s.inv, s.tag, 2)
    (ours,) = SessionDescription.parse(ok.body).media[0].attribute_values("crypto")
    assert parse_crypto(ours).key == first.local_key  # our key offered again
    tag = ours.split()[0]
    assert s.h.send(_ack(re, s.tag, _answer(crypto=f"{tag} AES_CM_128_HMAC_SHA1_80 inline:{k1}"))) == []
    assert s.leg.srtp is first
    re, _ok = _bodiless_reinvite(s.h, s.inv, s.tag, 3)
    assert s.h.send(_ack(re, s.tag, _answer(crypto=f"{tag} AES_CM_128_HMAC_SHA1_80 inline:{_key()}"))) == []
    assert s.leg.srtp is not first and s.leg.srtp is not None
    assert s.leg.inbound.srtp is s.leg.srtp and s.leg.outbound.srtp is s.leg.srtp
    re, _ok = _bodiless_reinvite(s.h, s.inv, s.tag, 4)
    (bye,) = parsed(s.h.send(_ack(re, s.tag, _answer())))  # plain RTP answer: SRTP never dropped
    assert isinstance(bye, SipRequest) and "requires SRTP" in (bye.headers.get("Reason") or "")
    s.leg.close()
