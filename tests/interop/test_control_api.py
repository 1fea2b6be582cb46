"""The control API and /metrics against the real gateway process, over real HTTPS on loopback.

One gateway serves the whole module (with the control API, three tokens of different scopes,
and per-meeting metrics) to keep the suite fast; every response body is validated against
docs/openapi.yaml. A real pjsua2 caller provides a live participant.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.api.tokens import MIN_ITERATIONS, hash_token, new_token
from tests.support.audio import tone, write_wav
from tests.support.control_api import check_response, https_request, make_self_signed
from tests.support.gateway_process import GatewayProcess, free_tcp_port, start_gateway
from tests.support.pjsua import PjsuaResult, run_pjsua_call

pytestmark = pytest.mark.interop

PSEUDONYM = re.compile(r"[A-Z][a-z]+ [A-Z][a-z]+ \d{4}")
CALL_SECONDS = 60.0  # pjsua's own hangup time; the API ends the call long before


class Api:
    """The running gateway's control API: tokens by scope and a request helper."""

    def __init__(self, gw: GatewayProcess, port: int, cafile: Path, tokens: dict[str, str],
                 metrics_port: int) -> None:
        self.gw, self.port, self.cafile, self.tokens = gw, port, cafile, tokens
        self.metrics_port = metrics_port

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def request(self, path: str, *, scope: str | None = "read", token: str | None = None,
                method: str = "GET", check: bool = True) -> tuple[int, dict[str, str], Any]:
        token = token if token is not None else (self.tokens[scope] if scope else None)
        status, headers, body = https_request(self.url(path), cafile=self.cafile, token=token, method=method)
        if check:
            check_response(method, path, status, body)
        return status, headers, body

    def scrape(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            assert r.status == 200
            return r.read().decode()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    work = tmp_path_factory.mktemp("control_api")
    cert, key = make_self_signed(work / "tls")
    tokens = {scope: new_token() for scope in ("read", "operate", "admin")}
    port, metrics_port = free_tcp_port(), free_tcp_port()
    config = {
        "control": {"listen": f"127.0.0.1:{port}", "tls_cert": str(cert), "tls_key": str(key),
                    "tokens": [{"id": f"test-{scope}", "scope": scope,
                                "hash": hash_token(tok, iterations=MIN_ITERATIONS)}
                               for scope, tok in tokens.items()]},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}", "per_meeting": True},
    }
    gw = start_gateway(work / "gw", config=config)
    try:
        yield Api(gw, port, cert, tokens, metrics_port)
    finally:
        gw.stop()


def test_no_token_is_401_with_bearer_challenge(api: Api) -> None:
    status, headers, body = api.request("/api/v1/meetings", scope=None)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert body["error"]["code"] == "unauthorized"
    api.gw.wait_for_event("api.auth.refused", reason="no-token")


def test_wrong_token_is_401_and_never_logged(api: Api) -> None:
    wrong = new_token()
    status, headers, _ = api.request("/api/v1/meetings", token=wrong)
    assert status == 401
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    api.gw.wait_for_event("api.auth.refused", reason="invalid-token")
    assert not api.gw.logged(wrong)


def test_scope_too_small_is_403_and_audited(api: Api) -> None:
    status, headers, body = api.request("/api/v1/meetings/9999", scope="read", method="DELETE")
    assert status == 403
    assert 'error="insufficient_scope"' in headers["WWW-Authenticate"]
    assert body["error"]["code"] == "forbidden"
    event = api.gw.wait_for_event("audit.command", action="meeting.end", target="meeting/9999")
    assert event["token"] == "test-read" and event["result"] == "forbidden"
    log = api.gw.stderr_text()
    assert not any(tok in log for tok in api.tokens.values())


