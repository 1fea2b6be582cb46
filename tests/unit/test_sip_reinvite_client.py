"""The gateway's own re-INVITE: the INVITE client transaction (RFC 3261 17.1.1, RFC 6026) and the
session refresh by re-INVITE when the peer's Allow lacks UPDATE (RFC 4028 7.4).

Everything on the fake clock of :class:`sip.testing.Harness`: timers A/B/D/M, the dialog's ACK
for a 2xx and its retransmissions (13.2.2.4), 491 glare back-off (14.1), 408/481/timeout ending
the session with BYE (12.2.1.2, RFC 4028 10).
"""

from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as hs

from sip.calls import CallState, EndReason, InboundCall
from sip.message import SipRequest, SipResponse, parse_message
from sip.sdp import SessionDescription
from sip.testing import Harness, in_dialog, invite, parsed
from sip.timers import TimerQueue, TimerValues
from sip.transaction import Destination, Input, State, Transaction, ack_for_error
from tests.support.pcap import Flow, write_pcap
from tests.support.tshark import TSHARK, decode

ANSWER = ("v=0\r\no=roomgate 77 77 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\n"
          "t=0 0\r\nm=audio 30000 RTP/AVP 0\r\na=sendrecv\r\n")
NO_UPDATE = ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS")


def confirmed(h: Harness, interval: int = 120) -> tuple[InboundCall, str]:
    inv = invite(extra=[("Session-Expires", f"{interval};refresher=uas"), NO_UPDATE])
    h.send(inv)
    call = h.handler.offered[-1]
    (ok,) = parsed(h.act(lambda: call.accept(ANSWER)))
    assert isinstance(ok, SipResponse) and ok.headers.get("Session-Expires") == f"{interval};refresher=uas"
    tag = ok.to_addr.tag or ""
    h.send(in_dialog("ACK", inv, tag, 1, "z9hG4bK-ack-1"))
    assert call.state is CallState.CONFIRMED and call.session_refresher == "uas"
    return call, tag


def response(req: SipRequest, status: int, extra: str = "", to_tag: str = "peer") -> bytes:
    to = req.headers.get("To") or ""
    if ";tag=" not in to:
        to += f";tag={to_tag}"
    return (f"SIP/2.0 {status} X\r\nVia: {req.headers.get('Via')}\r\nFrom: {req.headers.get('From')}"
            f"\r\nTo: {to}\r\nCall-ID: {req.call_id}\r\nCSeq: {req.headers.get('CSeq')}\r\n"
            f"{extra}Content-Length: 0\r\n\r\n").encode()


def requests(items: list) -> list[SipRequest]:  # type: ignore[type-arg]
    return [m for m in parsed(items) if isinstance(m, SipRequest)]


def test_refresh_by_reinvite_carries_the_same_sdp_at_half_interval() -> None:
    h = Harness()
    call, _tag = confirmed(h)
    assert h.advance(59.9) == []
    (reinv,) = requests(h.advance(0.1))
    assert reinv.method == "INVITE" and reinv.uri.host == "192.0.2.10"
    assert reinv.headers.get("Session-Expires") == "120;refresher=uac"
    assert reinv.headers.get("Contact") and reinv.headers.get("Content-Type") == "application/sdp"
    sent = SessionDescription.parse(reinv.body)
    assert (sent.origin.session_id, sent.origin.session_version) == ("77", "77")  # RFC 3264 8
    assert reinv.body.decode() == call.answer_sdp
    ok = response(reinv, 200, "Session-Expires: 120;refresher=uac\r\n")
    (ack,) = requests(h.send(ok))
    assert ack.method == "ACK" and ack.cseq == (reinv.cseq[0], "ACK")
    assert ack.top_via and reinv.top_via and ack.top_via.branch != reinv.top_via.branch
    # A retransmitted 2xx gets the same ACK again (13.2.2.4), not a new refresh.
    (ack2,) = requests(h.send(ok))
    assert bytes(ack2) == bytes(ack)
    # Next refresh 60 s after the 2xx, with the next CSeq; the call lives on.
    (reinv2,) = requests(h.advance(60))
    assert reinv2.method == "INVITE" and reinv2.cseq[0] == reinv.cseq[0] + 1
    h.send(response(reinv2, 200))
    assert h.handler.ended == [] and call.state is CallState.CONFIRMED


