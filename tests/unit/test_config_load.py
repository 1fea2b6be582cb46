"""gateway.yaml: parsing, defaults, host:port and port ranges, errors with FILE:LINE:COL."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.config import (
    ConfigError,
    ConfigUnreadable,
    GatewayConfig,
    HostPort,
    PortRange,
    load_config,
    parse_hostport,
    parse_port_range,
)

ROOT = Path(__file__).resolve().parents[2]
POLICY = "version: 1\n"


def write(tmp_path: Path, text: str, policy: str | None = POLICY) -> Path:
    if policy is not None:
        (tmp_path / "policy.yaml").write_text(policy)
    f = tmp_path / "gateway.yaml"
    f.write_text(text)
    return f


def errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return err.value.messages


def test_shipped_gateway_yaml_is_valid() -> None:
    cfg = load_config(ROOT / "config" / "gateway.yaml")
    assert cfg.sip.udp == HostPort("127.0.0.1", 5060)
    assert cfg.sip.tcp == HostPort("127.0.0.1", 5060)
    assert cfg.http.listen == HostPort("127.0.0.1", 8080)
    assert cfg.media.ports == PortRange(20000, 29999)
    assert cfg.core.url is None
    assert cfg.policy == (ROOT / "config" / "policy.yaml").resolve()
    assert cfg.ice_addresses == ("127.0.0.1",)
    assert (cfg.log.format, cfg.log.level) == ("console", "info")


def test_minimal_config_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, 'sip: {udp: "127.0.0.1:5060"}\npolicy: policy.yaml\n'))
    assert cfg.sip.tcp is None
    assert cfg.http.listen == HostPort("127.0.0.1", 8080)
    assert cfg.media.address == "127.0.0.1"
    assert cfg.media.ports.pairs == 5000
    assert cfg.webrtc.ice_addresses is None
    assert cfg.ice_addresses == ("127.0.0.1",)
    assert cfg.policy == tmp_path.resolve() / "policy.yaml"


def test_policy_resolved_relative_to_config_file_not_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    f = write(sub, 'sip: {tcp: "127.0.0.1:0"}\npolicy: policy.yaml\n')
    monkeypatch.chdir(tmp_path)
    assert load_config(Path("etc/gateway.yaml")).policy == sub.resolve() / "policy.yaml"
    assert f.exists()


def test_ipv6_and_ice_addresses(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, 'sip: {udp: "[::1]:5062"}\nmedia: {address: "::1"}\n'
                                      'webrtc: {ice_addresses: ["::1", "127.0.0.1"]}\npolicy: policy.yaml\n'))
    assert cfg.sip.udp == HostPort("::1", 5062)
    assert str(cfg.sip.udp) == "[::1]:5062"
    assert cfg.ice_addresses == ("::1", "127.0.0.1")


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, 'sip: {udp: "127.0.0.1:5060"}\npolicy: policy.yaml\n'))
    with pytest.raises(ValidationError):
        cfg.media = cfg.media  # type: ignore[misc]


@pytest.mark.parametrize("text,ok", [
    ("127.0.0.1:5060", HostPort("127.0.0.1", 5060)),
    ("[::1]:0", HostPort("::1", 0)),
    ("0.0.0.0:5060", HostPort("0.0.0.0", 5060)),
])
def test_parse_hostport_ok(text: str, ok: HostPort) -> None:
    assert parse_hostport(text) == ok


@pytest.mark.parametrize("text,fragment", [
    ("127.0.0.1", "missing port"), ("::1:5060", "brackets"), ("[::1]5060", r"\[IPv6\]:PORT"),
    ("127.0.0.1:x", "not a number"), ("127.0.0.1:70000", "outside"), ("localhost:5060", "host names"),
    (5060, "as text"),
])
def test_parse_hostport_errors(text: object, fragment: str) -> None:
    with pytest.raises(Exception, match=fragment):
        parse_hostport(text)


@pytest.mark.parametrize("text,pairs", [("20000-29999", 5000), ("20000-20001", 1), ("20001-20004", 1)])
def test_parse_port_range(text: str, pairs: int) -> None:
    assert parse_port_range(text).pairs == pairs


@pytest.mark.parametrize("text,fragment", [
    ("30000-20000", "above"), ("20000", "LOW-HIGH"), ("20000-20000", "no even RTP port"),
    ("20001-20002", "no even RTP port"), ("0-10", "1-65535"), ("a-b", "LOW-HIGH"),
])
def test_parse_port_range_errors(text: str, fragment: str) -> None:
    with pytest.raises(Exception, match=fragment):
        parse_port_range(text)


def test_errors_have_file_line_col_and_key(tmp_path: Path) -> None:
    f = write(tmp_path, "sip:\n  udp: \"127.0.0.1:5060\"\n"
                        "media: {address: 0.0.0.0, ports: \"30000-20000\"}\n"
                        "log: {format: off}\npolicy: policy.yaml\n")
    msgs = errors(f)
    name = str(f)
    assert f"{name}:3:18: media.address: '0.0.0.0' is a wildcard" in msgs[0]
    assert msgs[1] == f"{name}:3:34: media.ports: '30000-20000': low port 30000 is above high port 20000"
    assert msgs[2] == f"{name}:4:15: log.format: 'off' is not one of console, json"


def test_unknown_key_reported_at_its_line(tmp_path: Path) -> None:
    f = write(tmp_path, 'sip: {udp: "127.0.0.1:5060"}\npolicy: policy.yaml\nhttp:\n  listen: "127.0.0.1:8080"\n  lisen: x\n')
    assert errors(f) == [f"{f}:5:3: http.lisen: unknown key (expected one of: listen)"]


def test_duplicate_key(tmp_path: Path) -> None:
    f = write(tmp_path, 'sip: {udp: "127.0.0.1:5060"}\npolicy: policy.yaml\npolicy: other.yaml\n')
    assert errors(f) == [f"{f}:3:1: duplicate key policy (first defined at line 2)"]


def test_wrong_indentation(tmp_path: Path) -> None:
    f = write(tmp_path, 'sip:\n  udp: "127.0.0.1:5060"\n   tcp: "127.0.0.1:5060"\npolicy: policy.yaml\n')
    (msg,) = errors(f)
    assert msg.startswith(f"{f}:3:")


def test_missing_policy_key_and_no_listener(tmp_path: Path) -> None:
    f = write(tmp_path, "sip: {udp: null}\n")
    assert errors(f) == [f"{f}:1:1: policy: required key is missing"]
    f = write(tmp_path, "sip: {udp: null}\npolicy: policy.yaml\n")
    (msg,) = errors(f)
    assert msg.startswith(f"{f}:1:6: sip: no SIP listener")


def test_sip_port_inside_media_range(tmp_path: Path) -> None:
    f = write(tmp_path, 'sip: {udp: "127.0.0.1:20002"}\nmedia: {ports: "20000-20003"}\npolicy: policy.yaml\n')
    (msg,) = errors(f)
    assert msg.startswith(f"{f}:1:12: sip.udp: port 20002 lies inside media.ports")


def test_core_url(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, 'sip: {udp: "127.0.0.1:5060"}\ncore: {url: "http://10.0.0.5:8080/"}\npolicy: policy.yaml\n'))
    assert cfg.core.url == "http://10.0.0.5:8080"
    f = write(tmp_path, 'sip: {udp: "127.0.0.1:5060"}\ncore: {url: "ftp://x"}\npolicy: policy.yaml\n')
    assert errors(f) == [f"{f}:2:13: core.url: 'ftp://x' is not an http:// or https:// URL with a host"]


def test_policy_errors_are_included(tmp_path: Path) -> None:
    f = write(tmp_path, 'sip: {udp: "127.0.0.1:5060"}\npolicy: policy.yaml\n',
              policy="version: 1\ndefaults: {legacy_media: plain}\n")
    (msg,) = errors(f)
    assert msg.startswith(f"{(tmp_path / 'policy.yaml').resolve()}:2:26: defaults.legacy_media: 'plain'")
    assert load_config(f, check_policy=False).policy.name == "policy.yaml"


def test_unreadable_policy_reported_at_policy_key(tmp_path: Path) -> None:
    f = write(tmp_path, 'sip: {udp: "127.0.0.1:5060"}\npolicy: nope.yaml\n', policy=None)
    (msg,) = errors(f)
    assert msg.startswith(f"{f}:2:9: policy: cannot read policy file")


def test_unreadable_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigUnreadable) as err:
        load_config(tmp_path / "missing.yaml")
    assert err.value.messages == [f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory"]


def test_policy_must_be_text(tmp_path: Path) -> None:
    f = write(tmp_path, 'sip: {udp: "127.0.0.1:5060"}\npolicy: 5\n')
    (msg,) = errors(f)
    assert msg.startswith(f"{f}:2:9: policy: expected the policy file's path as text")


def test_model_is_the_documented_shape() -> None:
    assert list(GatewayConfig.model_fields) == ["sip", "http", "media", "webrtc", "core", "policy", "log", "runtime",
                                               "control", "metrics", "h323"]
