"""Control API tokens: hash format, verification, scopes, the CLI, and the config section."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.api.tokens import (
    MIN_ITERATIONS,
    TokenError,
    TokenRecord,
    TokenVerifier,
    hash_token,
    new_token,
    parse_hash,
    scope_allows,
    verify_token,
)
from gateway.cli import main
from gateway.config import ConfigError, load_config


def test_hash_round_trip_and_format() -> None:
    token = new_token()
    hashed = hash_token(token, iterations=MIN_ITERATIONS)
    scheme, iterations, _salt, _digest = hashed.split("$")
    assert (scheme, iterations) == ("pbkdf2-sha256", str(MIN_ITERATIONS))
    assert token not in hashed
    assert verify_token(token, hashed)
    assert not verify_token(token + "x", hashed)
    assert not verify_token(new_token(), hashed)
    assert hash_token(token, iterations=MIN_ITERATIONS) != hashed  # salted


@pytest.mark.parametrize("bad", ["", "pbkdf2-sha256$100000$abc", "bcrypt$x$y$z",
                                 "pbkdf2-sha256$10$c2FsdHNhbHQ$" + "A" * 43,
                                 "pbkdf2-sha256$100000$c2FsdHNhbHQ$c2hvcnQ"])
def test_malformed_hashes_are_refused(bad: str) -> None:
    with pytest.raises(TokenError):
        parse_hash(bad)


def test_scopes_are_ordered_least_privilege() -> None:
    assert scope_allows("admin", "operate") and scope_allows("operate", "read")
    assert not scope_allows("read", "operate") and not scope_allows("operate", "admin")


def test_verifier_finds_the_record_and_caches() -> None:
    tokens = {s: new_token() for s in ("read", "admin")}
    verifier = TokenVerifier([TokenRecord(f"t-{s}", s, hash_token(t, iterations=MIN_ITERATIONS))  # type: ignore[arg-type]
                              for s, t in tokens.items()])

    async def run() -> None:
        assert (await verifier.verify(tokens["admin"])).id == "t-admin"  # type: ignore[union-attr]
        assert (await verifier.verify(tokens["read"])).scope == "read"  # type: ignore[union-attr]
        assert await verifier.verify("rgt_wrong") is None
        assert await verifier.verify("") is None
        assert len(verifier._known) == 3
        assert all(tokens["admin"].encode() not in k for k in verifier._known)

    loop = asyncio.new_event_loop()  # never made current: asyncio.run() would unset the loop for later tests
    try:
        loop.run_until_complete(run())
    finally:
        loop.close()


def test_token_new_prints_token_once_and_a_hash_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "new", "--scope", "operate", "--id", "ops"]) == 0
    out = capsys.readouterr().out
    token = out.split("store it now): ", 1)[1].split()[0]
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("- {id: ops"))
    assert "scope: operate" in line and token not in line
    hashed = line.split('hash: "', 1)[1].split('"', 1)[0]
    assert verify_token(token, hashed)
    assert main(["token", "new", "--scope", "metrics"]) == 0
    assert "token_hash:" in capsys.readouterr().out
    assert main(["token", "new", "--scope", "root"]) == 2


def _write(tmp: Path, control: str) -> Path:
    (tmp / "policy.yaml").write_text("version: 1\n")
    (tmp / "c.pem").write_text("x")
    (tmp / "k.pem").write_text("x")
    f = tmp / "gateway.yaml"
    f.write_text('sip: {udp: "127.0.0.1:5060"}\npolicy: policy.yaml\n' + control)
    return f


def test_control_without_tokens_is_refused_at_its_line(tmp_path: Path) -> None:
    f = _write(tmp_path, 'control:\n  listen: "127.0.0.1:8443"\n  tls_cert: c.pem\n  tls_key: k.pem\n')
    with pytest.raises(ConfigError) as err:
        load_config(f)
    (msg,) = err.value.messages
    assert msg.startswith(f"{f}:4:3: control.tokens") and "no token configured" in msg


def test_control_section_loads_with_relative_paths(tmp_path: Path) -> None:
    h = hash_token(new_token(), iterations=MIN_ITERATIONS)
    f = _write(tmp_path, f'control:\n  listen: "127.0.0.1:8443"\n  tls_cert: c.pem\n  tls_key: k.pem\n'
                         f'  tokens: [{{id: a, scope: admin, hash: "{h}"}}]\n')
    cfg = load_config(f)
    assert cfg.control is not None and cfg.control.tls_cert == (tmp_path / "c.pem").resolve()
    assert cfg.metrics is None


def test_control_bad_token_entries(tmp_path: Path) -> None:
    f = _write(tmp_path, 'control:\n  listen: "127.0.0.1:8443"\n  tls_cert: nope.pem\n  tls_key: k.pem\n'
                         '  tokens: [{id: "a b", scope: root, hash: "plain-text-token"}]\n')
    with pytest.raises(ConfigError) as err:
        load_config(f)
    text = "\n".join(err.value.messages)
    assert "control.tokens[0].id" in text and "control.tokens[0].scope" in text
    assert "control.tokens[0].hash" in text


def test_metrics_off_loopback_needs_a_token(tmp_path: Path) -> None:
    f = _write(tmp_path, 'metrics: {listen: "0.0.0.0:9464"}\n')
    with pytest.raises(ConfigError) as err:
        load_config(f)
    (msg,) = err.value.messages
    assert "metrics.listen" in msg and "token_hash" in msg
    f = _write(tmp_path, 'metrics: {per_meeting: true}\n')
    cfg = load_config(f)
    assert cfg.metrics is not None and str(cfg.metrics.listen) == "127.0.0.1:9464"
