"""In-dialog requests: re-INVITE/UPDATE offer-answer, glare, INFO DTMF, session timers (RFC 4028).

All on the fake clock of :class:`sip.testing.Harness`; no wall-clock times are asserted.
"""

from __future__ import annotations

import pytest

from sip import info as sipinfo
from sip import session_timer as st
from sip.calls import CallState, EndReason, InboundCall
from sip.headers import Headers
from sip.message import SipRequest, SipResponse, parse_message
from sip.sdp import SessionDescription
from sip.testing import OFFER_SDP, Harness, in_dialog, invite, parsed, statuses

ANSWER = "v=0\r\no=roomgate 1 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\n" \
         "t=0 0\r\nm=audio 30000 RTP/AVP 0\r\na=sendrecv\r\n"
HOLD_OFFER = OFFER_SDP.replace("a=sendrecv", "a=sendonly").replace("o=- 1 1", "o=- 1 2")


def confirmed(h: Harness, extra: list[tuple[str, str]] | None = None
              ) -> tuple[InboundCall, SipRequest, str, SipResponse]:
    inv = invite(extra=extra)
    h.send(inv)
    call = h.handler.offered[-1]
    (ok,) = parsed(h.act(lambda: call.accept(ANSWER)))
    assert isinstance(ok, SipResponse) and ok.status == 200
    tag = ok.to_addr.tag or ""
    h.send(in_dialog("ACK", inv, tag, 1, "z9hG4bK-ack-1"))
    assert call.state is CallState.CONFIRMED
    return call, inv, tag, ok


def with_body(req: SipRequest, ctype: str, body: str) -> SipRequest:
    req.headers.add("Content-Type", ctype)
    req.body = body.encode()
    return req


# -- re-INVITE / UPDATE offer-answer --------------------------------------------------------

def test_reinvite_new_offer_goes_to_the_application() -> None:
    h = Harness()
    call, _inv, tag, _ = confirmed(h)
    seen: list[SessionDescription] = []

    def on_offer(c: InboundCall, offer: SessionDescription) -> str:
        seen.append(offer)
        return ANSWER.replace("a=sendrecv", "a=recvonly").replace("1 1 IN", "1 2 IN")

    call.on_offer = on_offer
    re = invite(to_tag=tag, cseq=2, branch="z9hG4bK-hold", sdp=HOLD_OFFER)
    (ok,) = [m for m in parsed(h.send(re)) if isinstance(m, SipResponse)]
    assert ok.status == 200 and "a=recvonly" in ok.body.decode()
    assert len(seen) == 1 and "a=sendonly" in str(seen[0])
    assert call.offer is seen[0] and "a=recvonly" in (call.answer_sdp or "")
    h.send(in_dialog("ACK", re, tag, 2, "z9hG4bK-ack-2"))
    assert h.advance(60) == [] and h.handler.ended == []


def test_reinvite_refused_by_application_is_488_and_session_unchanged() -> None:
    h = Harness()
    call, _, tag, _ = confirmed(h)
    call.on_offer = lambda c, o: None
    assert statuses(h.send(invite(to_tag=tag, cseq=2, branch="z9hG4bK-r2"))) == [488]
    assert call.answer_sdp == ANSWER and call.state is CallState.CONFIRMED


def test_reinvite_while_previous_2xx_unacked_is_500_retry_after() -> None:
    h = Harness()
    _call, _, tag, _ = confirmed(h)
    h.send(invite(to_tag=tag, cseq=2, branch="z9hG4bK-r2"))
    (resp,) = parsed(h.send(invite(to_tag=tag, cseq=3, branch="z9hG4bK-r3")))
    assert isinstance(resp, SipResponse) and resp.status == 500
    assert resp.headers.get("Retry-After")


