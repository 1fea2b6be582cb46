"""The roomgate CLI: exit codes (0 valid, 1 invalid, 2 unreadable/usage) and output."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from gateway import __version__
from gateway.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_POLICY = ROOT / "config" / "policy.yaml"
SHIPPED_CONFIG = ROOT / "config" / "gateway.yaml"

GOOD = "version: 1\nunknown_meetings: defaults\nmeetings:\n  a: {}\n  b: {}\n  c: {legacy_media: require-srtp, protocols: [sip]}\n"
BAD = "version: 1\nmeetings:\n  a: {legacy_media: require-srpt}\n  b: {protocols: [sip], colour: red}\n"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"roomgate {__version__}"


def test_usage_error_is_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["policy"]) == 2
    assert main(["frobnicate"]) == 2
    assert "usage" in capsys.readouterr().err


def test_policy_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "policy.yaml").write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    assert main(["policy", "check", "policy.yaml"]) == 0
    out = capsys.readouterr()
    assert out.out == "policy.yaml: OK: version 1, 3 meetings, unknown meetings use defaults\n"
    assert out.err == ""


def test_policy_check_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "policy.yaml").write_text(BAD)
    monkeypatch.chdir(tmp_path)
    assert main(["policy", "check", "policy.yaml"]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.splitlines() == [
        "policy.yaml:3:21: meetings.a.legacy_media: 'require-srpt' is not one of allow-plain, prefer-srtp, require-srtp",
        "policy.yaml:4:25: meetings.b.colour: unknown key (expected one of: legacy_media, protocols, signaling, audio_codecs, video_codecs, video, max_participants, pin, pin_attempts, lobby, anonymous_names, allowed_networks, recording, dtmf_relay, profile)",
    ]


def test_policy_check_syntax_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("version: 1\nmeetings:\n  a:\n    legacy_media: allow-plain\n   protocols: [sip]\n")
    assert main(["policy", "check", str(f)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{f}:5:")


def test_policy_check_unreadable_is_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["policy", "check", str(tmp_path)]) == 2


def test_shipped_files_check_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(SHIPPED_POLICY)]) == 0
    assert main(["config", "check", str(SHIPPED_CONFIG)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("OK: version 1, 4 meetings, unknown meetings use defaults")
    assert out[1].startswith(f"{SHIPPED_CONFIG}: OK: sip/udp 127.0.0.1:5060, sip/tcp 127.0.0.1:5060, "
                             "sip/tls 127.0.0.1:5061, http 127.0.0.1:8080")


def test_config_check_reports_config_and_policy_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "policy.yaml").write_text(BAD)
    g = tmp_path / "gateway.yaml"
    g.write_text('sip: {udp: "127.0.0.1:5060"}\nlog: {format: off}\npolicy: policy.yaml\n')
    assert main(["config", "check", str(g)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"{g}:2:15: log.format: 'off' is not one of console, json"
    # The policy is only checked once the config itself is valid.
    g.write_text('sip: {udp: "127.0.0.1:5060"}\npolicy: policy.yaml\n')
    assert main(["config", "check", str(g)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith(f"{(tmp_path / 'policy.yaml').resolve()}:") for line in err)


def test_config_check_unreadable_is_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(tmp_path / "nope.yaml")]) == 2


def test_run_invalid_config_exits_1_without_importing_app(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    g = tmp_path / "gateway.yaml"
    g.write_text("sip: {udp: 127.0.0.1}\npolicy: policy.yaml\n")
    (tmp_path / "policy.yaml").write_text("version: 1\n")
    boom = types.ModuleType("gateway.app")
    boom.run = lambda config: pytest.fail("app.run must not be called on a bad config")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gateway.app", boom)
    monkeypatch.setattr("gateway.app", boom, raising=False)
    assert main(["run", "--config", str(g)]) == 1
    assert capsys.readouterr().err.startswith(f"{g}:1:12: sip.udp:")
    assert main(["run", "--config", str(tmp_path / "nope.yaml")]) == 2


def test_run_calls_app_run_with_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    fake = types.ModuleType("gateway.app")
    fake.run = lambda config: seen.append(config) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gateway.app", fake)
    import gateway

    monkeypatch.setattr(gateway, "app", fake, raising=False)
    assert main(["run", "--config", str(SHIPPED_CONFIG)]) == 0
    (cfg,) = seen
    assert cfg.policy == SHIPPED_POLICY.resolve()


def test_checks_do_not_log_to_stdout(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(GOOD)
    assert main(["policy", "check", str(f)]) == 0
    out = capfd.readouterr()
    assert "policy.loaded" not in out.out + out.err


def _installed_script() -> Path:
    script = Path(sys.executable).parent / "roomgate"
    assert script.exists(), f"console script missing at {script}: pip install -e . in this venv"
    return script


def test_installed_console_script(tmp_path: Path) -> None:
    script = _installed_script()
    ok = subprocess.run([str(script), "policy", "check", str(SHIPPED_POLICY)],
                        capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"{SHIPPED_POLICY}: OK: version 1, 4 meetings, unknown meetings use defaults\n"
    bad = tmp_path / "policy.yaml"
    bad.write_text(BAD)
    res = subprocess.run([str(script), "policy", "check", "policy.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 1
    assert res.stderr.splitlines()[0].startswith("policy.yaml:3:21: meetings.a.legacy_media:")
    missing = subprocess.run([str(script), "policy", "check", "missing.yaml"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 2
