"""Helpers for control API tests: a self-signed certificate, HTTPS requests, OpenAPI checks.

``check_response`` validates a real response against ``docs/openapi.yaml``: it finds the
operation by method and path, the response by status, and validates the JSON body with
jsonschema (OpenAPI 3.1 schemas are JSON Schema 2020-12).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from jsonschema import Draft202012Validator

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"


def make_self_signed(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` (EC P-256, IP SAN ``host``, valid one day) into ``folder``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "roomgate test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def https_request(url: str, *, cafile: Path, token: str | None = None, method: str = "GET",
                  timeout: float = 10.0, body: Any = None) -> tuple[int, dict[str, str], Any]:
    """(status, headers, parsed JSON body or text) of one HTTPS request (``body``: sent as JSON),
    verifying ``cafile``."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, method=method, data=data)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            status, headers, raw = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, headers, raw = e.code, dict(e.headers), e.read()
    text = raw.decode()
    try:
        return status, headers, json.loads(text)
    except ValueError:
        return status, headers, text


@dataclass(frozen=True)
class ControlAccess:
    """What a test needs to reach a test gateway's control API: the loopback port it listens on,
    its self-signed certificate (the CA to trust) and one bearer token per scope, whose ids
    (``{id_prefix}-{scope}``) are what ``audit.command`` events name."""

    port: int
    cert: Path
    key: Path
    tokens: dict[str, str]
    id_prefix: str = "test"

    @classmethod
    def create(cls, folder: Path, *scopes: str, id_prefix: str = "test") -> ControlAccess:
        """A certificate in ``folder``, a free port and a fresh token for each of ``scopes``."""
        from gateway.api.tokens import new_token
        from tests.support.gateway_process import free_tcp_port

        cert, key = make_self_signed(folder)
        return cls(free_tcp_port(), cert, key, {scope: new_token() for scope in scopes}, id_prefix)

    def config(self) -> dict[str, Any]:
        """The gateway config's ``control`` block: TLS on loopback, each token stored hashed."""
        from gateway.api.tokens import MIN_ITERATIONS, hash_token

        return {"listen": f"127.0.0.1:{self.port}", "tls_cert": str(self.cert), "tls_key": str(self.key),
                "tokens": [{"id": f"{self.id_prefix}-{scope}", "scope": scope,
                            "hash": hash_token(token, iterations=MIN_ITERATIONS)}
                           for scope, token in self.tokens.items()]}

    def request(self, path: str, scope: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
        """One request with ``scope``'s token (``body``: JSON), its response checked against
        docs/openapi.yaml (:func:`check_response`)."""
        status, _, parsed = https_request(f"https://127.0.0.1:{self.port}{path}", cafile=self.cert,
                                          token=self.tokens[scope], method=method, body=body)
        check_response(method, path, status, parsed)
        return status, parsed


@cache
def openapi() -> dict[str, Any]:
    return yaml.safe_load(OPENAPI.read_text())


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if not ref:
        return node
    target: Any = openapi()
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return target


def operation(method: str, path: str) -> tuple[str, dict[str, Any]]:
    """(path template, operation object) for a concrete ``path``; AssertionError if undocumented."""
    for template, item in openapi()["paths"].items():
        pattern = "^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in item:
            return template, item[method.lower()]
    raise AssertionError(f"{method} {path} is not in docs/openapi.yaml")


def check_response(method: str, path: str, status: int, body: Any) -> None:
    """Assert that ``body`` is what docs/openapi.yaml documents for ``method path`` -> ``status``."""
    template, op = operation(method, path)
    responses = op["responses"]
    assert str(status) in responses, f"{method} {template}: status {status} is not documented"
    response = _resolve(responses[str(status)])
    schema = response["content"]["application/json"]["schema"]
    root = {"allOf": [schema], "components": openapi()["components"]}
    errors = sorted(Draft202012Validator(root).iter_errors(body), key=lambda e: list(e.path))
    assert not errors, f"{method} {template} {status}: " + "; ".join(
        f"{list(e.path)}: {e.message}" for e in errors[:5])
