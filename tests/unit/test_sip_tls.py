"""SIP over TLS without sockets: calls arriving on the TLS listener (transport, Contact, Via of our
BYE, ``sips:``), the TLS server context from PEM files, and the ``sip.tls*`` configuration keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, HostPort, load_config
from sip.message import SipRequest, SipResponse
from sip.testing import Harness, in_dialog, invite, parsed, statuses
from sip.transport import TlsConfigError, tls_context_factory
from tests.support.gateway_process import make_test_certificate

ANSWER = "v=0\r\no=roomgate 1 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\n" \
         "t=0 0\r\nm=audio 30000 RTP/SAVP 0\r\na=sendrecv\r\n"


def tls_harness() -> Harness:
    h = Harness()
    h.endpoint.add_listener("tls", "198.51.100.1", 5061)
    return h


@pytest.mark.parametrize(("scheme", "contact"), [
    ("sip", "<sip:meeting42@198.51.100.1:5061;transport=tls>"),
    ("sips", "<sips:meeting42@198.51.100.1:5061>"),  # RFC 5630 3.1.3: no transport=tls with sips
])
def test_call_over_tls_is_answered_with_a_tls_contact(scheme: str, contact: str) -> None:
    h = tls_harness()
    inv = invite(transport="TLS")
    if scheme == "sips":
        inv = SipRequest("INVITE", "sips:meeting42@198.51.100.1", inv.headers, inv.body)
    assert statuses(h.send(inv, transport="tls", connection=7)) == [100]
    (call,) = h.handler.offered
    assert call.transport == "tls" and call.request_uri.scheme == scheme
    out = h.act(lambda: call.accept(ANSWER))
    assert all(t.transport == "tls" and t.connection == 7 for t in out)
    (ok,) = parsed(out)
    assert isinstance(ok, SipResponse) and ok.status == 200
    assert ok.headers.get("Contact") == contact
    h.send(in_dialog("ACK", inv, ok.to_addr.tag or "", 1, "z9hG4bK-ack-1"), transport="tls", connection=7)
    out = h.act(lambda: call.hangup("done"))
    (bye,) = parsed(out)
    assert isinstance(bye, SipRequest) and bye.method == "BYE"
    assert (bye.headers.get("Via") or "").startswith("SIP/2.0/TLS 198.51.100.1:5061;")
    assert out[0].connection == 7  # back along the caller's TLS connection


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_test_certificate(tmp_path_factory.mktemp("tls"))


def test_context_factory_builds_tls12_context(cert_pair: tuple[Path, Path]) -> None:
    from OpenSSL import SSL

    cert, key = cert_pair
    ctx = tls_context_factory(cert, key).getContext()
    assert ctx.get_verify_mode() == SSL.VERIFY_NONE
    mutual = tls_context_factory(cert, key, ca_file=cert, verify_client=True).getContext()
    assert mutual.get_verify_mode() & SSL.VERIFY_PEER and mutual.get_verify_mode() & SSL.VERIFY_FAIL_IF_NO_PEER_CERT


def test_context_factory_errors_name_the_file(cert_pair: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = cert_pair
    with pytest.raises(TlsConfigError, match="cannot read TLS certificate .*missing.pem"):
        tls_context_factory(tmp_path / "missing.pem", key)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(TlsConfigError, match="not usable PEM"):
        tls_context_factory(garbage, key)
    other_cert, other_key = make_test_certificate(tmp_path, "other")
    with pytest.raises(TlsConfigError):
        tls_context_factory(cert, other_key)  # key does not match the certificate
    with pytest.raises(TlsConfigError, match="needs a CA file"):
        tls_context_factory(cert, key, verify_client=True)
    with pytest.raises(TlsConfigError, match="holds no certificate"):
        tls_context_factory(cert, key, ca_file=garbage, verify_client=True)
    assert other_cert.exists()


# -- gateway.yaml sip.tls* -----------------------------------------------------------------------

def write(tmp_path: Path, sip: str) -> Path:
    (tmp_path / "policy.yaml").write_text("version: 1\n")
    f = tmp_path / "gateway.yaml"
    f.write_text(f"sip:\n{sip}policy: policy.yaml\n")
    return f


def errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return err.value.messages


def test_tls_listener_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    make_test_certificate(tmp_path / "certs")
    f = write(tmp_path, '  tls: "127.0.0.1:5061"\n  tls_cert: certs/sip-cert.pem\n'
                        '  tls_key: certs/sip-key.pem\n  tls_ca: certs/sip-cert.pem\n'
                        '  tls_verify_client: true\n')
    cfg = load_config(f)
    assert cfg.sip.tls == HostPort("127.0.0.1", 5061) and cfg.sip.udp is None
    assert cfg.sip.tls_cert == (tmp_path / "certs" / "sip-cert.pem").resolve()
    assert cfg.sip.tls_ca == cfg.sip.tls_cert and cfg.sip.tls_verify_client


def test_tls_config_errors_have_lines(tmp_path: Path) -> None:
    f = write(tmp_path, '  udp: "127.0.0.1:5060"\n  tls: "127.0.0.1:5061"\n  tls_cert: nope.pem\n'
                        '  tls_verify_client: true\n')
    assert sorted(errors(f)) == [
        f"{f}:3:8: sip.tls: sip.tls needs sip.tls_key (a PEM file; `make run` makes a development pair)",
        f"{f}:4:13: sip.tls_cert: cannot read {tmp_path.resolve() / 'nope.pem'}: No such file or directory",
        (f"{f}:5:22: sip.tls_verify_client: verifying client certificates needs sip.tls_ca "
         "(the CA that issues them)"),
    ]
    g = write(tmp_path, '  udp: "127.0.0.1:5060"\n  tls_cert: 5\n')
    assert any("sip.tls_cert" in m and "as text" in m for m in errors(g))
    h = write(tmp_path, '  udp: "127.0.0.1:5060"\n  tls_key: k.pem\n')
    assert errors(h) == [f"{h}:3:12: sip.tls_key: sip.tls_key is set but sip.tls (the TLS listener) is not"]