def test_timer_a_retransmits_doubling_then_timer_b_ends_with_bye() -> None:
    h = Harness()
    call, _ = confirmed(h)
    (_reinv,) = requests(h.advance(60))
    times: list[float] = []
    for _ in range(400):
        out = requests(h.advance(0.25))
        if any(r.method == "BYE" for r in out):
            break
        times += [h.clock.now] * sum(1 for r in out if r.method == "INVITE")
    assert len(times) >= 5, times
    deltas = [round(b - a, 2) for a, b in itertools.pairwise(times)]
    assert deltas[:4] == [1.0, 2.0, 4.0, 8.0], deltas  # Timer A doubles without the T2 cap
    assert h.handler.ended == [(call, EndReason.SESSION_EXPIRED)]
    byes = [m for m in requests(h.sent) if m.method == "BYE"]
    assert byes and "408" in (byes[0].headers.get("Reason") or "")


def test_1xx_stops_retransmissions_and_error_final_is_acked_by_the_transaction() -> None:
    h = Harness()
    call, _ = confirmed(h)
    (reinv,) = requests(h.advance(60))
    h.send(response(reinv, 100))
    assert requests(h.advance(10)) == []  # Proceeding: no Timer A
    out = requests(h.send(response(reinv, 408)))
    kinds = [r.method for r in out]
    assert kinds[0] == "ACK" and "BYE" in kinds  # 17.1.1.3 ACK, then RFC 4028 10 BYE
    ack = out[0]
    assert ack.top_via and reinv.top_via and ack.top_via.branch == reinv.top_via.branch
    assert h.handler.ended == [(call, EndReason.SESSION_EXPIRED)]


def test_481_ends_the_dialog() -> None:
    h = Harness()
    call, _ = confirmed(h)
    (reinv,) = requests(h.advance(60))
    h.send(response(reinv, 481))
    assert h.handler.ended == [(call, EndReason.SESSION_EXPIRED)] and h.endpoint.active_calls == 0


def test_glare_491_retries_after_2_1_to_4_seconds() -> None:
    delays: set[float] = set()
    for _ in range(12):
        h = Harness()
        call, _ = confirmed(h)
        (reinv,) = requests(h.advance(60))
        start = h.clock.now
        out = requests(h.send(response(reinv, 491)))
        assert [r.method for r in out] == ["ACK"]
        step = 0.01
        while True:
            again = [r for r in requests(h.advance(step)) if r.method == "INVITE"]
            if again:
                break
            assert h.clock.now - start < 4.05
        delay = round(h.clock.now - start, 2)
        assert 2.1 <= delay <= 4.01, delay
        delays.add(delay)
        assert again[0].cseq[0] == reinv.cseq[0] + 1 and call.state is CallState.CONFIRMED
    assert len(delays) > 1  # random, not one fixed value


def test_peer_reinvite_while_ours_is_pending_gets_491() -> None:
    h = Harness()
    call, tag = confirmed(h)
    (reinv,) = requests(h.advance(60))
    offer = invite(to_tag=tag, cseq=2, branch="z9hG4bK-peer-glare")
    (resp,) = [m for m in parsed(h.send(offer)) if isinstance(m, SipResponse)]
    assert resp.status == 491
    h.send(response(reinv, 200))
    assert call.state is CallState.CONFIRMED and h.handler.ended == []


def test_peer_that_allows_update_still_gets_update() -> None:
    h = Harness()
    inv = invite(extra=[("Session-Expires", "120;refresher=uas"), ("Allow", "INVITE, ACK, BYE, UPDATE")])
    h.send(inv)
    call = h.handler.offered[-1]
    (ok,) = parsed(h.act(lambda: call.accept(ANSWER)))
    h.send(in_dialog("ACK", inv, ok.to_addr.tag or "", 1, "z9hG4bK-ack-u"))
    (upd,) = requests(h.advance(60))
    assert upd.method == "UPDATE" and not upd.body


# -- the transaction alone ---------------------------------------------------------------------

def _ict(reliable: bool = False) -> tuple[Transaction, TimerQueue]:
    timers = TimerQueue()
    req = invite(to_tag="t1", cseq=5)
    dest = Destination(("192.0.2.10", 5062), "tcp" if reliable else "udp")
    tx = Transaction("ict", req, dest, timers, TimerValues(), ("b", "INVITE"))
    tx.start_client(bytes(req), 0.0)
    return tx, timers


