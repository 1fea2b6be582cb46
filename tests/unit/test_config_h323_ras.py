"""``h323.ras`` and ``h323.gatekeeper`` in gateway.yaml (RAS, H.225.0 section 7.7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, HostPort, load_config
from tests.unit.test_config_h323 import write


def test_register_to_a_gatekeeper(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, 'h323:\n  ras: {gatekeeper: "192.0.2.10:1719", aliases: [roomgate, "1000"],'
                                      ' prefixes: ["10"], discover: true}\n'))
    assert cfg.h323 is not None and cfg.h323.ras is not None and cfg.h323.gatekeeper is None
    ras = cfg.h323.ras
    assert ras.listen == HostPort("127.0.0.1", 1719) and ras.gatekeeper == HostPort("192.0.2.10", 1719)
    assert ras.aliases == ["roomgate", "1000"] and ras.prefixes == ["10"] and ras.discover
    assert ras.time_to_live == 300


def test_own_gatekeeper(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, 'h323:\n  gatekeeper: own\n  ras: {listen: "127.0.0.1:11719", time_to_live: 60}\n'))
    assert cfg.h323 is not None and cfg.h323.gatekeeper == "own"
    assert cfg.h323.ras is not None and cfg.h323.ras.time_to_live == 60


@pytest.mark.parametrize(("text", "fragment"), [
    ('h323: {gatekeeper: own}\n', "gatekeeper: own needs an h323.ras section"),
    ('h323: {gatekeeper: theirs, ras: {listen: "127.0.0.1:1719"}}\n', "gatekeeper"),
    ('h323: {ras: {listen: "127.0.0.1:1719"}}\n', "set ras.gatekeeper"),
    ('h323: {gatekeeper: own, ras: {gatekeeper: "127.0.0.1:2000"}}\n', "cannot also register"),
    ('h323: {gatekeeper: own, ras: {listen: "127.0.0.1:5060"}}\n', "is also sip.udp's address"),
    ('h323: {ras: {gatekeeper: "127.0.0.1:2000", prefixes: ["1a"]}}\n', "prefixes"),
    ('h323: {ras: {gatekeeper: "127.0.0.1:2000", time_to_live: 1}}\n', "time_to_live"),
    ('h323: {ras: {gatekeeper: "gk.example:1719"}}\n', "is not an IP address"),
])
def test_ras_errors_name_the_line(tmp_path: Path, text: str, fragment: str) -> None:
    f = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert any(m.startswith(f"{f}:3:") and fragment in m for m in err.value.messages), err.value.messages
