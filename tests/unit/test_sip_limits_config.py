"""``sip.limits`` in gateway.yaml: defaults equal the endpoint's built-in limits, values reach the
endpoint, mistakes are reported with FILE:LINE:COL; the size and transaction limits act."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from sip.endpoint import SipEndpoint
from sip.ratelimit import DEFAULT_LIMITS, DEFAULT_PREPARSE, Limit, SipLimits
from sip.testing import Harness, options, statuses

BASE = 'sip:\n  udp: "127.0.0.1:5060"\npolicy: policy.yaml\n'


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "policy.yaml").write_text("version: 1\n")
    f = tmp_path / "gateway.yaml"
    f.write_text(text)
    return f


def test_defaults_are_the_built_in_limits(tmp_path: Path) -> None:
    limits = load_config(write(tmp_path, BASE)).sip.limits.to_sip()
    assert limits == SipLimits()
    assert (limits.invite, limits.options, limits.preparse) == \
        (DEFAULT_LIMITS["INVITE"], DEFAULT_LIMITS["OPTIONS"], DEFAULT_PREPARSE)
    fresh = SipEndpoint(clock=lambda: 0.0)
    assert fresh.rate_limiter is not None and fresh.rate_limiter.limits["INVITE"] == limits.invite
    assert fresh.preparse_gate is not None and fresh.preparse_gate.limit == DEFAULT_PREPARSE


def test_configured_values_reach_the_endpoint(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE.replace('"127.0.0.1:5060"\n', '"127.0.0.1:5060"\n'
        "  limits:\n    invite: {rate: 2, burst: 3, hard_limit: 4}\n"
        "    options: {rate: 0.5, burst: 1}\n    preparse: null\n"
        "    max_message_bytes: 4096\n    max_transactions: 100\n")))
    limits = cfg.sip.limits.to_sip()
    assert limits.invite == Limit(2.0, 3, 4) and limits.options == Limit(0.5, 1, 20)
    ep = SipEndpoint(clock=lambda: 0.0)
    ep.apply_limits(limits)
    assert ep.preparse_gate is None and ep.max_message_bytes == 4096 and ep.max_transactions == 100
    assert ep.rate_limiter is not None and ep.rate_limiter.limits["INVITE"] == Limit(2.0, 3, 4)


@pytest.mark.parametrize(("entry", "fragment"), [
    ("invite: {rate: 0, burst: 1}", "greater than 0"),
    ("options: {rate: 1, burst: 0}", "greater than or equal to 1"),
    ("preparse: {rate: 1, burst: 1, hard_limit: 3}", "hard_limit"),
    ("max_message_bytes: 100", "greater than or equal to 512"),
    ("max_transactions: 0", "greater than or equal to 1"),
    ("floods: 3", "floods"),
    ('invite: {rate: "fast", burst: 1}', "rate"),
])
def test_mistakes_are_reported_with_line_and_column(tmp_path: Path, entry: str, fragment: str) -> None:
    path = write(tmp_path, BASE.replace('"127.0.0.1:5060"\n', '"127.0.0.1:5060"\n  limits:\n    '
                                        + entry + "\n"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    (msg,) = err.value.messages
    assert msg.startswith(f"{path}:4:"), msg
    assert fragment in msg, msg


def test_max_message_bytes_drops_larger_messages_unparsed() -> None:
    h = Harness()
    h.endpoint.apply_limits(SipLimits(max_message_bytes=600))
    small = options("z9hG4bK-small", "small")
    big = options("z9hG4bK-big", "big")
    big.headers.add("X-Padding", "x" * 700)
    assert statuses(h.send(small)) == [200]
    assert statuses(h.send(big)) == []


def test_max_transactions_answers_503_without_keeping_state() -> None:
    h = Harness()
    h.endpoint.apply_limits(SipLimits(max_transactions=3, preparse=None,
                                      options=Limit(1000, 1000)))
    codes = [s for i in range(5) for s in statuses(h.send(options(f"z9hG4bK-t{i}", f"t{i}")))]
    assert codes == [200, 200, 200, 503, 503]
    h.advance(40)  # Timer J ends the three transactions
    assert statuses(h.send(options("z9hG4bK-later", "later"))) == [200]
