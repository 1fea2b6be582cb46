"""The gateway opens the H.245 connection to the caller's listener (issue 5, slice 4; H.323 8.2.3).

The project's H.323 caller dials slow start (no Fast Start) without tunnelling and puts its own
H.245 listener in Setup ``h245Address``.  The real gateway must connect there (and advertise no
listener of its own in Connect): exactly one H.245 connection results, and media is proven by
measuring it both ways (the caller's 1 kHz at a WebRTC subscriber, the participant's 440 Hz at
the caller).  tshark decodes the H.245 the gateway sends on that connection, none malformed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.test_h323_calls import (
    POLICY,
    H323Gateway,
    h323_call_with_webrtc_peer,
)
from tests.interop.test_walking_skeleton import (
    BROWSER_HZ,
    CALLER_HZ,
    run_on_private_loop,
)
from tests.support.audio import assert_tone
from tests.support.gateway_process import free_tcp_port, start_gateway
from tests.support.tshark import capture, decode

pytestmark = pytest.mark.interop


def test_slow_start_without_tunnelling_gateway_connects_to_the_callers_h245(tmp_path: Path) -> None:
    port = free_tcp_port()
    gw = start_gateway(tmp_path / "gw", policy=POLICY, config={"h323": {"listen": f"127.0.0.1:{port}"}})
    try:
        with capture("tcp and host 127.0.0.1", tmp_path / "h245.pcapng"):
            result, heard = run_on_private_loop(h323_call_with_webrtc_peer(
                H323Gateway(gw, port), "3410", seconds=3.0, fast_start=False, tunnelling=False, h245_listen=True))
        assert result.connected and result.error is None, result
        assert result.h245_address is None, result  # the gateway advertised no listener of its own
        assert result.h245_local_port is None  # ... so the caller never connected out
        assert result.h245_accepted == 1, result  # exactly one H.245 connection, the gateway's
        assert "openLogicalChannelAck" in result.h245 and "terminalCapabilitySet" in result.h245, result.h245
        assert_tone(heard, 48000, CALLER_HZ, min_dbfs=-35, skip_seconds=0.2)
        samples, rate = result.recording()
        assert_tone(samples, rate, BROWSER_HZ, min_dbfs=-35, skip_seconds=1.0)
        print(f"caller rtp in/out: {result.rtp_in}/{result.rtp_out}")
        assert gw.wait_for_event("h323.h245.connecting")
        assert not gw.events("h323.h245.listening")  # the fallback listener was never needed
    finally:
        gw.stop()
    # tshark: what the gateway sent on the caller's H.245 listener is H.245, none malformed
    listen = result.h245_listen_port
    rows = decode(tmp_path / "h245.pcapng", f"tcp.dstport=={listen} and tcp.len > 0",
                  ["frame.protocols", "h245.pdu_type", "_ws.malformed"], decode_as=[f"tcp.port=={listen},h245"])
    print(f"H.245 frames from the gateway: {len(rows)}")
    assert rows and all("h245" in r["frame.protocols"] for r in rows), rows
    assert not any(r["_ws.malformed"] or "malformed" in r["frame.protocols"] for r in rows), rows
