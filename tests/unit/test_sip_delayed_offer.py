"""Delayed offer (RFC 3261 13.2.1): our offer in the 200 OK, the caller's answer in the ACK.

Sans-IO: the SDP side (:mod:`sip.delayed_offer`), the endpoint's ACK handling on the fake
clock, and the gateway's negotiation (:mod:`gateway.delayed_offer`) on fake sockets.
"""

from __future__ import annotations

import asyncio
import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from bridge.ports import PortAllocator
from gateway.calls import CallController
from gateway.delayed_offer import DelayedOfferNegotiation, delayed_offer_security
from gateway.policy import parse_policy
from sip.calls import CallState, EndReason, InboundCall
from sip.delayed_offer import build_offer, choose_answer, srtp_for_policy
from sip.message import SipRequest, SipResponse
from sip.offer_answer import OfferRejected
from sip.sdes import parse_crypto
from sip.sdp import SdpParseError, SessionDescription
from sip.testing import Harness, in_dialog, invite, parsed
from tests.unit.test_bridge_ports import FakeBinder
from tests.unit.test_policy_keys import BASE


def _answer(*, pts: str = "8 101", port: int = 41000, proto: str = "RTP/AVP",
            crypto: str | None = None, ip: str = "192.0.2.10", extra_m: str = "") -> str:
    sdp = (f"v=0\r\no=- 5 5 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
           f"m=audio {port} {proto} {pts}\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:9 G722/8000\r\n"
           "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n")
    if crypto:
        sdp += f"a=crypto:{crypto}\r\n"
    return sdp + extra_m


def _key(n: int = 30) -> str:
    return base64.b64encode(bytes(range(n))).decode()


# -- our offer ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("srtp", "proto", "cryptos"), [
    ("off", "RTP/AVP", 0), ("best-effort", "RTP/AVP", 4), ("required", "RTP/SAVP", 4)])
def test_offer_lists_codecs_telephone_event_and_crypto_by_policy(srtp: str, proto: str,
                                                                 cryptos: int) -> None:
    offer = build_offer("198.51.100.1", 30000, codecs=("PCMA", "PCMU", "G722"), srtp=srtp)  # type: ignore[arg-type]
    sdp = SessionDescription.parse(str(offer))
    (m,) = sdp.media
    assert (m.media, m.port, m.proto) == ("audio", 30000, proto)
    assert m.formats == ["8", "0", "9", "101"]
    assert m.rtpmap[101].encoding == "telephone-event" and m.rtpmap[9].clock_rate == 8000
    values = m.attribute_values("crypto")
    assert len(values) == cryptos
    keys = {parse_crypto(v).key for v in values}
    assert len(keys) == cryptos  # one fresh key per line
    assert sdp.connection is not None and sdp.connection.addrtype == "IP4"


def test_offer_on_ipv6_media_address_is_c_in_ip6() -> None:
    text = str(build_offer("::1", 30000))
    assert "c=IN IP6 ::1\r\n" in text and " IN IP6 ::1\r\n" in text.split("s=")[0]


def test_offer_needs_a_codec_we_carry() -> None:
    with pytest.raises(ValueError, match="can be offered"):
        build_offer("198.51.100.1", 30000, codecs=("OPUS",))


def test_policy_decides_what_is_offered_and_the_admission_security() -> None:
    assert [srtp_for_policy(x) for x in ("allow-plain", "prefer-srtp", "require-srtp")] == \
        ["off", "best-effort", "required"]
    policy = parse_policy(BASE + "meetings:\n  s: {legacy_media: require-srtp}\n"
                          "  p: {legacy_media: prefer-srtp}\n  o: {}\n", "p.yaml")
    assert [delayed_offer_security(policy, m) for m in ("s", "p", "o")] == ["sdes", "sdes", "plain"]


# -- reading the answer -------------------------------------------------------------------------

def test_plain_answer_gives_codec_address_and_telephone_event() -> None:
    offer = build_offer("198.51.100.1", 30000)
    choice = choose_answer(offer, SessionDescription.parse(_answer()))
    assert (choice.encoding, choice.payload_type, choice.telephone_event_pt) == ("PCMA", 8, 101)
    assert (choice.remote_address, choice.remote_port, choice.secure) == ("192.0.2.10", 41000, False)


def test_srtp_answer_matched_by_tag_keeps_our_key_for_that_tag() -> None:
    offer = build_offer("198.51.100.1", 30000, srtp="required")
    ours = offer.cryptos[1]  # tag 2, AES_CM_128_HMAC_SHA1_32
    ans = _answer(proto="RTP/SAVP", crypto=f"2 {ours.suite} inline:{_key()}")
    choice = choose_answer(offer, SessionDescription.parse(ans))
    assert choice.srtp_suite == ours.suite and choice.srtp_local_key == ours.key
    assert choice.srtp_remote_key == bytes(range(30))


def test_best_effort_answer_without_crypto_is_plain() -> None:
    offer = build_offer("198.51.100.1", 30000, srtp="best-effort")
    assert choose_answer(offer, SessionDescription.parse(_answer())).secure is False