def test_update_with_offer_answered_in_200() -> None:
    h = Harness()
    call, inv, tag, _ = confirmed(h)
    call.on_offer = lambda c, o: ANSWER.replace("30000", "30002")
    upd = with_body(in_dialog("UPDATE", inv, tag, 2, "z9hG4bK-u1"), "application/sdp", HOLD_OFFER)
    upd.headers.add("Contact", "<sip:room1@192.0.2.99:5062>")
    (ok,) = parsed(h.send(upd))
    assert isinstance(ok, SipResponse) and ok.status == 200 and "30002" in ok.body.decode()
    # A target refresh: our next request goes to the new Contact (RFC 3261 12.2.2).
    (bye,) = parsed(h.act(lambda: call.hangup()))
    assert isinstance(bye, SipRequest) and bye.uri.host == "192.0.2.99"


def test_update_out_of_dialog_and_cseq_order() -> None:
    h = Harness()
    _, inv, tag, _ = confirmed(h)
    assert statuses(h.send(in_dialog("UPDATE", inv, "other", 5, "z9hG4bK-u9"))) == [481]
    assert statuses(h.send(in_dialog("UPDATE", inv, tag, 1, "z9hG4bK-u0"))) == [500]


def test_update_before_answer_is_500_with_retry_after() -> None:
    h = Harness()
    inv = invite()
    h.send(inv)
    call = h.handler.offered[-1]
    h.act(call.ring)
    tag = call.local_tag
    upd = with_body(in_dialog("UPDATE", inv, tag, 2, "z9hG4bK-eu"), "application/sdp", OFFER_SDP)
    (resp,) = parsed(h.send(upd))
    assert isinstance(resp, SipResponse) and resp.status == 500 and resp.headers.get("Retry-After")


# -- INFO ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("ctype", "body", "digit"), [
    ("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n", "5"),
    ("application/dtmf-relay", "Signal= #\r\nDuration= 250\r\n", "#"),
    ("application/dtmf-relay", "Signal=10\r\n", "*"),
    ("application/dtmf", "9", "9"),
])
def test_info_dtmf_reaches_handler(ctype: str, body: str, digit: str) -> None:
    h = Harness()
    call, inv, tag, _ = confirmed(h)
    assert statuses(h.send(with_body(in_dialog("INFO", inv, tag, 2, "z9hG4bK-i"), ctype,
                                     body))) == [200]
    assert h.handler.digits == [(call, digit, "sip-info")]


def test_info_picture_fast_update_is_a_keyframe_request() -> None:
    h = Harness()
    call, inv, tag, _ = confirmed(h)
    xml = ('<?xml version="1.0" encoding="utf-8" ?><media_control><vc_primitive>'
           '<to_encoder><picture_fast_update/></to_encoder></vc_primitive></media_control>')
    req = with_body(in_dialog("INFO", inv, tag, 2, "z9hG4bK-k"),
                    "application/media_control+xml", xml)
    assert statuses(h.send(req)) == [200]
    assert h.handler.keyframes == [call] and h.handler.digits == []


def test_info_errors() -> None:
    h = Harness()
    _, inv, tag, _ = confirmed(h)
    (r415,) = parsed(h.send(with_body(in_dialog("INFO", inv, tag, 2, "z9hG4bK-a"),
                                      "text/plain", "hi")))
    assert isinstance(r415, SipResponse) and r415.status == 415
    assert "application/dtmf-relay" in (r415.headers.get("Accept") or "")
    bad = with_body(in_dialog("INFO", inv, tag, 3, "z9hG4bK-b"), "application/dtmf-relay",
                    "Signal=X\r\n")
    assert statuses(h.send(bad)) == [400]
    pkg = with_body(in_dialog("INFO", inv, tag, 4, "z9hG4bK-c"), "application/dtmf", "1")
    pkg.headers.add("Info-Package", "foo")
    assert statuses(h.send(pkg)) == [469]
    assert statuses(h.send(in_dialog("INFO", inv, tag, 5, "z9hG4bK-d"))) == [200]  # keep-alive
    assert statuses(h.send(in_dialog("INFO", inv, "nope", 6, "z9hG4bK-e"))) == [481]
    assert h.handler.digits == []


def test_info_body_parsers() -> None:
    assert sipinfo.parse_dtmf_relay(b"Signal=A\nDuration=100") == sipinfo.DtmfInfo("A", 100)
    assert sipinfo.parse_dtmf(b" 0 \r\n") == sipinfo.DtmfInfo("0")
    with pytest.raises(sipinfo.InfoBodyError):
        sipinfo.parse_dtmf_relay(b"Duration=100")
    with pytest.raises(sipinfo.InfoBodyError):
        sipinfo.parse_dtmf(b"16")


