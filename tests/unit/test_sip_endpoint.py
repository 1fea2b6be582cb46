"""The sans-IO endpoint: transactions with timers and UAS call behaviour, bytes in/bytes out."""

from __future__ import annotations

import pytest

from sip.calls import CallState, EndReason, InboundCall
from sip.message import SipRequest, SipResponse, parse_message
from sip.testing import (
    CALLER,
    Harness,
    RecordingHandler,
    cancel_for,
    in_dialog,
    invite,
    options,
    parsed,
    statuses,
)
from sip.timers import TimerQueue, TimerValues
from sip.transaction import Destination, Input, State, Transaction

ANSWER = "v=0\r\no=roomgate 1 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\n" \
         "t=0 0\r\nm=audio 30000 RTP/AVP 0\r\na=sendrecv\r\n"


def answered(h: Harness, inv: SipRequest | None = None) -> tuple[InboundCall, SipRequest, str]:
    """An INVITE sent and accepted; returns the call, the INVITE and our To-tag."""
    inv = inv or invite()
    out = h.send(inv)
    assert statuses(out) == [100]
    call = h.handler.offered[-1]
    out = h.act(lambda: call.accept(ANSWER))
    (ok,) = parsed(out)
    assert isinstance(ok, SipResponse) and ok.status == 200
    assert ok.to_addr.tag
    return call, inv, ok.to_addr.tag


def test_invite_gives_100_then_incoming_call_with_offer() -> None:
    h = Harness()
    out = h.send(invite())
    (trying,) = parsed(out)
    assert isinstance(trying, SipResponse) and trying.status == 100
    assert out[0].addr == CALLER  # back to the source address
    via = trying.top_via
    assert via is not None and via.params["rport"] == "5062"
    assert via.params["received"] == "192.0.2.10"
    (call,) = h.handler.offered
    assert call.request_uri.user == "meeting42"
    assert call.from_display == "Room 1"
    assert call.transport == "udp" and call.source == CALLER
    assert call.offer is not None and call.offer.media[0].port == 40000


def test_accept_sends_complete_200() -> None:
    h = Harness()
    call, _, _ = answered(h)
    ok = parsed(h.sent)[-1]
    assert isinstance(ok, SipResponse)
    hdr = ok.headers
    assert hdr.get("Contact") == "<sip:meeting42@198.51.100.1:5060;transport=udp>"
    assert "INVITE" in (hdr.get("Allow") or "") and "BYE" in (hdr.get("Allow") or "")
    assert "Supported" in hdr
    assert hdr.get("Content-Type") == "application/sdp"
    assert hdr.get("Server") == "roomgate/test"
    assert ok.body.decode() == ANSWER
    assert call.state is CallState.ANSWERED


def test_2xx_retransmitted_with_backoff_until_ack() -> None:
    h = Harness()
    call, inv, tag = answered(h)
    t0 = h.clock.now
    times: list[float] = []
    for _ in range(40):
        out = h.advance(0.25)
        if out:
            assert statuses(out) == [200]
            times.append(round(h.clock.now - t0, 2))
        if h.clock.now - t0 >= 10:
            break
    # T1=0.5 doubling, capped at T2=4: 0.5, 1.5, 3.5, 7.5 ...
    assert times[:4] == [0.5, 1.5, 3.5, 7.5]
    out = h.send(in_dialog("ACK", inv, tag, 1, "z9hG4bK-ack-1"))
    assert out == []
    assert call.state is CallState.CONFIRMED
    assert h.advance(60) == []  # no more 2xx; Timer L ends the INVITE transaction silently
    assert h.endpoint.get_timer() is None
    assert h.handler.ended == []


