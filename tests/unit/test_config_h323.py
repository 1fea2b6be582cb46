"""The optional ``h323`` section of gateway.yaml (``h323.listen``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, HostPort, load_config

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "policy.yaml").write_text("version: 1\n")
    f = tmp_path / "gateway.yaml"
    f.write_text('sip: {udp: "127.0.0.1:5060", tcp: "127.0.0.1:5060"}\npolicy: policy.yaml\n' + text)
    return f


def test_h323_is_off_unless_configured(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).h323 is None


def test_h323_listen_and_default(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, 'h323: {listen: "127.0.0.1:11720"}\n')).h323.listen == \
        HostPort("127.0.0.1", 11720)  # type: ignore[union-attr]
    assert load_config(write(tmp_path, "h323: {}\n")).h323.listen == HostPort("127.0.0.1", 1720)  # type: ignore[union-attr]


@pytest.mark.parametrize(("text", "fragment"), [
    ('h323: {listen: "127.0.0.1:5060"}\n', "h323.listen: 127.0.0.1:5060 is also sip.tcp's address"),
    ('h323: {listen: "localhost:1720"}\n', "is not an IP address"),
    ('h323: {lisen: "127.0.0.1:1720"}\n', "lisen"),
])
def test_h323_errors_name_the_line(tmp_path: Path, text: str, fragment: str) -> None:
    f = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert any(m.startswith(f"{f}:3:") and fragment in m for m in err.value.messages), err.value.messages


def test_shipped_config_enables_h323_on_1720() -> None:
    cfg = load_config(ROOT / "config" / "gateway.yaml")
    assert cfg.h323 is not None and cfg.h323.listen == HostPort("127.0.0.1", 1720)
