"""Bad input gets a 400 (when there is a Via to answer to) or a logged drop, never an exception.

The endpoint catches everything as a last resort and logs ``reason="internal
error"``; these tests assert that last resort is never *needed*, which is what
makes "never raises" checkable.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from sip.message import SipResponse
from sip.testing import Harness, invite, options, parsed, statuses

VALID_INVITE = bytes(invite())
VALID_OPTIONS = bytes(options())


def _internal_errors(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e.get("reason") == "internal error"
            or e.get("log_level") in ("error", "critical") or "exc_info" in e]


def test_truncated_body_is_400() -> None:
    h = Harness()
    with capture_logs() as logs:
        out = h.send(VALID_INVITE[:-20])
    (resp,) = parsed(out)
    assert isinstance(resp, SipResponse) and resp.status == 400
    assert resp.call_id == "call-1@192.0.2.10" and resp.to_addr.tag
    assert "Content-Length" in (resp.headers.get("Warning") or "")
    assert any(e["event"] == "sip.request.invalid" for e in logs)
    assert h.handler.offered == []


def test_missing_call_id_or_cseq_is_400() -> None:
    for name in (b"Call-ID", b"CSeq", b"From", b"To"):
        h = Harness()
        lines = [ln for ln in VALID_OPTIONS.split(b"\r\n") if not ln.startswith(name + b":")]
        assert statuses(h.send(b"\r\n".join(lines))) == [400], name


def test_missing_via_is_dropped_with_log() -> None:
    h = Harness()
    lines = [ln for ln in VALID_OPTIONS.split(b"\r\n") if not ln.startswith(b"Via:")]
    with capture_logs() as logs:
        assert h.send(b"\r\n".join(lines)) == []
    assert [e["event"] for e in logs] == ["sip.message.dropped"]


def test_binary_junk_and_bad_responses_are_dropped() -> None:
    h = Harness()
    with capture_logs() as logs:
        assert h.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256))) == []
        assert h.send(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n") == []
        assert h.send(b"SIP/2.0 200 OK\r\n" + VALID_OPTIONS.split(b"\r\n", 1)[1]) == []
    assert [e["event"] for e in logs] == ["sip.message.dropped"] * 3
    assert _internal_errors(logs) == []


def test_bad_content_length_and_version() -> None:
    h = Harness()
    assert statuses(h.send(VALID_OPTIONS.replace(b"Content-Length: 0", b"Content-Length: -1"))) \
        == [400]
    assert statuses(h.send(VALID_OPTIONS.replace(b"SIP/2.0\r\n", b"SIP/9.9\r\n", 1))) == [505]


def test_ack_is_never_answered_even_when_broken() -> None:
    h = Harness()
    ack = VALID_OPTIONS.replace(b"OPTIONS", b"ACK").replace(b"Call-ID: opt-1\r\n", b"")
    assert h.send(ack) == []


def _check_no_internal_error(data: bytes, transport: str = "udp") -> None:
    h = Harness()
    with capture_logs() as logs:
        out = h.send(data, transport=transport, connection=1)
    assert _internal_errors(logs) == [], logs
    for t in out:
        if t.data:
            # Only responses come out of bad input, and their start line is well-formed.
            assert t.data.startswith(b"SIP/2.0 ") and t.data[8:11].isdigit(), t.data[:40]
            t.data.decode("utf-8")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_never_need_the_last_resort(data: bytes) -> None:
    _check_no_internal_error(data)
    _check_no_internal_error(data, transport="tcp")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    base = bytearray(draw(st.sampled_from([VALID_INVITE, VALID_OPTIONS])))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "dup"]))
        pos = draw(st.integers(0, max(0, len(base) - 1)))
        if op == "flip" and base:
            base[pos] = draw(st.integers(0, 255))
        elif op == "delete":
            del base[pos:pos + draw(st.integers(1, 20))]
        elif op == "insert":
            base[pos:pos] = draw(st.sampled_from(
                [b"\r\n", b" ", b",", b";", b":", b"<", b">", b'"', b"\x00", b"\r\n ", b"%",
                 b"[", b"]", b"@", b"=", b"Content-Length: 99\r\n"]))
        elif op == "truncate":
            del base[pos:]
        else:
            base[pos:pos] = base[pos:pos + draw(st.integers(1, 40))]
    return bytes(base)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_messages_never_need_the_last_resort(data: bytes) -> None:
    _check_no_internal_error(data)
    _check_no_internal_error(data, transport="tcp")