def test_ack_timeout_sends_bye_and_ends_call() -> None:
    h = Harness()
    call, _, tag = answered(h)
    out = h.advance(31.9)
    assert set(statuses(out)) == {200}
    assert h.handler.ended == []
    out = h.advance(0.2)
    byes = [m for m in parsed(out) if isinstance(m, SipRequest)]
    assert [b.method for b in byes] == ["BYE"]
    bye = byes[0]
    assert bye.uri.user == "room1" and bye.uri.port == 5062  # remote target = Contact
    assert bye.to_addr.tag == "caller-tag" and bye.from_addr.tag == tag
    assert h.handler.ended == [(call, EndReason.ACK_TIMEOUT)]
    # The BYE is a non-INVITE client transaction: Timer E retransmits until a response.
    again = [m for m in parsed(h.advance(0.6)) if isinstance(m, SipRequest)]
    assert [m.method for m in again] == ["BYE"]
    resp = SipResponse(200)
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for v in bye.headers.get_all(name):
            resp.headers.add(name, v)
    assert h.send(resp) == []
    assert [m for m in parsed(h.advance(40)) if isinstance(m, SipRequest)] == []
    assert h.endpoint.get_timer() is None


def test_bye_client_transaction_gives_up_after_timer_f() -> None:
    h = Harness()
    call, inv, tag = answered(h)
    h.send(in_dialog("ACK", inv, tag, 1, "z9hG4bK-ack-1"))
    out = h.act(lambda: call.hangup("meeting closed"))
    (bye,) = parsed(out)
    assert isinstance(bye, SipRequest) and bye.method == "BYE"
    assert bye.headers.get("Reason") == 'Q.850;cause=16;text="meeting closed"'
    assert h.handler.ended == [(call, EndReason.LOCAL_HANGUP)]
    retransmits = [m for m in parsed(h.advance(40)) if isinstance(m, SipRequest)]
    assert len(retransmits) >= 5
    assert h.endpoint.get_timer() is None  # Timer F ended it


def test_remote_bye_and_unknown_dialog_bye() -> None:
    h = Harness()
    call, inv, tag = answered(h)
    h.send(in_dialog("ACK", inv, tag, 1, "z9hG4bK-ack-1"))
    out = h.send(in_dialog("BYE", inv, tag, 2, "z9hG4bK-bye-1"))
    assert statuses(out) == [200]
    assert h.handler.ended == [(call, EndReason.REMOTE_BYE)]
    # A retransmitted BYE is absorbed by its transaction (same 200 again, no new event).
    out = h.send(in_dialog("BYE", inv, tag, 2, "z9hG4bK-bye-1"))
    assert statuses(out) == [200]
    assert len(h.handler.ended) == 1
    out = h.send(in_dialog("BYE", inv, "no-such-tag", 3, "z9hG4bK-bye-2"))
    assert statuses(out) == [481]
    assert h.endpoint.active_calls == 0


def test_cancel_before_answer() -> None:
    h = Harness()
    inv = invite()
    h.send(inv)
    call = h.handler.offered[0]
    h.act(call.ring)
    out = h.send(cancel_for(inv))
    msgs = parsed(out)
    assert [(m.status, m.cseq[1]) for m in msgs if isinstance(m, SipResponse)] == [
        (200, "CANCEL"), (487, "INVITE")]
    assert h.handler.ended == [(call, EndReason.CANCELLED)]
    # The 487 is retransmitted (Timer G) until the ACK, which stops it.
    assert statuses(h.advance(0.6)) == [487]
    ack = in_dialog("ACK", inv, msgs[1].to_addr.tag or "", 1, "z9hG4bK-inv-1")
    assert h.send(ack) == []
    assert statuses(h.advance(10)) == []
    # The application's late accept is ignored, not an error.
    assert h.act(lambda: call.accept(ANSWER)) == []


def test_cancel_after_answer_race() -> None:
    h = Harness()
    call, inv, tag = answered(h)
    out = h.send(cancel_for(inv))
    assert [(m.status, m.cseq[1]) for m in parsed(out) if isinstance(m, SipResponse)] == [
        (200, "CANCEL")]
    assert call.state is CallState.ANSWERED and h.handler.ended == []
    h.send(in_dialog("ACK", inv, tag, 1, "z9hG4bK-ack-1"))
    assert call.state is CallState.CONFIRMED


def test_cancel_without_match_is_481() -> None:
    h = Harness()
    assert statuses(h.send(cancel_for(invite(branch="z9hG4bK-nothing")))) == [481]


def test_retransmitted_invite_is_absorbed() -> None:
    h = Harness()
    inv = invite()
    h.send(inv)
    assert statuses(h.send(inv)) == [100]
    assert len(h.handler.offered) == 1
    call = h.handler.offered[0]
    h.act(lambda: call.accept(ANSWER))
    out = h.send(inv)
    assert statuses(out) == [200]  # the last response again
    assert len(h.handler.offered) == 1


