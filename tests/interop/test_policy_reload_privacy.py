"""Issue 7, reload and privacy, against the real gateway process with real pjsua2 callers:

* policy reload by file change, SIGHUP and ``POST /api/v1/policy/reload``: a broken file is refused
  (``FILE:LINE:COL`` errors logged, the old policy stays, the call in progress too); a valid change
  takes effect for new calls; tightening ``legacy_media`` ends a plain call with a BYE whose
  ``Reason:`` names the rule (read by the pjsua agent from the BYE itself);
* log redaction: with ``log.format: json`` no log line holds 127.0.0.1 (the callers' *and* the
  gateway's own address: everything IP-like is redacted, see gateway/logs.py), while the same
  gateway with ``log.pii: show`` does log it -- so the check can fail;
* an ended meeting leaves nothing: 404 from the API, an empty page roster, and no file in the
  gateway's working directory mentions the meeting.
"""

from __future__ import annotations

import json
import secrets
import signal
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.api.tokens import MIN_ITERATIONS, hash_token, new_token
from tests.support.audio import tone, write_wav
from tests.support.control_api import check_response, https_request, make_self_signed
from tests.support.gateway_process import GatewayProcess, build_policy, free_tcp_port
from tests.support.pjsua import PjsuaResult, run_pjsua_call

pytestmark = pytest.mark.interop

CALL_SECONDS = 60.0  # pjsua's own hangup time; the gateway ends the call long before


