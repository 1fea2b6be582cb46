"""Hostile input while a good H.323 call is up (issue 5, "done when" 6).

One call from the project's H.323 caller is connected with tones flowing both ways (an aiortc
WHIP/WHEP participant in the meeting); meanwhile other connections send random bytes, a Setup
whose H.225.0 UUIE is corrupted, and an oversized TPKT.  Each hostile connection is closed by
the gateway with an ``h323.message.invalid`` log line, and the good call's audio keeps flowing:
the tones are measured (FFT) on what both sides recorded *after* the attacks.
"""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path

import pytest

from bridge.ice import use_host_addresses
from h323 import q931, tpkt
from tests.interop.test_walking_skeleton import (
    BROWSER_HZ,
    CALLER_HZ,
    run_on_private_loop,
)
from tests.peers.h323_caller import run_h323_call
from tests.support.audio import assert_tone
from tests.support.gateway_process import GatewayProcess, free_tcp_port, start_gateway
from tests.support.pcap import read_capture
from tests.support.webrtc_client import ToneTrack, publish, subscribe

pytestmark = pytest.mark.interop

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "h323" / "h323plus"
SLOWSTART = CORPUS / "h323plus-callgen323-slowstart-tun_on.pcapng"


def corrupted_setup() -> bytes:
    """H323Plus's Setup from the corpus, with its UUIE's PER body overwritten by 0xFF octets."""
    caller = next(s for s in read_capture(SLOWSTART).tcp if s.dst[1] == 1720)
    setup = q931.parse(tpkt.TpktFramer().feed(caller.data)[0])
    assert setup.user_user is not None
    uu = bytearray(setup.user_user)
    for i in range(4, len(uu)):
        uu[i] = 0xFF
    return tpkt.encode(setup.with_user_user(bytes(uu)).encode())


def attacks() -> dict[str, bytes]:
    rng = random.Random(5)
    return {
        "random": bytes(rng.randrange(256) for _ in range(3000)),
        "malformed-setup": corrupted_setup(),
        "oversized-tpkt": b"\x03\x00\xff\xff" + bytes(rng.randrange(256) for _ in range(0xFFFF - 4)),
        "bad-tpkt-version": b"\x07\x00\x00\x20" + b"\x00" * 28,
    }


def attack(port: int, junk: bytes) -> bool:
    """Send ``junk``; True when the gateway closed the connection (EOF or reset)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(10)
        try:
            s.sendall(junk)
            while s.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        return True


async def call_under_attack(gw: GatewayProcess, port: int, meeting: str) -> tuple[object, object, dict[str, bool]]:
    use_host_addresses(["127.0.0.1"])
    publisher = await publish(gw.http_url, meeting, audio=ToneTrack.sine(BROWSER_HZ))
    subscriber = await subscribe(gw.http_url, meeting, exclude=publisher.participant_id, video=False)
    loop = asyncio.get_running_loop()
    closed: dict[str, bool] = {}
    try:
        call = loop.run_in_executor(None, lambda: run_h323_call(
            "127.0.0.1", port, meeting, tone_hz=CALLER_HZ, seconds=9.0, timeout=40))
        await loop.run_in_executor(None, lambda: gw.wait_for_event("call.answered", timeout=30, meeting=meeting))
        await asyncio.sleep(1.0)
        for name, junk in attacks().items():
            closed[name] = await loop.run_in_executor(None, attack, port, junk)
        heard = await subscriber.record(2.5)  # after the attacks
        result = await call
    finally:
        await subscriber.close()
        await publisher.close()
    return result, heard, closed


def test_hostile_connections_do_not_harm_a_call_in_progress(tmp_path: Path) -> None:
    port = free_tcp_port()
    gw = start_gateway(tmp_path / "gw", config={"h323": {"listen": f"127.0.0.1:{port}"}})
    try:
        result, heard, closed = run_on_private_loop(call_under_attack(gw, port, "3400"))
    finally:
        gw.stop()
    assert closed == {name: True for name in attacks()}, closed
    assert len(gw.events("h323.message.invalid")) >= len(attacks())
    assert result.connected and result.error is None and result.released_by == "caller", result  # type: ignore[attr-defined]
    assert_tone(heard, 48000, CALLER_HZ, min_dbfs=-35, skip_seconds=0.2)  # type: ignore[arg-type]
    samples, rate = result.recording()  # type: ignore[attr-defined]
    tail = samples[-int(2.5 * rate):]  # the last seconds of the call, after the attacks
    assert_tone(tail, rate, BROWSER_HZ, min_dbfs=-35, skip_seconds=0.0)
    assert gw.events("call.ended", meeting="3400")[-1]["by"] == "remote"