def test_merged_invite_is_482() -> None:
    h = Harness()
    h.send(invite())
    assert statuses(h.send(invite(branch="z9hG4bK-other-path"))) == [482]


def test_reject_with_warning_and_timer_h() -> None:
    h = Harness()
    inv = invite()
    h.send(inv)
    call = h.handler.offered[0]
    out = h.act(lambda: call.reject(403, "Forbidden", warning='no "such" meeting'))
    (resp,) = parsed(out)
    assert isinstance(resp, SipResponse) and resp.status == 403
    assert resp.headers.get("Warning") == '399 198.51.100.1 "no \\"such\\" meeting"'
    assert h.handler.ended == [(call, EndReason.LOCAL_HANGUP)]
    out = h.advance(40)  # no ACK: Timer G retransmits, Timer H gives up
    assert 3 <= len(statuses(out)) <= 12 and set(statuses(out)) == {403}
    assert h.endpoint.get_timer() is None


def test_hangup_before_answer_is_480() -> None:
    h = Harness()
    h.send(invite())
    call = h.handler.offered[0]
    assert statuses(h.act(lambda: call.hangup())) == [480]
    assert h.handler.ended == [(call, EndReason.LOCAL_HANGUP)]


def test_hangup_before_ack_waits_for_ack() -> None:
    h = Harness()
    call, inv, tag = answered(h)
    assert h.act(lambda: call.hangup()) == []  # RFC 3261 15: no BYE before the ACK
    assert h.handler.ended == [(call, EndReason.LOCAL_HANGUP)]
    out = h.send(in_dialog("ACK", inv, tag, 1, "z9hG4bK-ack-1"))
    assert [m.method for m in parsed(out) if isinstance(m, SipRequest)] == ["BYE"]
    assert len(h.handler.ended) == 1


def test_options_and_unknown_methods() -> None:
    h = Harness()
    (resp,) = parsed(h.send(options()))
    assert isinstance(resp, SipResponse) and resp.status == 200
    assert "OPTIONS" in (resp.headers.get("Allow") or "")
    assert resp.headers.get("Accept") == "application/sdp"
    assert "Supported" in resp.headers and resp.to_addr.tag
    register = bytes(options(branch="z9hG4bK-r")).replace(b"OPTIONS", b"REGISTER")
    (r405,) = parsed(h.send(register))
    assert isinstance(r405, SipResponse) and r405.status == 405 and r405.headers.get("Allow")
    weird = bytes(options(branch="z9hG4bK-w")).replace(b"OPTIONS", b"FROBNICATE")
    assert statuses(h.send(weird)) == [501]


def test_require_unsupported_is_420() -> None:
    h = Harness()
    out = h.send(invite(extra=[("Require", "100rel, foo")]))
    (resp,) = parsed(out)
    assert isinstance(resp, SipResponse) and resp.status == 420
    assert resp.headers.get("Unsupported") == "100rel, foo"
    assert h.handler.offered == []


def test_non_sdp_body_is_415_and_bad_sdp_is_400() -> None:
    h = Harness()
    inv = invite(sdp=None)
    inv.headers.add("Content-Type", "text/plain")
    inv.body = b"hello"
    assert statuses(h.send(inv)) == [415]
    assert statuses(h.send(invite(call_id="c2", branch="z9hG4bK-2", sdp="nonsense"))) == [400]
    assert h.handler.offered == []


def test_reinvite_answered_with_previous_answer() -> None:
    h = Harness()
    call, inv, tag = answered(h)
    h.send(in_dialog("ACK", inv, tag, 1, "z9hG4bK-ack-1"))
    re = invite(to_tag=tag, cseq=2, branch="z9hG4bK-reinv")
    out = h.send(re)
    ok = [m for m in parsed(out) if isinstance(m, SipResponse) and m.status == 200]
    assert len(ok) == 1 and ok[0].body.decode() == ANSWER
    h.send(in_dialog("ACK", re, tag, 2, "z9hG4bK-ack-2"))
    assert call.state is CallState.CONFIRMED
    assert h.advance(40) == [] and h.handler.ended == []
    assert h.endpoint.get_timer() is None