class Control:
    """A gateway started with the control API (admin token) and /metrics."""

    def __init__(self, gw: GatewayProcess, port: int, cafile: Path, token: str, metrics_port: int) -> None:
        self.gw, self.port, self.cafile, self.token, self.metrics_port = gw, port, cafile, token, metrics_port

    def request(self, path: str, method: str = "GET") -> tuple[int, Any]:
        status, _, body = https_request(f"https://127.0.0.1:{self.port}{path}", cafile=self.cafile,
                                        token=self.token, method=method)
        check_response(method, path, status, body)
        return status, body

    def reloads(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return {s.labels["result"]: s.value
                for f in text_string_to_metric_families(text) if f.name == "roomgate_policy_reloads"
                for s in f.samples if s.name.endswith("_total")}


def _start(gateway_factory: Callable[..., GatewayProcess], tmp_path: Path, **kwargs: Any) -> Control:
    cert, key = make_self_signed(tmp_path / "api-tls")
    token = new_token()
    port, metrics_port = free_tcp_port(), free_tcp_port()
    config = {
        "control": {"listen": f"127.0.0.1:{port}", "tls_cert": str(cert), "tls_key": str(key),
                    "tokens": [{"id": "test-admin", "scope": "admin",
                                "hash": hash_token(token, iterations=MIN_ITERATIONS)}]},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        **kwargs.pop("config", {}),
    }
    gw = gateway_factory(config=config, **kwargs)
    return Control(gw, port, cert, token, metrics_port)


def _call_in_background(uri: str, wav: Path, **kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def caller() -> None:
        try:
            result["call"] = run_pjsua_call(uri, codec="PCMU", play_wav=wav, seconds=CALL_SECONDS, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            result["call"] = exc

    thread = threading.Thread(target=caller, daemon=True)
    thread.start()
    return thread, result


def _finished(thread: threading.Thread, result: dict[str, Any]) -> PjsuaResult:
    thread.join(timeout=CALL_SECONDS + 40)
    assert not thread.is_alive(), "pjsua did not see the call end"
    call = result["call"]
    if isinstance(call, BaseException):
        raise call
    return call


def _write_policy(gw: GatewayProcess, policy: dict[str, Any] | None = None, *, text: str | None = None) -> None:
    gw.policy_path.write_text(text if text is not None else yaml.safe_dump(build_policy(policy), sort_keys=False))


def test_reload_refuses_bad_files_applies_good_ones_and_ends_tightened_calls(
        gateway_factory: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    meeting = "5101"
    ctl = _start(gateway_factory, tmp_path, policy={"meetings": {meeting: {}}})
    gw = ctl.gw
    wav = write_wav(tmp_path / "caller.wav", tone(1000.0, 2.0, rate=8000), rate=8000)
    thread, result = _call_in_background(gw.sip_uri(meeting), wav)
    try:
        gw.wait_for_event("call.answered", timeout=30, meeting=meeting)

        # A broken file (by file change): refused with FILE:LINE:COL errors; the call stays.
        _write_policy(gw, text=f'version: 1\nmeetings:\n  "{meeting}": {{legacy_media: require-tls}}\n')
        failed = gw.wait_for_event("policy.reload.failed", trigger="file-change")
        assert any(e.startswith(f"{gw.policy_path}:3:") and "legacy_media" in e for e in failed["errors"]), failed
        # ... and by SIGHUP, and by the API (422, audited): the same refusal.
        gw.proc.send_signal(signal.SIGHUP)
        gw.wait_for_event("policy.reload.failed", trigger="sighup")
        status, body = ctl.request("/api/v1/policy/reload", method="POST")
        assert status == 422 and body["reloaded"] is False and body["errors"]
        audit = gw.wait_for_event("audit.command", action="policy.reload", target="policy")
        assert audit["token"] == "test-admin" and audit["result"] == "bad_request"
        assert gw.events("call.ended") == [] and thread.is_alive(), "a refused reload touched the call"

        # A valid file that tightens the meeting: swapped in, and the plain call no longer qualifies.
        _write_policy(gw, {"meetings": {meeting: {"legacy_media": "require-srtp"}}})
        reloaded = gw.wait_for_event("policy.reloaded", trigger="file-change")
        assert reloaded["ended_calls"] == 1
        ended = gw.wait_for_event("call.ended_by_policy", meeting=meeting)
        assert ended["rule"] == f'meetings."{meeting}".legacy_media=require-srtp'
    finally:
        call = _finished(thread, result)
    assert call.connected and call.duration_connected < CALL_SECONDS, "the gateway did not end the call"
    bye_reason = call.raw.get("bye_reason") or ""
    assert "legacy_media=require-srtp" in bye_reason and meeting in bye_reason, bye_reason
    bye = [e for e in gw.events("sip.bye.sent") if "legacy_media=require-srtp" in (e.get("reason") or "")]
    assert bye, "no sip.bye.sent naming the rule"

    # The new policy is in force for new calls: a plain offer is now refused with 488.
    refused = run_pjsua_call(gw.sip_uri(meeting), codec="PCMU", seconds=1.0, timeout=15.0)
    assert not refused.connected and refused.final_status == 488, (refused.final_status, refused.warning)
    assert "require-srtp" in (refused.warning or "")
    # SIGHUP with a valid file reloads too.
    gw.proc.send_signal(signal.SIGHUP)
    gw.wait_for_event("policy.reloaded", trigger="sighup")
    counts = ctl.reloads()
    assert counts.get("ok", 0) >= 2 and counts.get("failed", 0) >= 3, counts

    # Redaction: nothing in the JSON log is 127.0.0.1 -- not the callers, not Call-IDs, not our own
    # listen address -- yet the log still shows *that* there were addresses, as tokens.
    log_text = gw.stderr_text()
    assert "127.0.0.1" not in log_text, [ln for ln in log_text.splitlines() if "127.0.0.1" in ln][:3]
    assert '"ip-' in log_text or " ip-" in log_text or "//ip-" in log_text
    call_ids = [e["call_id"] for e in gw.events("sip.bye.sent")]
    assert call_ids and all(c.startswith("pii-") for c in call_ids), call_ids


def test_log_pii_show_logs_addresses(gateway_factory: Callable[..., GatewayProcess]) -> None:
    """The counterpart that keeps the redaction assertion honest: with ``log.pii: show`` the same
    gateway writes 127.0.0.1 into its log (its core URL at start), so the check above can fail."""
    gw = gateway_factory(config={"log": {"pii": "show"}})
    gw.wait_for_event("gateway.ready")
    assert "127.0.0.1" in gw.stderr_text()
    assert gw.events("log.pii.shown")


def test_ended_meeting_leaves_no_state_and_nothing_on_disk(
        gateway_factory: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    meeting = "z" + secrets.token_hex(6)  # in no file the test writes: any hit on disk is the gateway's
    ctl = _start(gateway_factory, tmp_path)
    gw = ctl.gw
    wav = write_wav(tmp_path / "caller.wav", tone(1000.0, 2.0, rate=8000), rate=8000)
    thread, result = _call_in_background(gw.sip_uri(meeting), wav)
    try:
        answered = gw.wait_for_event("call.answered", timeout=30, meeting=meeting)
        status, detail = ctl.request(f"/api/v1/meetings/{meeting}")
        assert status == 200 and [p["id"] for p in detail["participants"]] == [answered["participant"]]
        _, page_roster = gw.get(f"/m/{meeting}/participants")
        shown = json.loads(page_roster)["participants"]
        assert [(p["leg"], p["encryption"]) for p in shown] == [("sip", "plain")]
        assert ctl.request(f"/api/v1/meetings/{meeting}", method="DELETE")[0] == 200
    finally:
        call = _finished(thread, result)
    assert call.connected and call.duration_connected < CALL_SECONDS
    gw.wait_for_event("bridge.session.closed", timeout=15, meeting=meeting)

    # Gone from the API, the meeting list and the page's roster (the core dropped the meeting).
    assert ctl.request(f"/api/v1/meetings/{meeting}")[0] == 404
    _, listing = ctl.request("/api/v1/meetings")
    assert meeting not in [m["id"] for m in listing["meetings"]]
    status, page_roster = gw.get(f"/m/{meeting}/participants")
    assert status == 200 and json.loads(page_roster)["participants"] == []

    # Nothing on disk: no file under the gateway's working directory mentions the meeting, apart
    # from the stderr log the harness keeps (logs are the operator's stream, not meeting state).
    hits = []
    for path in gw.workdir.rglob("*"):
        if path.is_file() and path != gw.stderr_path and meeting.encode() in path.read_bytes():
            hits.append(path)
    assert hits == [], hits
    assert meeting in gw.stderr_text()  # the search itself works: the id is findable where it is
