"""Log redaction: addresses, names and Call-IDs become per-run keyed hashes (``log.pii: redact``)."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from gateway.logs import PiiRedactor, configure_logging


def test_same_ip_same_token_within_a_run_not_across_runs() -> None:
    one, two = PiiRedactor(), PiiRedactor()
    a = one.text("from 192.0.2.7:5060 to [2001:db8::7]:5061")
    assert "192.0.2.7" not in a and "2001:db8::7" not in a
    assert a == one.text("from 192.0.2.7:5060 to [2001:db8::7]:5061")  # stable within a run
    assert one.token("ip", "192.0.2.7") in a and one.token("ip", "2001:db8::7") in a
    assert two.token("ip", "192.0.2.7") != one.token("ip", "192.0.2.7")  # a new key each run


def test_not_addresses_are_left_alone() -> None:
    r = PiiRedactor()
    for text in ("at 14:01:30.123Z", "version 1.2.3", "meeting 1001", "deadbeef:cafe", "Q.850;cause=16"):
        assert r.text(text) == text


def test_processor_hashes_pii_keys_whole_and_addresses_inside_values() -> None:
    r = PiiRedactor()
    event = r(None, "info", {"event": "sip.bye.sent", "call_id": "a84b4c76e66710@pc33.example.com",
                             "display": "Alice Room", "source": ("198.51.100.2", 5060),
                             "errors": ["bind 198.51.100.2 failed"], "meeting": "1001", "status": 200})
    text = json.dumps(event)
    for secret in ("a84b4c76e66710", "pc33", "Alice", "198.51.100.2"):
        assert secret not in text
    assert event["call_id"] == r.token("pii", "a84b4c76e66710@pc33.example.com")
    assert event["meeting"] == "1001" and event["status"] == 200 and event["event"] == "sip.bye.sent"


def test_configured_json_logs_redact_and_show_mode_does_not(capsys: pytest.CaptureFixture[str],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    try:
        configure_logging("json", "info")
        structlog.get_logger("t").info("sip.invite.received", call_id="x@203.0.113.9",
                                       detail="peer 203.0.113.9")
        logging.getLogger("aioice.test").warning("candidate 203.0.113.9:4000")
        err = capsys.readouterr().err
        assert "203.0.113.9" not in err and "sip.invite.received" in err
        (record,) = [r for r in caplog.records if r.name == "aioice.test"]  # stdlib: aiortc/aioice
        assert record.getMessage().startswith("candidate ip-") and "203.0.113.9" not in record.getMessage()
        configure_logging("json", "info", pii="show")
        structlog.get_logger("t").info("sip.invite.received", call_id="x@203.0.113.9")
        err = capsys.readouterr().err
        assert "x@203.0.113.9" in err and "log.pii.shown" in err
    finally:  # leave structlog as other tests expect it (defaults), not bound to capsys's stream
        structlog.reset_defaults()
        for h in logging.getLogger().handlers:
            for f in [f for f in h.filters if type(f).__name__ == "_StdlibRedactFilter"]:
                h.removeFilter(f)


def test_log_pii_is_a_validated_config_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from gateway.config import ConfigError, load_config

    (tmp_path / "policy.yaml").write_text("version: 1\n")
    path = tmp_path / "gateway.yaml"
    path.write_text('sip: {udp: "127.0.0.1:5060"}\npolicy: policy.yaml\n')
    assert load_config(path).log.pii == "redact"
    path.write_text('sip: {udp: "127.0.0.1:5060"}\npolicy: policy.yaml\nlog: {pii: show}\n')
    assert load_config(path).log.pii == "show"
    path.write_text('sip: {udp: "127.0.0.1:5060"}\npolicy: policy.yaml\nlog: {pii: hide}\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}:3:") and "log.pii" in str(err.value)