def test_reinvite_for_unknown_dialog_is_481() -> None:
    h = Harness()
    assert statuses(h.send(invite(to_tag="nope"))) == [481]
    assert h.handler.offered == []


def test_calls_over_tcp_use_the_connection() -> None:
    h = Harness()
    inv = invite(transport="TCP")
    out = h.send(bytes(inv)[:50], transport="tcp", connection=7)
    assert out == []
    out = h.send(bytes(inv)[50:] + b"\r\n\r\n", transport="tcp", connection=7)
    assert statuses(out) == [100] and out[0].connection == 7 and out[0].transport == "tcp"
    call = h.handler.offered[0]
    assert call.transport == "tcp"
    out = h.act(lambda: call.accept(ANSWER))
    (ok,) = parsed(out)
    assert "transport=tcp" in (ok.headers.get("Contact") or "")
    tag = ok.to_addr.tag or ""
    ack = in_dialog("ACK", inv, tag, 1, "z9hG4bK-ack")
    bye = in_dialog("BYE", inv, tag, 2, "z9hG4bK-bye")
    out = h.send(bytes(ack) + bytes(bye), transport="tcp", connection=7)
    assert statuses(out) == [200]
    assert h.handler.ended == [(call, EndReason.REMOTE_BYE)]
    garbage = h.send(b"NOT SIP AT ALL\r\n\r\n", transport="tcp", connection=7)
    assert [t.close for t in garbage] == [True]


def test_transport_failure_ends_call() -> None:
    h = Harness()
    call, _, _ = answered(h)
    h.endpoint.transport_failed(None, CALLER)
    h._drain()
    assert h.handler.ended == [(call, EndReason.TRANSPORT_ERROR)]


def test_handler_may_act_inside_incoming_call() -> None:
    handler = RecordingHandler(on_incoming=lambda call: call.reject(486))
    h = Harness(handler)
    out = h.send(invite())
    assert statuses(out) == [100, 486]


# --- the transaction tables on their own --------------------------------------------------


def _tx(kind: str, transport: str = "udp") -> tuple[Transaction, TimerQueue]:
    timers = TimerQueue()
    req = invite() if kind == "ist" else options()
    tx = Transaction(kind, req, Destination(CALLER, transport), timers, TimerValues(),
                     ("k",))
    return tx, timers


def test_invite_server_non_2xx_timer_g_h_on_udp() -> None:
    tx, timers = _tx("ist")
    tx.fire(Input.SEND_FINAL, 0.0, data=b"486")
    assert tx.state is State.COMPLETED
    assert timers.next_deadline() == 0.5  # Timer G = T1
    fired = []
    now = 0.0
    while (deadline := timers.next_deadline()) is not None:
        now = deadline
        for _, name in timers.pop_due(now):  # type: ignore[misc]
            fired.append((now, name, [o.kind for o in tx.timer_fired(name, now)]))
    g = [t for t, name, _ in fired if name == "G"]
    assert g[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert fired[-1][1] == "H" and fired[-1][0] == 32.0 and "timeout" in fired[-1][2]
    assert tx.state is State.TERMINATED


def test_invite_server_on_tcp_no_timer_g_and_timer_i_zero() -> None:
    tx, timers = _tx("ist", "tcp")
    tx.fire(Input.SEND_FINAL, 0.0, data=b"486")
    assert timers.next_deadline() == 32.0  # only H
    tx.fire(Input.ACK, 1.0)
    assert tx.state is State.CONFIRMED and timers.next_deadline() == 1.0  # Timer I = 0


@pytest.mark.parametrize(("transport", "j"), [("udp", 32.0), ("tcp", 0.0)])
def test_non_invite_server_timer_j(transport: str, j: float) -> None:
    tx, timers = _tx("nist", transport)
    out = tx.fire(Input.SEND_2XX, 0.0, data=b"200")
    assert [o.kind for o in out] == ["send"]
    assert timers.next_deadline() == j
    assert [o.data for o in tx.fire(Input.REQUEST, 0.1)] == [b"200"]


def test_message_model_types_survive_parse_of_sent_bytes() -> None:
    h = Harness()
    for t in h.send(invite()):
        assert isinstance(parse_message(t.data), SipResponse)
