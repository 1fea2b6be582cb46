"""``lobby: true`` with a real SIP caller and the control API over HTTPS: the caller is answered
and waits, is listed in the meeting's ``lobby``, and joins when an ``operate`` token admits it
(``POST /api/v1/meetings/{id}/participants/{pid}/admit``); a ``read`` token may not."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.support.control_api import ControlAccess
from tests.support.gateway_process import start_gateway
from tests.support.pjsua import PjsuaResult, run_pjsua_call

pytestmark = pytest.mark.interop

MEETING = "5005"


def test_lobby_caller_waits_until_admitted_by_the_api(tmp_path: Path) -> None:
    control = ControlAccess.create(tmp_path / "tls", "read", "operate")
    gw = start_gateway(tmp_path / "gw", config={"control": control.config()},
                       policy={"meetings": {MEETING: {"lobby": True}}})
    result: dict[str, PjsuaResult | BaseException] = {}

    def caller() -> None:
        try:
            result["call"] = run_pjsua_call(gw.sip_uri(MEETING), codec="PCMU", seconds=12, timeout=30)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            result["call"] = exc

    thread = threading.Thread(target=caller, daemon=True)
    thread.start()
    try:
        waiting = gw.wait_for_event("call.lobby", timeout=30, meeting=MEETING)
        assert not gw.events("call.answered", meeting=MEETING), "joined before being admitted"
        status, body = control.request(f"/api/v1/meetings/{MEETING}", "read")
        assert status == 200 and body["lobby"] == [{"id": waiting["lobby_id"], "protocol": "sip"}]  # type: ignore[index]
        admit = f"/api/v1/meetings/{MEETING}/participants/{waiting['lobby_id']}/admit"
        assert control.request(admit, "read", "POST")[0] == 403
        assert control.request(f"/api/v1/meetings/{MEETING}/participants/nobody/admit", "operate", "POST")[0] == 404
        status, body = control.request(admit, "operate", "POST")
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
