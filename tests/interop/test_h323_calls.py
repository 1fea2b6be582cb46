"""H.323 calls land in a meeting exactly like SIP calls (issue 5, "done when" 1, 2 and 5).

The real gateway (``roomgate run`` with an ``h323.listen`` on a free port) is dialled by the
project's own H.323 caller (tests/peers/h323_caller.py, written from the standards with the
codec layer only) in the four combinations Fast Start on/off x H.245 tunnelling on/off, while
an aiortc WHIP/WHEP participant is in the same meeting.  Media is proven by measuring it (FFT):
the caller's 1 kHz reaches the WebRTC side and the participant's 440 Hz reaches the caller.
tshark captures every call and must decode each PDU the gateway sends (Q.931, H.225.0 and
H.245, tunnelled or on the separate connection) with no malformed frame.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.ice import use_host_addresses
from tests.interop.test_walking_skeleton import (
    BROWSER_HZ,
    CALLER_HZ,
    run_on_private_loop,
)
from tests.peers.h323_caller import CallerResult, run_h323_call
from tests.support.audio import assert_tone
from tests.support.gateway_process import GatewayProcess, free_tcp_port, start_gateway
from tests.support.tshark import TSHARK, capture
from tests.support.webrtc_client import ToneTrack, publish, subscribe

pytestmark = pytest.mark.interop

POLICY = {"meetings": {"2000": {"protocols": ["sip"]}, "1001": {"legacy_media": "require-srtp"}}}


class H323Gateway:
    def __init__(self, gw: GatewayProcess, port: int) -> None:
        self.gw, self.port = gw, port


@pytest.fixture(scope="module")
def h323_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[H323Gateway]:
    """One gateway for the module (calls use distinct meetings), H.323 on a free port."""
    port = free_tcp_port()
    gw = start_gateway(tmp_path_factory.mktemp("h323-gateway"), policy=POLICY,
                       config={"h323": {"listen": f"127.0.0.1:{port}"}})
    try:
        yield H323Gateway(gw, port)
    finally:
        gw.stop()


async def h323_call_with_webrtc_peer(h: H323Gateway, meeting: str, *, seconds: float = 4.0,
                                     dialled: str | None = None, answered: dict[str, Any] | None = None,
                                     **caller: Any) -> tuple[CallerResult, Any]:
    """Dial ``meeting`` (or ``dialled``: what the caller keys in, e.g. only the address for the
    IVR) with the H.323 caller (1 kHz) while an aiortc participant in ``meeting`` publishes
    440 Hz; returns the caller's result and what a WHEP subscriber (excluding the participant)
    heard once the gateway answered (a ``call.answered`` with the ``answered`` fields too)."""
    use_host_addresses(["127.0.0.1"])
    publisher = await publish(h.gw.http_url, meeting, audio=ToneTrack.sine(BROWSER_HZ))
    subscriber = await subscribe(h.gw.http_url, meeting, exclude=publisher.participant_id, video=False)
    loop = asyncio.get_running_loop()
    try:
        call = loop.run_in_executor(None, lambda: run_h323_call(
            "127.0.0.1", h.port, meeting if dialled is None else dialled, tone_hz=CALLER_HZ, seconds=seconds,
            timeout=seconds + 30, **caller))
        await loop.run_in_executor(None, lambda: h.gw.wait_for_event(
            "call.answered", timeout=30, meeting=meeting, **(answered or {})))
        await asyncio.sleep(0.5)  # the first packets through a fresh leg
        heard = await subscriber.record(min(2.5, seconds - 1.5))
        result = await call
    finally:
        await subscriber.close()
        await publisher.close()
    return result, heard


def gateway_pdus(path: Path, signalling_port: int, h245_port: int | None) -> tuple[list[str], str]:
    """tshark's one-line summaries and its verbose text for every TCP segment with data that the
    gateway sent (from the call-signalling port or its separate H.245 port)."""
    args = [TSHARK, "-n", "-r", str(path)]
    flt = f"tcp.srcport=={signalling_port}"
    if h245_port is not None:
        args += ["-d", f"tcp.port=={h245_port},h245"]
        flt += f" || tcp.srcport=={h245_port}"
    flt = f"({flt}) && tcp.len>0"
    summary = subprocess.run(args + ["-Y", flt], capture_output=True, text=True, timeout=60, check=True).stdout
    verbose = subprocess.run(args + ["-Y", flt, "-V"], capture_output=True, text=True, timeout=60, check=True).stdout
    return summary.splitlines(), verbose


COMBINATIONS = [
    pytest.param(True, True, "PCMU", "3101", "5#", id="faststart-tunnelled"),
    pytest.param(True, False, "PCMA", "3102", "", id="faststart-separate-h245"),
    pytest.param(False, True, "PCMA", "3103", "", id="slowstart-tunnelled"),
    pytest.param(False, False, "PCMU", "3104", "7", id="slowstart-separate-h245"),
]


@pytest.mark.parametrize(("fast_start", "tunnelling", "codec", "meeting", "dtmf"), COMBINATIONS)
def test_h323_caller_and_webrtc_participant_hear_each_other(
    h323_gateway: H323Gateway, tmp_path: Path, fast_start: bool, tunnelling: bool, codec: str, meeting: str,
    dtmf: str
) -> None:
    if shutil.which(TSHARK) is None:
        pytest.fail("tshark is not installed (make test installs it)")
    gw = h323_gateway.gw
    with capture("tcp", tmp_path / "h323.pcapng") as cap:
        result, heard = run_on_private_loop(h323_call_with_webrtc_peer(
            h323_gateway, meeting, fast_start=fast_start, tunnelling=tunnelling, codec=codec, dtmf=dtmf))

    assert result.connected and result.error is None, result
    assert result.codec == codec and result.fast_start_accepted is fast_start, result
    assert all(result.call_reference_flags), "every gateway message carries the reply flag (Q.931 4.3)"
    assert result.messages[0] == "CALL_PROCEEDING:callProceeding" and "CONNECT:connect" in result.messages
    if tunnelling:
        assert result.h245_address is None and result.h245_local_port is None
        assert "terminalCapabilitySet" in result.h245 and "masterSlaveDetermination" in result.h245
    else:
        assert result.h245_address is not None and result.h245_address[0] == "127.0.0.1", result
    if not fast_start:
        assert "openLogicalChannel" in result.h245 and "openLogicalChannelAck" in result.h245, result.h245
    # The WebRTC side hears the H.323 caller's 1 kHz ...
    assert_tone(heard, 48000, CALLER_HZ, min_dbfs=-35, skip_seconds=0.2)
    # ... and the caller hears the WebRTC participant's 440 Hz, not itself.
    samples, rate = result.recording()
    spectrum = assert_tone(samples, rate, BROWSER_HZ, min_dbfs=-35, skip_seconds=1.0)
    assert spectrum.level_at(CALLER_HZ) < -30, "the caller hears its own tone back"

    admitted = gw.events("call.admitted", meeting=meeting)
    assert admitted and admitted[-1]["protocol"] == "h323" and admitted[-1]["transport"] == "tcp"
    assert admitted[-1]["fast_start"] is fast_start and admitted[-1]["tunnelling"] is tunnelling
    answered = gw.wait_for_event("call.answered", meeting=meeting)
    assert answered["codec"] == codec
    ended = gw.wait_for_event("call.ended", timeout=10, meeting=meeting)
    assert ended["protocol"] == "h323" and ended["by"] == "remote"
    # userInputIndication reaches the application as DTMF, one event per digit (digits not logged)
    assert len(gw.events("h323.dtmf", meeting=meeting)) == len(dtmf)

    # tshark: every PDU the gateway sent decodes, none is malformed.
    h245_port = result.h245_address[1] if result.h245_address else None
    summary, verbose = gateway_pdus(cap.path, h323_gateway.port, h245_port)
    assert summary, f"no gateway frames captured ({cap.stderr})"
    assert "Malformed" not in verbose and "Expert Info (Error" not in verbose
    text = "\n".join(summary)
    assert "CS: callProceeding" in text and "CS: connect" in text, text
    if _expects_gateway_rc(result):
        assert "CS: releaseComplete" in text, text
    assert "terminalCapabilitySet" in text and "masterSlaveDetermination" in text, text
    if fast_start:
        assert "CS: connect OpenLogicalChannel" in text, text
    else:
        assert "openLogicalChannelAck" in text and re.search(r"openLogicalChannel(?!Ack)", text), text
    if not tunnelling:
        assert any(" H.245 " in line for line in summary), text


def _expects_gateway_rc(result: CallerResult) -> bool:
    """With a separate H.245 connection the gateway answers the caller's endSessionCommand with
    its own ReleaseComplete before the caller's arrives; with tunnelling the caller's
    ReleaseComplete (carrying endSessionCommand) ends the call first."""
    return "RELEASE_COMPLETE:releaseComplete" in result.messages


def test_dialled_digits_and_h323_id_forms_reach_the_meeting(h323_gateway: H323Gateway) -> None:
    """``meeting#pin`` in dialledDigits and ``IP##meeting`` in an h323-ID give the meeting."""
    gw = h323_gateway.gw
    a = run_h323_call("127.0.0.1", h323_gateway.port, "3105#4321", alias="dialledDigits", seconds=0.5,
                      timeout=30)
    b = run_h323_call("127.0.0.1", h323_gateway.port, "127.0.0.1##3106", alias="h323-ID", fast_start=False,
                      seconds=0.5, timeout=30)
    assert a.connected and b.connected, (a, b)
    assert gw.wait_for_event("call.answered", meeting="3105") and gw.wait_for_event("call.answered", meeting="3106")
    assert not gw.logged("4321"), "the PIN must not be logged"