# -- session timers (RFC 4028) ----------------------------------------------------------------

def test_negotiation_rules() -> None:
    def req(**hs: str) -> st.TimerRequest:
        return st.parse_request(Headers([(k.replace("_", "-"), v) for k, v in hs.items()]))

    assert st.negotiate(req()) is None
    a = st.negotiate(req(Session_Expires="120", Supported="timer"))
    assert a == st.TimerAnswer(120, "uac", True)
    assert st.negotiate(req(Session_Expires="120;refresher=uas", Supported="timer")).we_refresh
    b = st.negotiate(req(Session_Expires="120"))  # caller without timer support: we refresh
    assert b is not None and b.we_refresh and not b.require
    assert st.negotiate(req(Session_Expires="100", Min_SE="150")).interval == 150
    assert st.too_small(req(Session_Expires="60"))
    with pytest.raises(st.SessionTimerError):
        req(Session_Expires="abc")


def test_session_expires_below_min_se_is_422() -> None:
    h = Harness()
    (resp,) = parsed(h.send(invite(extra=[("Session-Expires", "30"), ("Supported", "timer")])))
    assert isinstance(resp, SipResponse) and resp.status == 422
    assert resp.headers.get("Min-SE") == "90"
    assert h.handler.offered == []


def test_peer_refreshes_and_the_call_survives_hours() -> None:
    h = Harness()
    call, inv, tag, ok = confirmed(h, [("Session-Expires", "90"), ("Supported", "timer")])
    assert ok.headers.get("Session-Expires") == "90;refresher=uac"
    assert ok.headers.get("Require") == "timer"
    assert call.session_expires == 90 and call.session_refresher == "uac"
    seq = 1
    for _ in range(160):  # 160 refreshes at 45 s: two hours
        assert h.advance(45) == []
        seq += 1
        re = invite(to_tag=tag, cseq=seq, branch=f"z9hG4bK-ref{seq}",
                    extra=[("Session-Expires", "90;refresher=uac"), ("Supported", "timer")])
        (resp,) = parsed(h.send(re))
        assert isinstance(resp, SipResponse) and resp.status == 200
        assert resp.headers.get("Session-Expires") == "90;refresher=uac"
        h.send(in_dialog("ACK", re, tag, seq, f"z9hG4bK-ack{seq}"))
        seq += 1  # and by UPDATE without a body every other time (RFC 4028 7.4)
        upd = in_dialog("UPDATE", inv, tag, seq, f"z9hG4bK-upd{seq}")
        upd.headers.add("Session-Expires", "90;refresher=uac")
        (uresp,) = parsed(h.send(upd))
        assert isinstance(uresp, SipResponse) and uresp.status == 200 and not uresp.body
    assert h.handler.ended == [] and call.state is CallState.CONFIRMED


def test_refreshes_stop_bye_with_reason_and_session_expired() -> None:
    h = Harness()
    call, _inv, _tag, _ = confirmed(h, [("Session-Expires", "90"), ("Supported", "timer")])
    assert h.advance(57) == []  # 90 - min(32, 30) = 60 s
    sent = parsed(h.advance(4))  # expiry at 60 s, then Timer E retransmissions of the BYE
    bye = sent[0]
    assert all(isinstance(m, SipRequest) and m.method == "BYE" for m in sent)
    assert isinstance(bye, SipRequest) and bye.method == "BYE"
    assert "408" in (bye.headers.get("Reason") or "")
    assert h.handler.ended == [(call, EndReason.SESSION_EXPIRED)]
    assert call.state is CallState.ENDED
    # The BYE is answered; nothing of the call is left behind.
    resp = (f"SIP/2.0 200 OK\r\nVia: {bye.headers.get('Via')}\r\nFrom: {bye.headers.get('From')}"
            f"\r\nTo: {bye.headers.get('To')}\r\nCall-ID: {bye.call_id}\r\nCSeq: "
            f"{bye.headers.get('CSeq')}\r\nContent-Length: 0\r\n\r\n").encode()
    h.send(resp)
    h.advance(64)
    assert h.endpoint.active_calls == 0 and h.endpoint.get_timer() is None


