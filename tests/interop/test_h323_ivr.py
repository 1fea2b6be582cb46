"""H.323 callers get the IVR like SIP callers (issues 5 and 7), with the project's H.323 caller.

* Dialling only the gateway's address (an empty Called party number, no alias), the caller is
  connected, the IVR asks for the meeting and the PIN, the caller types both by H.245
  userInputIndication, and it joins on the same RTP leg: proved by FFT both ways (the caller
  hears the meeting's 440 Hz participant; a WHEP subscriber hears the caller's 1 kHz).
* A meeting dialled without its PIN and three wrong PINs: the call is released with
  ``securityDenied`` and the rule in the Q.931 Display.
* ``lobby: true``: the caller waits, is listed under ``lobby`` with protocol ``h323``, and joins
  when an ``operate`` token admits it over HTTPS; an operator lock then refuses a second H.323
  caller with ``destinationRejection`` and ``operator.lock`` in the Display.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.ice import use_host_addresses
from tests.interop.test_h323_calls import H323Gateway as CallsGateway
from tests.interop.test_h323_calls import h323_call_with_webrtc_peer
from tests.interop.test_walking_skeleton import (
    BROWSER_HZ,
    CALLER_HZ,
    run_on_private_loop,
)
from tests.peers.h323_caller import CallerResult, run_h323_call
from tests.support.audio import assert_tone
from tests.support.control_api import ControlAccess
from tests.support.gateway_process import GatewayProcess, free_tcp_port, start_gateway
from tests.support.webrtc_client import ToneTrack, publish

pytestmark = pytest.mark.interop

PINS = {"7001": "2468", "7002": "1357", "7003": "8642"}
LOBBY = "7004"
POLICY = {"meetings": {**{m: {"pin": pin} for m, pin in PINS.items()}, LOBBY: {"lobby": True}}}


class H323Gateway(CallsGateway):
    def __init__(self, gw: GatewayProcess, port: int, control: ControlAccess) -> None:
        super().__init__(gw, port)
        self.control = control

    def api(self, path: str, method: str = "GET") -> tuple[int, Any]:
        return self.control.request(path, "operate", method)


@pytest.fixture(scope="module")
def h323_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[H323Gateway]:
    work = tmp_path_factory.mktemp("h323-ivr")
    control = ControlAccess.create(work / "tls", "operate")
    port = free_tcp_port()
    gw = start_gateway(work / "gw", policy=POLICY,
                       config={"h323": {"listen": f"127.0.0.1:{port}"}, "control": control.config()})
    try:
        yield H323Gateway(gw, port, control)
    finally:
        gw.stop()


@pytest.mark.parametrize(("fast_start", "meeting"), [
    pytest.param(True, "7001", id="faststart-tunnelled"),
    pytest.param(False, "7003", id="slowstart-tunnelled"),
])
def test_ip_only_dial_enters_meeting_and_pin_by_user_input_and_joins(
        h323_gateway: H323Gateway, fast_start: bool, meeting: str) -> None:
    gw = h323_gateway.gw
    result, heard = run_on_private_loop(h323_call_with_webrtc_peer(
        h323_gateway, meeting, dialled="", answered={"entry_by": "ivr"}, seconds=12.0, fast_start=fast_start, tunnelling=True,
        dtmf=f"{meeting}#{PINS[meeting]}#"))
    assert result.connected and result.error is None, result
    started = gw.wait_for_event("ivr.started", protocol="h323", asks="meeting", fast_start=fast_start)
    assert started["codec"] == result.codec
    samples, rate = result.recording()
    tail = samples[-3 * rate:]
    caller_heard = assert_tone(tail, rate, BROWSER_HZ, min_dbfs=-35)
    webrtc_heard = assert_tone(heard, 48000, CALLER_HZ, min_dbfs=-35)
    print(f"H.323 IVR join ({'fast' if fast_start else 'slow'} start): caller hears "
          f"{caller_heard.peak_hz:.0f} Hz at {caller_heard.rms_dbfs:.1f} dBFS, WebRTC hears "
          f"{webrtc_heard.peak_hz:.0f} Hz at {webrtc_heard.rms_dbfs:.1f} dBFS; "
          f"rtp in/out {result.rtp_in}/{result.rtp_out}")
    assert not gw.logged(PINS[meeting]), "a PIN reached the log"


def test_three_wrong_pins_release_the_call_with_the_rule(h323_gateway: H323Gateway) -> None:
    gw = h323_gateway.gw
    result = run_h323_call("127.0.0.1", h323_gateway.port, "7002", fast_start=True, tunnelling=True,
                           dtmf="1111#2222#3333#", seconds=20.0, timeout=40.0)
    assert result.connected, result  # answered for the IVR first
    assert result.release_reason == "securityDenied", result
    assert result.release_display is not None and "defaults.pin_attempts=3" in result.release_display, \
        result.release_display
    refused = gw.wait_for_event("call.refused", stage="ivr", protocol="h323")
    assert refused["rule"] == "defaults.pin_attempts=3" and refused["release_reason"] == "securityDenied"
    assert len(gw.events("call.pin_wrong", meeting="7002")) == 3
    assert not gw.events("call.answered", meeting="7002")
    print(f"wrong PINs: released {result.release_reason} cause {result.release_cause} "
          f"Display {result.release_display!r}")


async def _lobby_then_lock(h: H323Gateway) -> tuple[CallerResult, CallerResult]:
    use_host_addresses(["127.0.0.1"])
    publisher = await publish(h.gw.http_url, LOBBY, audio=ToneTrack.sine(BROWSER_HZ))
    loop = asyncio.get_running_loop()
    try:
        call = loop.run_in_executor(None, lambda: run_h323_call(
            "127.0.0.1", h.port, LOBBY, tone_hz=CALLER_HZ, seconds=14.0, timeout=50.0,
            fast_start=False, tunnelling=False))
        waiting = await loop.run_in_executor(None, lambda: h.gw.wait_for_event(
            "call.lobby", timeout=30, meeting=LOBBY, protocol="h323"))
        assert not h.gw.events("call.answered", meeting=LOBBY), "joined before being admitted"
        status, body = await loop.run_in_executor(None, h.api, f"/api/v1/meetings/{LOBBY}")
        assert status == 200 and body["lobby"] == [{"id": waiting["lobby_id"], "protocol": "h323"}], body
        status, _ = await loop.run_in_executor(
            None, h.api, f"/api/v1/meetings/{LOBBY}/participants/{waiting['lobby_id']}/admit", "POST")
        assert status == 200
        await loop.run_in_executor(None, lambda: h.gw.wait_for_event(
            "call.answered", timeout=30, meeting=LOBBY, entry_by="ivr"))
        status, body = await loop.run_in_executor(None, h.api, f"/api/v1/meetings/{LOBBY}/lock", "POST")
        assert (status, body) == (200, {"id": LOBBY, "locked": True})
        second = await loop.run_in_executor(None, lambda: run_h323_call(
            "127.0.0.1", h.port, LOBBY, seconds=2.0, timeout=20.0))
        first = await call
    finally:
        await publisher.close()
    return first, second


def test_lobby_admit_over_the_api_then_lock_refuses_the_next_caller(h323_gateway: H323Gateway) -> None:
    first, second = run_on_private_loop(_lobby_then_lock(h323_gateway), timeout=120)
    assert first.connected and first.error is None, first
    samples, rate = first.recording()
    heard = assert_tone(samples[-3 * rate:], rate, BROWSER_HZ, min_dbfs=-35)
    assert not second.connected and second.release_reason == "destinationRejection", second
    assert second.release_cause == 21 and "operator.lock" in (second.release_display or ""), second
    print(f"lobby caller admitted, hears {heard.peak_hz:.0f} Hz at {heard.rms_dbfs:.1f} dBFS; "
          f"locked: {second.release_reason} cause {second.release_cause} Display {second.release_display!r}")
