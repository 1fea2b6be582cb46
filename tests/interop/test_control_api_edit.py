"""Editing a running meeting through the control API (issue 7), with real callers and real HTTPS.

One gateway (policy: meeting 6006 with PIN 1111), one pjsua2 caller A in the meeting playing
1000 Hz, and an aiortc WHEP subscriber listening to the meeting's mix. Then, with an ``operate``
token (a ``read`` token gets 403 for each command), and every response validated against
docs/openapi.yaml:

* lock: a second pjsua caller with the right PIN is refused (403, ``Warning`` naming
  ``locked by operator``) while A stays; unlock;
* PIN change: a caller with the old PIN is refused, one with the new PIN joins; neither PIN shows
  in the gateway's log;
* mute: the subscriber no longer hears A's tone (FFT), the roster says ``muted: true``; unmute:
  the tone is back;
* once A (the last caller) is removed, the edits are dropped: the policy's PIN admits again.

Each command is an ``audit.command`` event with its action name and the operate token's id.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.ice import use_host_addresses
from tests.interop.test_walking_skeleton import run_on_private_loop
from tests.support.audio import analyse, assert_tone, tone, write_wav
from tests.support.control_api import ControlAccess
from tests.support.gateway_process import (
    GatewayProcess,
    build_policy,
    start_gateway,
)
from tests.support.pjsua import PjsuaResult, run_pjsua_call
from tests.support.webrtc_client import subscribe

pytestmark = pytest.mark.interop

MEETING = "6006"
OLD_PIN, NEW_PIN = "1111", "2468"
TONE_HZ = 1000.0
CALL_SECONDS = 90.0  # A's own hangup time; the test removes A long before


def _call(gw: GatewayProcess, dialled: str, **kwargs: Any) -> PjsuaResult:
    return run_pjsua_call(gw.sip_uri(dialled), codec="PCMU", timeout=20, **kwargs)


async def _scenario(gw: GatewayProcess, api: ControlAccess, tmp_path: Path) -> None:
    use_host_addresses(["127.0.0.1"])
    wav = write_wav(tmp_path / "a.wav", tone(TONE_HZ, 2.0, rate=8000), rate=8000)
    a_task = asyncio.ensure_future(asyncio.to_thread(
        _call, gw, f"{MEETING}*{OLD_PIN}", play_wav=wav, seconds=CALL_SECONDS))
    answered = await asyncio.to_thread(gw.wait_for_event, "call.answered", 30, meeting=MEETING)
    pid = answered["participant"]
    listener = await subscribe(gw.http_url, MEETING, video=False)
    try:
        await asyncio.sleep(2.0)  # the WHEP leg settles
        heard = await listener.record(3.0)
        spectrum = assert_tone(heard, 48000, TONE_HZ, min_dbfs=-35)
        print(f"before mute: peak {spectrum.peak_hz:.0f} Hz at {spectrum.rms_dbfs:.1f} dBFS")

        # -- lock ------------------------------------------------------------------------------
        lock = f"/api/v1/meetings/{MEETING}/lock"
        assert (await asyncio.to_thread(api.request, lock, "read", "POST"))[0] == 403
        status, body = await asyncio.to_thread(api.request, lock, "operate", "POST")
        assert (status, body) == (200, {"id": MEETING, "locked": True})
        status, detail = await asyncio.to_thread(api.request, f"/api/v1/meetings/{MEETING}", "read")
        assert detail["locked"] is True
        refused = await asyncio.to_thread(_call, gw, f"{MEETING}*{OLD_PIN}", seconds=2)
        assert not refused.connected and refused.final_status == 403, refused
        assert refused.warning is not None and "locked by operator" in refused.warning, refused.warning
        print(f"locked: second caller got {refused.final_status} Warning {refused.warning!r}")
        status, body = await asyncio.to_thread(api.request, f"/api/v1/meetings/{MEETING}/unlock",
                                               "operate", "POST")
        assert (status, body) == (200, {"id": MEETING, "locked": False})

        # -- PIN change -------------------------------------------------------------------------
        pin = f"/api/v1/meetings/{MEETING}/pin"
        assert (await asyncio.to_thread(api.request, pin, "read", "PUT", {"pin": NEW_PIN}))[0] == 403
        assert (await asyncio.to_thread(api.request, pin, "operate", "PUT", {"pin": "12ab"}))[0] == 400
        status, body = await asyncio.to_thread(api.request, pin, "operate", "PUT", {"pin": NEW_PIN})
        assert (status, body) == (200, {"id": MEETING, "pin_changed": True})
        old = await asyncio.to_thread(_call, gw, f"{MEETING}*{OLD_PIN}", seconds=2)
        assert not old.connected and old.final_status == 403 and "wrong PIN" in (old.warning or ""), old
        new = await asyncio.to_thread(_call, gw, f"{MEETING}*{NEW_PIN}", seconds=2)
        assert new.connected and new.final_status == 200, new
        print(f"PIN changed: old PIN -> {old.final_status}, new PIN -> {new.final_status}")

        # -- mute / unmute ----------------------------------------------------------------------
        mute = f"/api/v1/meetings/{MEETING}/participants/{pid}/mute"
        assert (await asyncio.to_thread(api.request, mute, "read", "POST"))[0] == 403
        assert (await asyncio.to_thread(
            api.request, f"/api/v1/meetings/{MEETING}/participants/p-nobody/mute", "operate", "POST"))[0] == 404
        status, body = await asyncio.to_thread(api.request, mute, "operate", "POST")
        assert (status, body) == (200, {"id": pid, "meeting": MEETING, "protocol": "legacy", "muted": True})
        await asyncio.sleep(0.5)
        muted = analyse(await listener.record(3.0), 48000, skip_seconds=0.2)
        print(f"muted: {muted.rms_dbfs:.1f} dBFS, peak {muted.peak_hz:.0f} Hz")
        assert muted.rms_dbfs < spectrum.rms_dbfs - 30, (muted.rms_dbfs, spectrum.rms_dbfs)
        status, detail = await asyncio.to_thread(api.request, f"/api/v1/meetings/{MEETING}", "read")
        (me,) = [p for p in detail["participants"] if p["id"] == pid]
        assert me["muted"] is True and me["packets"]["received"] > 0  # A is still sending, still connected
        status, body = await asyncio.to_thread(
            api.request, f"/api/v1/meetings/{MEETING}/participants/{pid}/unmute", "operate", "POST")
        assert status == 200 and body["muted"] is False
        await asyncio.sleep(0.5)
        back = assert_tone(await listener.record(3.0), 48000, TONE_HZ, min_dbfs=-35)
        print(f"unmuted: peak {back.peak_hz:.0f} Hz at {back.rms_dbfs:.1f} dBFS")

        # -- done: remove A ---------------------------------------------------------------------
        status, _ = await asyncio.to_thread(api.request, f"/api/v1/meetings/{MEETING}/participants/{pid}",
                                            "operate", "DELETE")
        assert status == 200
        a = await asyncio.wait_for(a_task, 40)
        assert a.connected and a.duration_connected < CALL_SECONDS, a

        # -- the edits die with the meeting (privacy): the policy's PIN admits again -------------
        dropped = await asyncio.to_thread(gw.wait_for_event, "meeting.overrides_dropped", 15, meeting=MEETING)
        assert dropped
        again = await asyncio.to_thread(_call, gw, f"{MEETING}*{OLD_PIN}", seconds=1)
        assert again.connected and again.final_status == 200, again
    finally:
        await listener.close()
        if not a_task.done():
            await asyncio.wait([a_task], timeout=CALL_SECONDS + 40)


def test_lock_pin_change_and_mute_a_running_meeting(tmp_path: Path) -> None:
    control = ControlAccess.create(tmp_path / "tls", "read", "operate")
    gw = start_gateway(tmp_path / "gw", config={"control": control.config()},
                       policy={"meetings": {MEETING: {"pin": OLD_PIN}}})
    try:
        run_on_private_loop(_scenario(gw, control, tmp_path), timeout=180)
        for action in ("meeting.lock", "meeting.unlock", "meeting.pin", "participant.mute",
                       "participant.unmute"):
            ok = gw.events("audit.command", action=action, result="ok")
            assert ok and ok[-1]["token"] == "test-operate", action
            assert gw.events("audit.command", action=action, result="forbidden") or action in (
                "meeting.unlock", "participant.unmute"), action
        refusal = gw.events("call.refused", rule="operator.lock")
        assert refusal and refusal[-1]["status"] == 403
        log = gw.stderr_text()
        assert NEW_PIN not in log and f"*{OLD_PIN}" not in log, "a PIN reached the log"
    finally:
        gw.stop()


def test_reload_ends_a_lobby_caller_its_meeting_now_refuses(tmp_path: Path) -> None:
    """Issue 7: a reload re-checks calls still joining; pjsua2 waits in the lobby, the policy file
    stops admitting SIP to its meeting, and the caller gets a BYE whose Reason names the rule."""
    meeting = "5016"
    gw = start_gateway(tmp_path / "gw", policy={"meetings": {meeting: {"lobby": True}}})
    try:
        result: dict[str, PjsuaResult | BaseException] = {}

        def caller() -> None:
            try:
                result["call"] = _call(gw, meeting, seconds=CALL_SECONDS)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
                result["call"] = exc

        thread = threading.Thread(target=caller, daemon=True)
        thread.start()
        gw.wait_for_event("call.lobby", timeout=30, meeting=meeting)
        gw.policy_path.write_text(yaml.safe_dump(build_policy(
            {"meetings": {meeting: {"lobby": True, "protocols": ["h323"]}}}), sort_keys=False))
        reloaded = gw.wait_for_event("policy.reloaded", timeout=10, trigger="file-change")
        assert reloaded["ended_calls"] == 1, reloaded
        ended = gw.wait_for_event("call.ended_by_policy", meeting=meeting)
        assert ended["stage"] == "lobby" and ended["rule"] == f'meetings."{meeting}".protocols=[h323]', ended
        thread.join(timeout=CALL_SECONDS + 40)
        assert not thread.is_alive(), "pjsua did not see the call end"
        call = result["call"]
        if isinstance(call, BaseException):
            raise call
        assert call.connected and call.duration_connected < CALL_SECONDS, call
        bye_reason = (call.raw.get("bye_reason") or "").replace('\\"', '"')  # quoted-string escapes
        print(f"lobby caller released after {call.duration_connected:.1f} s, Reason: {bye_reason}")
        assert f'meetings."{meeting}".protocols=[h323]' in bye_reason, bye_reason
        assert not gw.events("call.answered", meeting=meeting), "it joined the meeting"
    finally:
        gw.stop()