def _answer(req: SipRequest, status: int = 200, extra: str = "") -> bytes:
    return (f"SIP/2.0 {status} X\r\nVia: {req.headers.get('Via')}\r\nFrom: "
            f"{req.headers.get('From')}\r\nTo: {req.headers.get('To')}\r\nCall-ID: {req.call_id}"
            f"\r\nCSeq: {req.headers.get('CSeq')}\r\n{extra}Content-Length: 0\r\n\r\n").encode()


def test_gateway_refreshes_with_update_at_half_interval() -> None:
    h = Harness()
    allow = ("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE, INFO")
    call, _inv, _tag, ok = confirmed(h, [("Session-Expires", "120;refresher=uas"),
                                       ("Supported", "timer"), allow])
    assert ok.headers.get("Session-Expires") == "120;refresher=uas"
    assert call.session_refresher == "uas"
    for _ in range(100):
        assert h.advance(59) == []
        (upd,) = parsed(h.advance(1))
        assert isinstance(upd, SipRequest) and upd.method == "UPDATE" and not upd.body
        assert upd.headers.get("Session-Expires") == "120;refresher=uac"
        assert upd.uri.host == "192.0.2.10"
        h.send(_answer(upd, 200, "Session-Expires: 120;refresher=uac\r\n"))
    assert h.handler.ended == []
    # The peer stops answering: after Timer F the session is over, BYE with a Reason.
    assert h.advance(59) == []
    h.advance(40)
    kinds = [m.method for m in parsed(h.sent[-20:]) if isinstance(m, SipRequest)]
    assert "BYE" in kinds
    assert h.handler.ended == [(call, EndReason.SESSION_EXPIRED)]


def test_refresh_rejected_ends_call_and_422_retries_larger() -> None:
    h = Harness()
    allow = ("Allow", "INVITE, ACK, BYE, UPDATE")
    call, _, _, _ = confirmed(h, [("Session-Expires", "100;refresher=uas"),
                                  ("Supported", "timer"), allow])
    (upd,) = parsed(h.advance(50))
    (upd2,) = parsed(h.send(_answer(upd, 422, "Min-SE: 300\r\n")))
    assert isinstance(upd2, SipRequest) and upd2.headers.get("Session-Expires", "").startswith("300")
    out = parsed(h.send(_answer(upd2, 481)))
    assert [m.method for m in out if isinstance(m, SipRequest)] == ["BYE"]
    assert h.handler.ended == [(call, EndReason.SESSION_EXPIRED)]


# A peer that does not allow UPDATE is refreshed by re-INVITE: tests/unit/test_sip_reinvite_client.py


def test_glare_our_refresh_pending_and_peer_offers_is_491() -> None:
    h = Harness()
    allow = ("Allow", "INVITE, ACK, BYE, UPDATE")
    call, _inv, tag, _ = confirmed(h, [("Session-Expires", "120;refresher=uas"),
                                      ("Supported", "timer"), allow])
    (upd,) = parsed(h.advance(60))
    assert isinstance(upd, SipRequest) and upd.method == "UPDATE"
    (resp,) = parsed(h.send(invite(to_tag=tag, cseq=2, branch="z9hG4bK-glare")))
    assert isinstance(resp, SipResponse) and resp.status == 491
    h.send(_answer(upd, 200, "Session-Expires: 120;refresher=uac\r\n"))
    (ok,) = [m for m in parsed(h.send(invite(to_tag=tag, cseq=3, branch="z9hG4bK-after")))
             if isinstance(m, SipResponse)]
    assert ok.status == 200 and call.state is CallState.CONFIRMED


def test_options_advertise_update_info_and_timer() -> None:
    h = Harness()
    from sip.testing import options
    (resp,) = parsed(h.send(options()))
    assert isinstance(resp, SipResponse)
    assert "UPDATE" in (resp.headers.get("Allow") or "") and "INFO" in resp.headers.get("Allow")
    assert resp.headers.get("Supported") == "timer"
    assert parse_message(bytes(resp)) is not None
