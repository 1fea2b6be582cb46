"""``lobby: true`` with a real SIP caller and the control API over HTTPS: the caller is answered
and waits, is listed in the meeting's ``lobby``, and joins when an ``operate`` token admits it
(``POST /api/v1/meetings/{id}/participants/{pid}/admit``); a ``read`` token may not."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gateway.api.tokens import MIN_ITERATIONS, hash_token, new_token
from tests.support.control_api import check_response, https_request, make_self_signed
from tests.support.gateway_process import free_tcp_port, start_gateway
from tests.support.pjsua import PjsuaResult, run_pjsua_call

pytestmark = pytest.mark.interop

MEETING = "5005"


def test_lobby_caller_waits_until_admitted_by_the_api(tmp_path: Path) -> None:
    cert, key = make_self_signed(tmp_path / "tls")
    tokens = {scope: new_token() for scope in ("read", "operate")}
    port = free_tcp_port()
    config = {"control": {"listen": f"127.0.0.1:{port}", "tls_cert": str(cert), "tls_key": str(key),
                          "tokens": [{"id": f"test-{s}", "scope": s,
                                      "hash": hash_token(t, iterations=MIN_ITERATIONS)}
                                     for s, t in tokens.items()]}}
    gw = start_gateway(tmp_path / "gw", config=config, policy={"meetings": {MEETING: {"lobby": True}}})
    result: dict[str, PjsuaResult | BaseException] = {}

    def caller() -> None:
        try:
            result["call"] = run_pjsua_call(gw.sip_uri(MEETING), codec="PCMU", seconds=12, timeout=30)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            result["call"] = exc

    def api(path: str, scope: str, method: str = "GET") -> tuple[int, object]:
        status, _, body = https_request(f"https://127.0.0.1:{port}{path}", cafile=cert,
                                        token=tokens[scope], method=method)
        check_response(method, path, status, body)
        return status, body

    thread = threading.Thread(target=caller, daemon=True)
    thread.start()
    try:
        waiting = gw.wait_for_event("call.lobby", timeout=30, meeting=MEETING)
        assert not gw.events("call.answered", meeting=MEETING), "joined before being admitted"
        status, body = api(f"/api/v1/meetings/{MEETING}", "read")
        assert status == 200 and body["lobby"] == [{"id": waiting["lobby_id"], "protocol": "sip"}]  # type: ignore[index]
        admit = f"/api/v1/meetings/{MEETING}/participants/{waiting['lobby_id']}/admit"
        assert api(admit, "read", "POST")[0] == 403
        assert api(f"/api/v1/meetings/{MEETING}/participants/nobody/admit", "operate", "POST")[0] == 404
        status, body = api(admit, "operate", "POST")
        assert status == 200 and body == {"id": waiting["lobby_id"], "meeting": MEETING, "admitted": True}
        answered = gw.wait_for_event("call.answered", timeout=30, meeting=MEETING)
        assert answered["entry_by"] == "ivr"
        audit = gw.events("audit.command", action="participant.admit")
        assert audit and audit[-1]["token"] == "test-operate"
    finally:
        thread.join(timeout=60)
        gw.stop()
    call = result["call"]
    if isinstance(call, BaseException):
        raise call
    assert call.connected and call.final_status == 200, call
