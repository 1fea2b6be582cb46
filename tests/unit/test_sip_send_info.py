"""The gateway's own in-dialog INFO (RFC 6086), used for DTMF toward callers without
telephone-event: a non-INVITE client transaction in the confirmed dialog, bytes in/bytes out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sip.calls import CallState
from sip.info import InfoBodyError, classify, dtmf_relay_body, parse_dtmf_relay
from sip.message import SipRequest, SipResponse
from sip.testing import Harness, in_dialog, parsed
from tests.unit.test_sip_endpoint import answered


def test_info_goes_out_in_the_confirmed_dialog_and_retransmits_until_answered() -> None:
    h = Harness()
    call, inv, tag = answered(h)
    assert not call.send_info("application/dtmf-relay", b"Signal=1\r\n"), "no INFO before the ACK"
    assert [m for m in parsed(h.sent) if isinstance(m, SipRequest) and m.method == "INFO"] == []
    h.send(in_dialog("ACK", inv, tag, 1, "z9hG4bK-ack-1"))
    assert call.state is CallState.CONFIRMED
    ok: list[bool] = []
    sent = h.act(lambda: ok.append(call.send_info("application/dtmf-relay", dtmf_relay_body("#", 160))))
    assert ok == [True]
    (info,) = parsed(sent)
    assert isinstance(info, SipRequest) and info.method == "INFO"
    assert info.to_addr.tag == "caller-tag" and info.from_addr.tag == tag
    assert info.headers.get("Content-Type") == "application/dtmf-relay"
    assert (info.headers.get("CSeq") or "").endswith(" INFO")
    assert classify("application/dtmf-relay", info.body).digit == "#"  # type: ignore[union-attr]
    again = [m for m in parsed(h.advance(0.6)) if isinstance(m, SipRequest)]
    assert [m.method for m in again] == ["INFO"], "Timer E retransmits over UDP"
    resp = SipResponse(200)
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for v in info.headers.get_all(name):
            resp.headers.add(name, v)
    assert h.send(resp) == []
    assert [m for m in parsed(h.advance(40)) if isinstance(m, SipRequest)] == []
    call.hangup()
    assert not call.send_info("application/dtmf-relay", b"Signal=1\r\n"), "no INFO after the end"


@given(digit=st.sampled_from("0123456789*#ABCDabcd"), duration=st.integers(1, 10_000))
def test_dtmf_relay_body_round_trips(digit: str, duration: int) -> None:
    parsed_info = parse_dtmf_relay(dtmf_relay_body(digit, duration))
    assert (parsed_info.digit, parsed_info.duration_ms) == (digit.upper(), duration)


@given(st.text(max_size=3).filter(lambda s: s.strip().upper() not in set("0123456789*#ABCD")
                                  and not (s.strip().isascii() and s.strip().isdigit() and int(s.strip()) < 16)))
def test_dtmf_relay_body_refuses_non_keys(text: str) -> None:
    """Also the hostile-input guard of the parser it shares ``_digit`` with: ``Signal=²`` once
    escaped as a bare ValueError from ``int()`` instead of :class:`InfoBodyError`."""
    try:
        dtmf_relay_body(text, 100)
    except InfoBodyError:
        return
    raise AssertionError(f"{text!r} was accepted")


def test_unicode_digit_signal_is_a_typed_error() -> None:
    for body in (b"Signal=\xc2\xb2\r\n", "Signal=١\r\n".encode()):
        try:
            parse_dtmf_relay(body)
        except InfoBodyError:
            continue
        raise AssertionError(f"{body!r} was accepted")