def test_protocols_without_h323_releases_with_reason(h323_gateway: H323Gateway) -> None:
    gw = h323_gateway.gw
    result = run_h323_call("127.0.0.1", h323_gateway.port, "2000", seconds=1, timeout=30)
    assert not result.connected
    assert result.messages == ["CALL_PROCEEDING:callProceeding", "RELEASE_COMPLETE:releaseComplete"], result
    assert result.release_reason == "calledPartyNotRegistered" and result.release_cause == 21, result
    assert result.release_display and "protocols" in result.release_display, result
    refused = gw.wait_for_event("call.refused", meeting="2000")
    assert refused["release_reason"] == "calledPartyNotRegistered" and "protocols" in refused["rule"]


def test_require_srtp_meeting_refuses_h323_with_security_denied(h323_gateway: H323Gateway) -> None:
    gw = h323_gateway.gw
    result = run_h323_call("127.0.0.1", h323_gateway.port, "1001", fast_start=False, tunnelling=False,
                           seconds=1, timeout=30)
    assert not result.connected and result.release_reason == "securityDenied", result
    assert result.release_cause is not None and result.release_display and "require-srtp" in result.release_display
    refused = gw.wait_for_event("call.refused", meeting="1001")
    assert refused["release_reason"] == "securityDenied" and "legacy_media" in refused["rule"]