@pytest.mark.parametrize(("srtp", "answer", "why"), [
    ("off", _answer(port=0), "refuses the audio"),
    ("off", _answer(pts="18"), "no codec we offered"),
    ("off", _answer(extra_m="m=video 0 RTP/AVP 96\r\n"), "2 m-lines"),
    ("required", _answer(proto="RTP/SAVP"), "requires SRTP"),
    ("required", _answer(proto="RTP/SAVP", crypto=f"7 AES_CM_128_HMAC_SHA1_80 inline:{_key()}"),
     "matches none we offered"),
    ("required", _answer(proto="RTP/SAVP", crypto=f"1 AES_CM_128_HMAC_SHA1_32 inline:{_key()}"),
     "matches none we offered"),
    ("best-effort", _answer(crypto=f"1 AES_CM_128_HMAC_SHA1_80 inline:{_key(5)}"), "unusable"),
    ("off", _answer(proto="UDP/TLS/RTP/SAVP"), "not what we offered"),
    ("off", _answer().replace("IN IP4 192.0.2.10", "IN IP6 2001:db8::5"), "IP6, our media address is IP4"),
])
def test_unusable_answers_are_refused_with_a_reason(srtp: str, answer: str, why: str) -> None:
    offer = build_offer("198.51.100.1", 30000, srtp=srtp)  # type: ignore[arg-type]
    with pytest.raises(OfferRejected, match=why):
        choose_answer(offer, SessionDescription.parse(answer))


@settings(max_examples=300, deadline=None)
@given(hs.text(alphabet=hs.sampled_from(list("vmoctas=0123456789 /:.-\r\nRTPAVSINUMG")), max_size=300),
       hs.sampled_from(["off", "best-effort", "required"]))
def test_hostile_answers_never_escape_as_other_errors(text: str, srtp: str) -> None:
    offer = build_offer("198.51.100.1", 30000, srtp=srtp)  # type: ignore[arg-type]
    try:
        sdp = SessionDescription.parse(_answer() + text)
    except SdpParseError:
        return
    try:
        choice = choose_answer(offer, sdp)
    except OfferRejected as exc:
        assert exc.reason
        return
    assert choice.encoding in offer.codecs


# -- the endpoint: ACK carries the answer --------------------------------------------------------

def _delayed(h: Harness, on_answer: object = None) -> tuple[InboundCall, SipRequest, str]:
    inv = invite(sdp=None)
    h.send(inv)
    call = h.handler.offered[-1]
    assert call.delayed_offer and call.offer is None
    if on_answer is not None:
        call.on_answer = on_answer  # type: ignore[assignment]
    (ok,) = parsed(h.act(lambda: call.accept(str(build_offer("198.51.100.1", 30000)))))
    assert isinstance(ok, SipResponse) and ok.status == 200
    assert SessionDescription.parse(ok.body).media[0].port == 30000
    return call, inv, ok.to_addr.tag or ""


def _ack(inv: SipRequest, tag: str, body: str | None, ctype: str = "application/sdp") -> SipRequest:
    ack = in_dialog("ACK", inv, tag, 1, "z9hG4bK-ack-d")
    if body is not None:
        ack.headers.add("Content-Type", ctype)
        ack.body = body.encode()
    return ack


def test_ack_answer_reaches_the_application_and_confirms() -> None:
    h = Harness()
    seen: list[SessionDescription] = []
    call, inv, tag = _delayed(h, lambda _c, sdp: seen.append(sdp))
    assert h.send(_ack(inv, tag, _answer())) == []
    assert call.state is CallState.CONFIRMED and len(seen) == 1
    assert call.offer is seen[0]
    assert h.advance(40) == []  # no 2xx retransmissions, no BYE


@pytest.mark.parametrize(("body", "ctype", "why"), [
    (None, "application/sdp", "no SDP answer"),
    ("hello", "text/plain", "not application/sdp"),
    ("v=0\r\nm=audio x\r\n", "application/sdp", "malformed SDP answer"),
    (_answer(), "application/sdp", "the answer names no codec"),  # refused by on_answer
])
def test_ack_without_usable_answer_is_bye_with_reason(body: str | None, ctype: str, why: str) -> None:
    h = Harness()
    call, inv, tag = _delayed(h, lambda _c, _sdp: "the answer names no codec we offered")
    (bye,) = parsed(h.send(_ack(inv, tag, body, ctype)))
    assert isinstance(bye, SipRequest) and bye.method == "BYE"
    reason = bye.headers.get("Reason") or ""
    assert reason.startswith("SIP;cause=488;text=") and why in reason
    assert h.handler.ended == [(call, EndReason.ANSWER_REFUSED)]
    assert h.endpoint.active_calls == 0


def test_hangup_before_the_ack_sends_the_pending_bye_not_an_answer_check() -> None:
    h = Harness()
    call, inv, tag = _delayed(h, lambda _c, _sdp: "must not be asked")
    h.act(lambda: call.hangup("bye"))
    (bye,) = parsed(h.send(_ack(inv, tag, None)))
    assert isinstance(bye, SipRequest) and "must not" not in (bye.headers.get("Reason") or "")
    assert h.handler.ended == [(call, EndReason.LOCAL_HANGUP)]


