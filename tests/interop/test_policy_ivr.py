"""The IVR and PINs with a real SIP caller (pjsua2 sending RFC 4733 DTMF).

A right PIN entered by DTMF joins the meeting (proved by the caller hearing the meeting's
440 Hz participant afterwards), three wrong ones end the call with a BYE whose ``Reason:`` names
the rule, and a caller who dials only the host enters the meeting id by DTMF.  A PIN in the dial
string (``meeting*pin``) needs no IVR at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.ice import use_host_addresses
from tests.interop.test_walking_skeleton import run_on_private_loop
from tests.support.audio import assert_tone
from tests.support.gateway_process import GatewayProcess
from tests.support.pjsua import PjsuaResult, run_pjsua_call
from tests.support.webrtc_client import ToneTrack, publish

pytestmark = pytest.mark.interop

MEETING_HZ = 440.0
PIN_POLICY = {"meetings": {"1003": {"pin": "1234"}}}


async def _call_with_participant(gw: GatewayProcess, meeting: str, uri: str, tmp_path: Path, *,
                                 dtmf: str | None, seconds: float, dtmf_method: str = "rfc4733") -> PjsuaResult:
    """Dial ``uri`` (sending ``dtmf``) while an aiortc participant in ``meeting`` plays 440 Hz."""
    use_host_addresses(["127.0.0.1"])
    publisher = await publish(gw.http_url, meeting, audio=ToneTrack.sine(MEETING_HZ))
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, lambda: run_pjsua_call(
            uri, codec="PCMU", record_wav=tmp_path / "heard.wav", seconds=seconds,
            timeout=30, dtmf=dtmf, dtmf_pause=2.0, dtmf_method=dtmf_method))
    finally:
        await publisher.close()


def _assert_joined(gw: GatewayProcess, result: PjsuaResult, meeting: str) -> None:
    assert result.connected and result.final_status == 200, result
    answered = gw.wait_for_event("call.answered", timeout=15, meeting=meeting)
    assert answered.get("entry_by") == "ivr", answered
    samples, rate = result.recording()
    # The last seconds of the call: the meeting's participant, after the prompts.
    tail = samples[-int(3 * rate):]
    assert_tone(tail, rate, MEETING_HZ, min_dbfs=-35)


def test_right_pin_by_dtmf_joins(gateway_factory: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    gw = gateway_factory(policy=PIN_POLICY)
    result = run_on_private_loop(_call_with_participant(
        gw, "1003", gw.sip_uri("1003"), tmp_path, dtmf="1234#", seconds=12))
    _assert_joined(gw, result, "1003")
    assert not gw.logged("1234"), "a PIN was logged"


def test_wrong_pin_three_times_hangs_up(gateway_factory: Callable[..., GatewayProcess],
                                       tmp_path: Path) -> None:
    gw = gateway_factory(policy=PIN_POLICY)
    result = run_pjsua_call(gw.sip_uri("1003"), codec="PCMU", seconds=30, timeout=30,
                            dtmf="1111#,2222#,3333#", dtmf_pause=2.5)
    assert result.connected, result
    bye_reason = result.raw.get("bye_reason")  # the agent's Reason header of the gateway's BYE
    assert bye_reason is not None and "pin_attempts" in bye_reason, result.raw
    refused = gw.wait_for_event("call.refused", timeout=10, stage="ivr")
    assert "pin_attempts" in refused["rule"]
    assert len(gw.events("call.pin_wrong")) == 3
    # Locked out: dialling again, even with the right PIN in the dial string, is refused.
    again = run_pjsua_call(gw.sip_uri("1003*1234"), codec="PCMU", seconds=2, timeout=30)
    assert not again.connected and again.final_status == 403, again
    assert again.warning is not None and "pin_attempts" in again.warning
    # The wrong PINs appear nowhere in the log (GatewayProcess.logged: timestamps and numbers,
    # where digits turn up by chance, are left out).
    assert not gw.logged("1111") and not gw.logged("3333"), "a PIN was logged"


def test_bare_host_enters_meeting_by_dtmf(gateway_factory: Callable[..., GatewayProcess],
                                         tmp_path: Path) -> None:
    gw = gateway_factory()
    bare = gw.sip_uri("x").replace("sip:x@", "sip:")
    result = run_on_private_loop(_call_with_participant(
        gw, "1000", bare, tmp_path, dtmf="1000#", seconds=12))
    _assert_joined(gw, result, "1000")


def test_pin_in_dial_string_joins_without_ivr(gateway_factory: Callable[..., GatewayProcess],
                                             tmp_path: Path) -> None:
    gw = gateway_factory(policy=PIN_POLICY)
    result = run_pjsua_call(gw.sip_uri("1003*1234"), codec="PCMU", seconds=2, timeout=30)
    assert result.connected and result.final_status == 200, result
    answered = gw.wait_for_event("call.answered", timeout=15, meeting="1003")
    assert "entry_by" not in answered
    wrong = run_pjsua_call(gw.sip_uri("1003.9999"), codec="PCMU", seconds=2, timeout=30)
    assert wrong.final_status == 403 and wrong.warning and "pin" in wrong.warning, wrong


def test_pin_by_sip_info_joins(gateway_factory: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    gw = gateway_factory(policy=PIN_POLICY)
    result = run_on_private_loop(_call_with_participant(
        gw, "1003", gw.sip_uri("1003"), tmp_path, dtmf="1234#", seconds=12, dtmf_method="info"))
    _assert_joined(gw, result, "1003")
    assert len(gw.events("sip.info.dtmf")) == 5, "the digits did not come by SIP INFO"