def test_plain_http_to_the_tls_port_fails_the_handshake(api: Api) -> None:
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as s:
        s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        s.settimeout(5)
        try:
            answer = s.recv(4096)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    assert not answer.startswith(b"HTTP/"), answer[:60]
    # And a TLS client that does not trust the certificate is refused too.
    with pytest.raises(ssl.SSLError):
        ctx = ssl.create_default_context()
        with socket.create_connection(("127.0.0.1", api.port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
            pass


def test_health_ready_and_unknown_meeting(api: Api) -> None:
    assert api.request("/api/v1/health")[0] == 200
    status, _, body = api.request("/api/v1/ready")
    assert status == 200 and body["checks"] == {"sip": True, "core": True}
    assert api.request("/api/v1/meetings/nope")[0] == 404
    status, _, body = api.request("/api/v1/meetings/nope", scope="admin", method="DELETE")
    assert status == 404
    assert api.gw.wait_for_event("audit.command", target="meeting/nope")["result"] == "not_found"


def test_a_call_is_listed_pseudonymous_scraped_and_ended_by_the_api(api: Api, tmp_path: Path) -> None:
    meeting = "4242"
    wav = write_wav(tmp_path / "caller.wav", tone(1000.0, 2.0, rate=8000), rate=8000)
    result: dict[str, PjsuaResult | BaseException] = {}

    def caller() -> None:
        try:
            result["call"] = run_pjsua_call(api.gw.sip_uri(meeting), codec="PCMU", play_wav=wav,
                                            seconds=CALL_SECONDS)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            result["call"] = exc

    thread = threading.Thread(target=caller, daemon=True)
    thread.start()
    try:
        answered = api.gw.wait_for_event("call.answered", timeout=30, meeting=meeting)

        # Listed, with counts per protocol.
        _, _, listing = api.request("/api/v1/meetings")
        (summary,) = [m for m in listing["meetings"] if m["id"] == meeting]
        assert summary["by_protocol"]["sip"] == 1 and summary["participants"] >= 1

        # The participant: a pseudonym, plain legacy leg, DTLS-SRTP toward the core, PCMU.
        status, _, detail = api.request(f"/api/v1/meetings/{meeting}")
        assert status == 200
        (p,) = detail["participants"]
        assert PSEUDONYM.fullmatch(p["pseudonym"]), p["pseudonym"]
        assert p["id"] == answered["participant"]
        assert (p["protocol"], p["transport"], p["codec"]) == ("sip", "udp", "PCMU")
        assert p["encryption"] == {"legacy": "plain", "webrtc": "dtls-srtp"}
        text = str(detail)
        assert "127.0.0.1" not in text and "pjsua" not in text.lower()

        # A scrape during the call has the series, and no label value is personal data.
        scrape = api.scrape()
        families = {f.name: f for f in text_string_to_metric_families(scrape)}
        participants = {tuple(sorted(s.labels.items())): s.value for s in families["roomgate_participants"].samples}
        assert participants[(("encryption", "plain"), ("protocol", "sip"))] == 1
        admitted = [s for s in families["roomgate_calls_admitted"].samples if s.name.endswith("_total")]
        assert any(s.labels == {"protocol": "sip", "transport": "udp"} and s.value >= 1 for s in admitted)
        assert "roomgate_rtp_packets" in families and "roomgate_rtp_dropped" in families
        per_meeting = families["roomgate_meeting_participants"].samples
        assert [s.labels["meeting"] for s in per_meeting] == [meeting]
        for family in families.values():
            for sample in family.samples:
                for value in sample.labels.values():
                    _assert_not_personal(value, p["pseudonym"])

        # operate may not end a meeting; admin may: the caller gets a BYE.
        assert api.request(f"/api/v1/meetings/{meeting}", scope="operate", method="DELETE")[0] == 403
        status, _, ended = api.request(f"/api/v1/meetings/{meeting}", scope="admin", method="DELETE")
        assert status == 200 and ended["ended_calls"] == 1
        thread.join(timeout=30)
        assert not thread.is_alive(), "pjsua did not see the call end"
    finally:
        thread.join(timeout=CALL_SECONDS + 40)
    call = result["call"]
    if isinstance(call, BaseException):
        raise call
    assert call.connected
    assert call.duration_connected < CALL_SECONDS  # ended by the gateway, not by its own timer
    bye = api.gw.wait_for_event("sip.bye.sent", reason="meeting ended by an operator")
    assert bye
    audit = api.gw.wait_for_event("audit.command", action="meeting.end", target=f"meeting/{meeting}",
                                  result="ok")
    assert audit["token"] == "test-admin"

    # The meeting and its pseudonyms are gone from memory and from the metrics.
    assert api.request(f"/api/v1/meetings/{meeting}")[0] == 404
    families = {f.name: f for f in text_string_to_metric_families(api.scrape())}
    assert families["roomgate_meeting_participants"].samples == []
    ended_samples = [s for s in families["roomgate_calls_ended"].samples
                     if s.name.endswith("_total") and s.labels.get("reason") == "api"]
    assert ended_samples and ended_samples[0].value >= 1


def _assert_not_personal(value: str, pseudonym: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        raise AssertionError(f"label value {value!r} is an IP address")
    lowered = value.lower()
    assert "pjsua" not in lowered and "roomgate-test" not in lowered, value  # user agent
    assert value != pseudonym and "sip:" not in lowered and "@" not in value, value
