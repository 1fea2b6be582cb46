"""The walking skeleton's acceptance tests: a real SIP caller and a WebRTC participant hear each other.

Each test runs the real gateway (``roomgate run`` in a subprocess), dials it with a real PJSIP
user agent (pjsua2, in its own process) and joins the same meeting with an aiortc WHIP/WHEP
client written independently of the gateway's own bridge. Media is proven by measuring it: the
strongest frequency and the level of what each side received.
"""

from __future__ import annotations

import asyncio
import select
import socket
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bridge.ice import use_host_addresses
from tests.support.audio import assert_tone, tone, write_wav
from tests.support.gateway_process import GatewayProcess
from tests.support.pjsua import PjsuaResult, run_pjsua_call
from tests.support.webrtc_client import ToneTrack, publish, subscribe

pytestmark = pytest.mark.interop

CALLER_HZ = 1000.0
BROWSER_HZ = 440.0
T = TypeVar("T")


def run_on_private_loop(coro: Coroutine[Any, Any, T], timeout: float = 90.0) -> T:
    """Run ``coro`` on a fresh loop that is never made current (other tests share the process)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    finally:
        loop.close()


async def call_with_webrtc_peer(
    gw: GatewayProcess,
    tmp_path: Path,
    *,
    codec: str,
    meeting: str = "1000",
    transport: str = "udp",
    seconds: float = 5.0,
    during_call: Callable[[], None] | None = None,
    srtp: str = "off",
    srtp_suite: str | None = None,
    rtp_port: int = 0,
    during_recording: Callable[[], None] | None = None,
    session_expires: int | None = None,
) -> tuple[PjsuaResult, Any]:
    """Dial ``meeting`` with pjsua sending 1 kHz while an aiortc participant publishes 440 Hz.

    ``transport`` is udp, tcp, tls or sips (see ``GatewayProcess.sip_uri``); ``srtp``,
    ``srtp_suite`` and ``rtp_port`` go to pjsua as in ``run_pjsua_call``.  ``during_recording``
    runs in a worker thread while the WHEP side records (e.g. a signalling flood).
    ``session_expires`` makes pjsua use RFC 4028 session timers with that interval.

    Returns the pjsua result (with its recording) and the WHEP subscriber's audio recorded
    (excluding the aiortc publisher itself) once the gateway said it answered the call.
    """
    use_host_addresses(["127.0.0.1"])
    wav = write_wav(tmp_path / "caller.wav", tone(CALLER_HZ, 2.0, rate=16000), rate=16000)
    publisher = await publish(gw.http_url, meeting, audio=ToneTrack.sine(BROWSER_HZ))
    subscriber = await subscribe(gw.http_url, meeting, exclude=publisher.participant_id, video=False)
    loop = asyncio.get_running_loop()
    try:
        call = loop.run_in_executor(None, lambda: run_pjsua_call(
            gw.sip_uri(meeting, transport), codec=codec, play_wav=wav,
            record_wav=tmp_path / "caller-heard.wav", seconds=seconds,
            transport="tls" if transport == "sips" else transport,
            timeout=seconds + 30, srtp=srtp, srtp_suite=srtp_suite, rtp_port=rtp_port,
            session_expires=session_expires))
        await loop.run_in_executor(None, lambda: gw.wait_for_event("call.answered", timeout=30,
                                                                   meeting=meeting))
        if during_call is not None:
            await loop.run_in_executor(None, during_call)
        await asyncio.sleep(0.5)  # let the first packets through the jitter of a fresh leg
        side = (loop.run_in_executor(None, during_recording)
                if during_recording is not None else None)
        heard = await subscriber.record(min(2.5, seconds - 1.5))
        if side is not None:
            await side
        result = await call
    finally:
        await subscriber.close()
        await publisher.close()
    return result, heard


@pytest.mark.parametrize("codec", ["PCMU", "PCMA", "G722"])
def test_sip_caller_and_webrtc_participant_hear_each_other(
    gateway_factory: Callable[..., GatewayProcess], tmp_path: Path, codec: str
) -> None:
    gw = gateway_factory()
    result, heard = run_on_private_loop(call_with_webrtc_peer(gw, tmp_path, codec=codec))

    assert result.connected and result.final_status == 200, result
    assert result.codec and result.codec.upper().startswith(codec), result.codec
    # The WebRTC side (WHEP, excluding its own publisher) hears the SIP caller's 1 kHz ...
    assert_tone(heard, 48000, CALLER_HZ, min_dbfs=-35, skip_seconds=0.2)
    # ... and the SIP caller hears the WebRTC participant's 440 Hz, not itself.
    samples, rate = result.recording()
    spectrum = assert_tone(samples, rate, BROWSER_HZ, min_dbfs=-35, skip_seconds=1.5)
    assert spectrum.level_at(CALLER_HZ) < -30, "the caller hears its own tone back"

    answered = gw.events("call.admitted")
    assert answered and answered[-1]["codec"] == codec and answered[-1]["media_security"] == "plain"
    closed = gw.wait_for_event("bridge.session.closed", timeout=15)
    assert closed["legacy_in"] > 100 and closed["legacy_out"] > 100, closed


def test_call_over_tcp(gateway_factory: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    gw = gateway_factory()
    result, heard = run_on_private_loop(call_with_webrtc_peer(gw, tmp_path, codec="PCMU", transport="tcp"))
    assert result.connected, result
    assert_tone(heard, 48000, CALLER_HZ, min_dbfs=-35, skip_seconds=0.2)
    assert_tone(*result.recording(), BROWSER_HZ, min_dbfs=-35, skip_seconds=1.5)
    assert gw.events("call.admitted")[-1]["transport"] == "tcp"


def test_require_srtp_meeting_refuses_plain_rtp_with_488_and_warning(
    gateway_factory: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    gw = gateway_factory(policy={"meetings": {"1001": {"legacy_media": "require-srtp"}}})
    result = run_pjsua_call(gw.sip_uri("1001"), codec="PCMU", seconds=2, timeout=30)

    assert not result.connected
    assert result.final_status == 488 and result.status_from_wire, result
    assert result.warning is not None, "488 without a Warning header"
    assert result.warning.startswith("399 "), result.warning
    assert "1001" in result.warning and "require-srtp" in result.warning, result.warning
    refused = gw.events("call.refused")
    assert refused and refused[-1]["status"] == 488 and "legacy_media" in refused[-1]["rule"]


def test_unknown_meeting_gets_404_when_policy_rejects_unknown(
    gateway_factory: Callable[..., GatewayProcess]
) -> None:
    gw = gateway_factory(policy={"unknown_meetings": "reject", "meetings": {"1000": {}}})
    refused = run_pjsua_call(gw.sip_uri("4242"), codec="PCMU", seconds=2, timeout=30)
    assert not refused.connected and refused.final_status == 404 and refused.status_from_wire, refused
    # The listed meeting still works under the same policy.
    listed = run_pjsua_call(gw.sip_uri("1000"), codec="PCMU", seconds=2, timeout=30)
    assert listed.connected and listed.final_status == 200, listed


def test_protocols_without_sip_refuses_with_403(gateway_factory: Callable[..., GatewayProcess]) -> None:
    gw = gateway_factory(policy={"meetings": {"2000": {"protocols": ["h323"]}}})
    result = run_pjsua_call(gw.sip_uri("2000"), codec="PCMU", seconds=2, timeout=30)
    assert not result.connected and result.final_status == 403 and result.status_from_wire, result
    assert result.warning and "protocols" in result.warning, result.warning


# -- bad input during a call -------------------------------------------------------------------

VIA = "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n"
GOOD_TAIL = (
    "Max-Forwards: 70\r\nFrom: <sip:junk@127.0.0.1>;tag=j1\r\nTo: <sip:1000@127.0.0.1>\r\n"
)


def malformed_requests(port: int) -> dict[str, bytes]:
    """Requests a hostile or broken client might send, keyed by what is wrong with them."""
    via = VIA.format(port=port, branch="{}")
    return {
        "truncated": ("INVITE sip:1000@127.0.0.1 SIP/2.0\r\n" + via.format("t1") + "Call-").encode(),
        "bad-content-length": (
            "OPTIONS sip:1000@127.0.0.1 SIP/2.0\r\n" + via.format("cl1") + GOOD_TAIL
            + "Call-ID: cl1@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 9999\r\n\r\nv=0\r\n").encode(),
        "missing-call-id": (
            "OPTIONS sip:1000@127.0.0.1 SIP/2.0\r\n" + via.format("nc1") + GOOD_TAIL
            + "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(),
        "missing-cseq": (
            "OPTIONS sip:1000@127.0.0.1 SIP/2.0\r\n" + via.format("ncs1") + GOOD_TAIL
            + "Call-ID: ncs1@x\r\nContent-Length: 0\r\n\r\n").encode(),
        "missing-via": (
            "OPTIONS sip:1000@127.0.0.1 SIP/2.0\r\n" + GOOD_TAIL
            + "Call-ID: nv1@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(),
        "binary-junk": bytes(range(256)) * 4,
        "garbage-sdp-invite": (
            "INVITE sip:1000@127.0.0.1 SIP/2.0\r\n" + via.format("gs1") + GOOD_TAIL
            + "Call-ID: gs1@x\r\nCSeq: 1 INVITE\r\nContact: <sip:junk@127.0.0.1>\r\n"
            + "Content-Type: application/sdp\r\nContent-Length: 12\r\n\r\nv=banana\r\nxy").encode(),
    }


def send_and_collect(port: int, payloads: dict[str, bytes], listen: float = 1.5) -> dict[str, list[str]]:
    """Send each payload from its own UDP socket; collect the status lines answered to each."""
    sockets: dict[str, socket.socket] = {}
    for name, data in payloads.items():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        s.sendto(data, ("127.0.0.1", port))
        sockets[name] = s
    answers: dict[str, list[str]] = {name: [] for name in payloads}
    names = {s.fileno(): name for name, s in sockets.items()}
    deadline = time.monotonic() + listen
    try:
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select(list(sockets.values()), [], [], left)
            for s in readable:
                reply = s.recv(65535)
                answers[names[s.fileno()]].append(reply.split(b"\r\n", 1)[0].decode(errors="replace"))
    finally:
        for s in sockets.values():
            s.close()
    return answers


def test_malformed_requests_get_400_or_are_dropped_and_the_call_keeps_its_audio(
    gateway_factory: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    gw = gateway_factory()
    port = int(gw.sip_uri("1000").rsplit(":", 1)[1])
    answers: dict[str, list[str]] = {}

    def attack() -> None:
        answers.update(send_and_collect(port, malformed_requests(port)))

    result, heard = run_on_private_loop(
        call_with_webrtc_peer(gw, tmp_path, codec="PCMU", seconds=9.0, during_call=attack))

    for name, lines in answers.items():
        finals = [line for line in lines if not line.startswith("SIP/2.0 1")]
        assert all(line.startswith(("SIP/2.0 400", "SIP/2.0 488")) for line in finals), (
            f"{name}: answered {lines}")
    # Where the gateway can answer (a Via to answer to, a parseable start line), it does, with 400.
    for name in ("bad-content-length", "missing-call-id", "missing-cseq"):
        assert any(line.startswith("SIP/2.0 400") for line in answers[name]), f"{name}: {answers[name]}"
    for name in ("missing-via", "binary-junk"):  # nothing to answer to
        assert not answers[name], f"{name} should be dropped, got {answers[name]}"
    # The call in progress kept its audio both ways, after the attack (recorded after it).
    assert result.connected, result
    assert_tone(heard, 48000, CALLER_HZ, min_dbfs=-35, skip_seconds=0.2)
    samples, rate = result.recording()
    assert_tone(samples[-3 * rate:], rate, BROWSER_HZ, min_dbfs=-35, skip_seconds=0.0)
    assert gw.alive()
    assert not [e for e in gw.log_lines() if e.get("level") in ("error", "critical")], "errors logged"
