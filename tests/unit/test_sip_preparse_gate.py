"""The pre-parse flood gate (sip.ratelimit.PreParseGate): a per-source token bucket that reads only
the start line, in front of the parser; sources with an established call are never throttled."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

import sip.endpoint as endpoint_module
from sip.calls import CallState
from sip.message import SipResponse
from sip.ratelimit import Limit, PreParseGate, call_id_of
from sip.testing import CALLER, Harness, in_dialog, invite, options, parsed, statuses

OTHER = ("203.0.113.9", 5060)


def test_responses_and_acks_always_pass_requests_spend_tokens() -> None:
    gate = PreParseGate(Limit(rate=10, burst=5))
    assert all(gate.admit(b"SIP/2.0 200 OK\r\n", "192.0.2.1", 0.0) for _ in range(100))
    assert all(gate.admit(b"ACK sip:x SIP/2.0\r\n", "192.0.2.1", 0.0) for _ in range(100))
    passed = [gate.admit(b"OPTIONS sip:x SIP/2.0\r\n", "192.0.2.1", 0.0) for _ in range(20)]
    assert passed == [True] * 5 + [False] * 15 and gate.dropped == 15
    assert gate.admit(b"INVITE sip:x SIP/2.0\r\n", "192.0.2.2", 0.0)  # another source: own bucket
    assert gate.admit(b"OPTIONS sip:x SIP/2.0\r\n", "192.0.2.1", 0.1)  # refilled: 10/s
    assert gate.admit(b"OPTIONS sip:x SIP/2.0\r\n", "192.0.2.1", 0.1, in_dialog=lambda _d: True)


@settings(max_examples=300, deadline=None)
@given(hs.binary(max_size=200), hs.floats(0, 1e6, allow_nan=False))
def test_any_bytes_get_a_verdict(data: bytes, now: float) -> None:
    gate = PreParseGate(Limit(rate=1, burst=1))
    assert isinstance(gate.admit(data, "192.0.2.1", now), bool)


def test_a_flood_from_a_quiet_source_is_mostly_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    parses = 0
    real = endpoint_module.parse_message

    def counting(data: bytes) -> object:
        nonlocal parses
        parses += 1
        return real(data)

    monkeypatch.setattr(endpoint_module, "parse_message", counting)
    h = Harness()
    h.endpoint.rate_limiter = None  # only the gate here
    h.endpoint.preparse_gate = PreParseGate(Limit(rate=30, burst=60))
    for i in range(1500):  # 1500 requests within one second of fake time
        h.clock.now += 1 / 1500
        h.send(options(branch=f"z9hG4bK-f{i}", call_id=f"f{i}"), addr=OTHER)
    print(f"\n1500 OPTIONS in 1 s from one source: {parses} parsed, "
          f"{h.endpoint.preparse_gate.dropped} dropped unparsed")
    assert parses <= 60 + 30 + 1 and h.endpoint.preparse_gate.dropped == 1500 - parses


def test_call_id_is_read_from_the_header_section_only() -> None:
    msg = b"BYE sip:a SIP/2.0\r\nVia: x\r\ni:  abc@host \r\nCSeq: 2 BYE\r\n\r\nCall-ID: body"
    assert call_id_of(msg) == "abc@host"
    assert call_id_of(b"BYE sip:a SIP/2.0\r\nCALL-ID:q\r\n\r\n") == "q"
    assert call_id_of(b"BYE sip:a SIP/2.0\r\nVia: x\r\n\r\nCall-ID: body") is None


@settings(max_examples=300, deadline=None)
@given(hs.binary(max_size=300))
def test_call_id_of_never_raises(data: bytes) -> None:
    assert call_id_of(data) is None or isinstance(call_id_of(data), str)


def test_established_call_is_never_throttled_during_a_flood_from_its_own_address() -> None:
    """The flood comes from the room system's own address (as on loopback in the interop test):
    out-of-dialog requests are gated, the call's in-dialog INFO and BYE all get through."""
    h = Harness()
    h.endpoint.preparse_gate = PreParseGate(Limit(rate=1, burst=2))
    inv = invite()
    h.send(inv)
    call = h.handler.offered[-1]
    (ok,) = parsed(h.act(lambda: call.accept("v=0\r\no=- 1 1 IN IP4 198.51.100.1\r\ns=-\r\n"
                                             "c=IN IP4 198.51.100.1\r\nt=0 0\r\n"
                                             "m=audio 30000 RTP/AVP 0\r\n")))
    assert isinstance(ok, SipResponse)
    tag = ok.to_addr.tag or ""
    h.send(in_dialog("ACK", inv, tag, 1, "z9hG4bK-ack"))
    assert call.state is CallState.CONFIRMED
    # 50 OPTIONS from the caller's address: its bucket had one token left after the INVITE.
    flood = [s for i in range(50) for s in statuses(h.send(options(f"z9hG4bK-o{i}", f"o{i}"),
                                                           addr=CALLER))]
    assert len(flood) == 1
    # Meanwhile 20 INFO DTMF of the established call: every one parsed and answered 200.
    infos = []
    for n in range(20):
        info = in_dialog("INFO", inv, tag, 2 + n, f"z9hG4bK-info{n}")
        info.headers.add("Content-Type", "application/dtmf-relay")
        info.body = b"Signal=5\r\nDuration=160\r\n"
        infos += statuses(h.send(info))
    assert infos == [200] * 20 and len(h.handler.digits) == 20
    assert statuses(h.send(in_dialog("BYE", inv, tag, 30, "z9hG4bK-bye"))) == [200]
    # The call is over: its Call-ID no longer opens the gate.
    late = in_dialog("BYE", inv, tag, 31, "z9hG4bK-bye2")
    assert statuses(h.send(late)) == []