def test_ict_states_timer_d_and_m() -> None:
    tx, timers = _ict()
    assert tx.state is State.CALLING and timers.is_armed((tx, "A")) and timers.is_armed((tx, "B"))
    err = parse_message(response(tx.request, 486))
    assert isinstance(err, SipResponse)
    out = tx.fire(Input.RECV_FINAL, 1.0, response=err)
    assert [o.kind for o in out] == ["send", "deliver"] and tx.state is State.COMPLETED
    assert timers.next_deadline() == 33.0  # Timer D: 32 s on UDP
    assert [o.kind for o in tx.fire(Input.RECV_FINAL, 2.0, response=err)] == ["send"]  # ACK again
    tx2, timers2 = _ict(reliable=True)
    ok = parse_message(response(tx2.request, 200))
    assert isinstance(ok, SipResponse)
    assert [o.kind for o in tx2.fire(Input.RECV_2XX, 1.0, response=ok)] == ["deliver"]
    assert tx2.state is State.ACCEPTED and timers2.next_deadline() == 33.0  # Timer M: 64*T1
    assert [o.kind for o in tx2.fire(Input.RECV_2XX, 2.0, response=ok)] == ["deliver"]


def test_ack_for_error_copies_the_invite_and_the_responses_to() -> None:
    req = invite(cseq=9)
    req.headers.add("Route", "<sip:proxy.example;lr>")
    err = parse_message(response(req, 488, to_tag="x9"))
    assert isinstance(err, SipResponse)
    ack = ack_for_error(req, err)
    assert ack.uri == req.uri and ack.cseq == (9, "ACK") and ack.to_addr.tag == "x9"
    assert ack.headers.get_all("Route") == ["<sip:proxy.example;lr>"]
    assert ack.headers.get_all("Via") == req.headers.get_all("Via")[:1]


@settings(max_examples=200, deadline=None)
@given(hs.lists(hs.tuples(hs.sampled_from(list(Input)), hs.integers(100, 699)), max_size=30))
def test_ict_never_raises_and_terminates_for_good(steps: list[tuple[Input, int]]) -> None:
    tx, _ = _ict()
    now = 0.0
    for inp, status in steps:
        now += 0.5
        resp = parse_message(response(tx.request, status))
        assert isinstance(resp, SipResponse)
        was_terminated = tx.terminated
        out = tx.fire(inp, now, response=resp)
        if was_terminated:
            assert out == [] and tx.terminated


def test_tshark_reads_our_reinvite_ack_and_glare_ack_as_valid_sip(tmp_path: Path) -> None:
    """tshark, an independent SIP dissector, judges the wire format: the re-INVITE (with SDP),
    the dialog ACK for its 2xx and the transaction ACK for a 491, none malformed."""
    assert Path(TSHARK).exists(), f"tshark not found at {TSHARK} (make test installs Debian's tshark)"
    h = Harness()
    confirmed(h)
    (reinv,) = requests(h.advance(60))
    (ack_491,) = requests(h.send(response(reinv, 491)))
    reinv2 = next(r for r in requests(h.advance(4.1)) if r.method == "INVITE")  # + Timer A copies
    (ack_2xx,) = requests(h.send(response(reinv2, 200)))
    gw, peer = ("198.51.100.1", 5060), ("192.0.2.10", 5062)
    pcap = tmp_path / "reinvite.pcap"
    write_pcap(pcap, [Flow(bytes(m), gw, peer, "udp") for m in (reinv, ack_491, reinv2, ack_2xx)])
    rows = decode(pcap, None, ["sip.Method", "sip.CSeq", "sdp.version", "_ws.malformed"])
    print("\n" + "\n".join(f"{r['sip.Method']} {r['sip.CSeq']} sdp={r['sdp.version']}" for r in rows))
    assert [r["sip.Method"] for r in rows] == ["INVITE", "ACK", "INVITE", "ACK"]
    assert [r["sip.CSeq"] for r in rows] == [f"{reinv.cseq[0]} INVITE", f"{reinv.cseq[0]} ACK",
                                            f"{reinv2.cseq[0]} INVITE", f"{reinv2.cseq[0]} ACK"]
    assert rows[0]["sdp.version"] == "0" and rows[2]["sdp.version"] == "0"
    assert all(not r["_ws.malformed"] for r in rows), rows