# -- the gateway's negotiation -----------------------------------------------------------------

def _ports() -> PortAllocator:
    return PortAllocator(40000, 40009, address="127.0.0.1", bind=FakeBinder())


def test_negotiation_builds_the_leg_on_the_offered_port() -> None:
    async def run() -> None:
        h, ports = Harness(), _ports()
        h.send(invite(sdp=None))
        call = h.handler.offered[-1]
        neg = DelayedOfferNegotiation(call, ports=ports, media_address="127.0.0.1",
                                      codecs=("PCMU", "PCMA", "G722"), legacy_media="allow-plain")
        offered = SessionDescription.parse(neg.offer())
        (ok,) = parsed(h.act(lambda: call.accept(str(offered))))
        waiting = asyncio.ensure_future(neg.answered())
        await asyncio.sleep(0)
        assert not waiting.done()
        h.send(_ack(call.invite, ok.to_addr.tag or "", _answer(pts="9 101")))
        result = await waiting
        assert result is not None
        choice, leg = result
        assert leg.local_port == offered.media[0].port and leg.codec.name == "G722"
        assert leg.remote == ("192.0.2.10", 41000) and choice.telephone_event_pt == 101
        assert ports.in_use == 1
        leg.close()
        assert ports.in_use == 0

    asyncio.run(run())


def test_negotiation_frees_the_port_when_the_answer_is_unusable() -> None:
    async def run() -> None:
        h, ports = Harness(), _ports()
        h.send(invite(sdp=None))
        call = h.handler.offered[-1]
        neg = DelayedOfferNegotiation(call, ports=ports, media_address="127.0.0.1",
                                      codecs=("PCMU",), legacy_media="require-srtp")
        (ok,) = parsed(h.act(lambda: call.accept(neg.offer())))
        waiting = asyncio.ensure_future(neg.answered())
        (bye,) = parsed(h.send(_ack(call.invite, ok.to_addr.tag or "", _answer(pts="0"))))
        assert isinstance(bye, SipRequest) and "requires SRTP" in (bye.headers.get("Reason") or "")
        assert await waiting is None and ports.in_use == 0

    asyncio.run(run())


async def _controller_200(ports: PortAllocator, meetings: str,
                          user: str) -> tuple[CallController, Harness, SipRequest, SipResponse]:
    """A controller behind a SIP harness, an INVITE without SDP to ``user`` and the 200 it sends."""
    policy = parse_policy(BASE + "meetings:\n" + meetings, "p.yaml")
    ctl = CallController(reactor=None, policy=policy, core_url="http://127.0.0.1:1",
                         media_address="127.0.0.1", ports=ports)
    h = Harness()
    h.handler.on_incoming = ctl.incoming_call
    inv = invite(sdp=None, user=user)
    h.send(inv)
    out: list[SipResponse] = []
    for _ in range(20):
        await asyncio.sleep(0.01)
        out = [m for m in parsed(h._drain()) if isinstance(m, SipResponse)]
        if out:
            break
    (ok,) = [m for m in out if m.status == 200]
    return ctl, h, inv, ok


async def _ports_freed(ports: PortAllocator) -> None:
    """Wait (at most 1.5 s) until the controller has given every port back."""
    for _ in range(30):
        await asyncio.sleep(0.05)
        if ports.in_use == 0:
            break


def test_controller_offers_in_the_200_and_ends_on_a_bad_ack() -> None:
    """The whole controller path up to the join: 200 carries our offer on an allocated port;
    an ACK without SDP ends the call with BYE and frees the port (no join is attempted)."""
    async def run() -> None:
        ports = _ports()
        ctl, h, inv, ok = await _controller_200(ports, "  m1: {legacy_media: prefer-srtp}\n", "m1")
        offer = SessionDescription.parse(ok.body)
        assert offer.media[0].proto == "RTP/AVP" and offer.media[0].attribute("crypto")
        assert ports.in_use == 1
        (bye,) = parsed(h.send(_ack(inv, ok.to_addr.tag or "", None)))
        assert isinstance(bye, SipRequest) and bye.method == "BYE"
        ctl.call_ended(h.handler.offered[-1], EndReason.ANSWER_REFUSED)
        await _ports_freed(ports)
        assert ports.in_use == 0 and ctl.active_calls == 0

    asyncio.run(run())


def test_controller_answers_a_delayed_offer_to_a_pin_meeting_with_an_offer() -> None:
    """A PIN meeting sends the caller to the IVR: with a delayed offer the 200 OK carries our
    offer (PCMU first, the meeting's codecs) and the port stays bound until the ACK."""
    async def run() -> None:
        ports = _ports()
        ctl, h, _inv, ok = await _controller_200(ports, '  p1: {pin: "1234"}\n', "p1")
        assert SessionDescription.parse(ok.body).media[0].formats[0] == "0"
        assert ports.in_use == 1
        h.advance(40)  # no ACK: the 2xx gives up, the call ends
        ctl.call_ended(h.handler.offered[-1], EndReason.ACK_TIMEOUT)
        await _ports_freed(ports)
        assert ports.in_use == 0

    asyncio.run(run())