def test_hostile_bytes_close_only_that_connection(h323_gateway: H323Gateway) -> None:
    """Random bytes on the call-signalling port: that connection is closed with a log line, and
    the gateway still takes calls."""
    import socket

    gw = h323_gateway.gw
    for junk in (bytes(range(256)), b"\x03\x00\x00\x10" + b"\xff" * 12, b"\x03\x00\x00\x08\x08\x02\x00\x01"):
        with socket.create_connection(("127.0.0.1", h323_gateway.port), timeout=5) as s:
            s.sendall(junk)
            s.settimeout(5)
            try:
                while s.recv(4096):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
    gw.wait_for_event("h323.message.invalid")
    assert gw.alive()
    ok = run_h323_call("127.0.0.1", h323_gateway.port, "3107", seconds=0.5, timeout=30)
    assert ok.connected, ok


def test_control_api_lists_and_removes_an_h323_participant(tmp_path: Path) -> None:
    """With the control API on, an H.323 caller is a pseudonymous ``h323`` participant, and
    removing it releases the call (endSessionCommand + ReleaseComplete)."""
    import threading

    from gateway.api.tokens import MIN_ITERATIONS, hash_token, new_token
    from tests.support.control_api import https_request, make_self_signed

    cert, key = make_self_signed(tmp_path / "tls")
    token = new_token()
    api_port, h323_port = free_tcp_port(), free_tcp_port()
    gw = start_gateway(tmp_path / "gw", config={
        "h323": {"listen": f"127.0.0.1:{h323_port}"},
        "control": {"listen": f"127.0.0.1:{api_port}", "tls_cert": str(cert), "tls_key": str(key),
                    "tokens": [{"id": "test-admin", "scope": "admin",
                                "hash": hash_token(token, iterations=MIN_ITERATIONS)}]}})
    result: dict[str, CallerResult] = {}
    thread = threading.Thread(target=lambda: result.__setitem__("call", run_h323_call(
        "127.0.0.1", h323_port, "4343", fast_start=False, seconds=60, timeout=90)), daemon=True)
    try:
        thread.start()
        answered = gw.wait_for_event("call.answered", timeout=30, meeting="4343")
        base = f"https://127.0.0.1:{api_port}/api/v1/meetings/4343"
        status, _, detail = https_request(base, cafile=cert, token=token)
        assert status == 200
        (p,) = detail["participants"]
        assert (p["id"], p["protocol"], p["transport"], p["codec"]) == (answered["participant"], "h323", "tcp", "PCMU")
        assert p["encryption"] == {"legacy": "plain", "webrtc": "dtls-srtp"}
        status, _, _ = https_request(f"{base}/participants/{p['id']}", cafile=cert, token=token, method="DELETE")
        assert status == 200
        thread.join(timeout=30)
        assert not thread.is_alive(), "the H.323 caller did not see the call end"
        call = result["call"]
        assert call.connected and call.release_reason == "undefinedReason" and call.release_cause == 16, call
        assert "endSessionCommand" in call.h245, call.h245
        assert gw.wait_for_event("call.ended", meeting="4343")["by"] == "api"
    finally:
        gw.stop()
        thread.join(timeout=5)
