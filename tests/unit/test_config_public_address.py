"""``media.public_address``: what SDP answers advertise (RFC 8866 5.7) behind a 1:1 NAT."""

from __future__ import annotations

from pathlib import Path

from gateway.config import load_config
from tests.unit.test_config_load import errors, write


def test_defaults_to_media_address(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, 'sip: {udp: "127.0.0.1:5060"}\npolicy: policy.yaml\n'))
    assert cfg.media.public_address is None
    assert cfg.media.advertised_address == cfg.media.address == "127.0.0.1"


def test_public_address_is_advertised(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, 'sip: {udp: "127.0.0.1:5060"}\npolicy: policy.yaml\n'
                                      'media: {address: "127.0.0.1", public_address: "203.0.113.5"}\n'))
    assert cfg.media.advertised_address == "203.0.113.5"
    assert cfg.media.address == "127.0.0.1"  # still what the RTP ports bind


def test_public_address_must_be_a_reachable_literal(tmp_path: Path) -> None:
    for bad in ("0.0.0.0", "gateway.example.com", "::"):
        errs = errors(write(tmp_path, 'sip: {udp: "127.0.0.1:5060"}\npolicy: policy.yaml\n'
                                      f'media: {{public_address: "{bad}"}}\n'))
        assert errs and any("public_address" in e for e in errs), (bad, errs)
