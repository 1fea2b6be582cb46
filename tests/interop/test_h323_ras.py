"""RAS against the real gateway process (issue 5, "done when" 4 and 2 for RAS).

- ``h323.gatekeeper: own``: the project's RAS peer (tests/peers/ras_peer.py, written from
  H.225.0 with the codec layer only) acts as an endpoint: GRQ/GCF, RRQ/RCF with timeToLive, a
  lightweight keep-alive RRQ, ARQ -> ACF naming the gateway's call-signalling address, a call
  from the project's H.323 caller to that address with tones both ways, DRQ/DCF, LRQ -> LCF/LRJ,
  URQ/UCF.
- ``h323.ras.gatekeeper``: the peer acts as the gatekeeper: the gateway registers (RRQ/RCF),
  sends keep-alive RRQs before the short timeToLive runs out, asks ARQ (answerCall) before
  answering a call and DRQ after it, gets an ARJ for another meeting (the caller gets a
  ReleaseComplete with ``noPermission``), and sends URQ when it gets SIGTERM.
Both capture the RAS port: tshark decodes every datagram the gateway sends as H.225.0 RAS, none
malformed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.interop.test_h323_calls import H323Gateway, h323_call_with_webrtc_peer
from tests.interop.test_walking_skeleton import (
    BROWSER_HZ,
    CALLER_HZ,
    run_on_private_loop,
)
from tests.peers.h323_caller import run_h323_call
from tests.peers.ras_peer import EndpointPeer, GatekeeperPeer
from tests.support.audio import assert_tone
from tests.support.gateway_process import free_tcp_port, start_gateway
from tests.support.tshark import TSHARK, capture

pytestmark = pytest.mark.interop

POLICY = {"meetings": {"2000": {"protocols": ["sip"]}}}


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ras_sent_by(path: Path, port: int) -> tuple[list[str], str]:
    """tshark's verdict on every datagram from ``port``: the RAS message names and the verbose text."""
    args = [TSHARK, "-n", "-r", str(path), "-d", f"udp.port=={port},h225"]  # RAS on a test port
    flt = f"udp.srcport=={port}"
    names = subprocess.run(args + ["-Y", flt, "-T", "fields", "-e", "h225.RasMessage"],
                           capture_output=True, text=True, timeout=60, check=True).stdout.split()
    verbose = subprocess.run(args + ["-Y", flt, "-V"], capture_output=True, text=True, timeout=60, check=True).stdout
    frames = subprocess.run(args + ["-Y", flt], capture_output=True, text=True, timeout=60, check=True).stdout
    assert len(names) == len(frames.splitlines()), f"a datagram tshark does not see as RAS:\n{frames}"
    return names, verbose


def _require_tshark() -> None:
    if shutil.which(TSHARK) is None:
        pytest.fail("tshark is not installed (make test installs it)")


def test_gateway_as_gatekeeper(tmp_path: Path) -> None:
    _require_tshark()
    ras_port, sig_port = free_udp_port(), free_tcp_port()
    gw = start_gateway(tmp_path / "gw", policy=POLICY, config={"h323": {
        "listen": f"127.0.0.1:{sig_port}", "gatekeeper": "own",
        "ras": {"listen": f"127.0.0.1:{ras_port}", "time_to_live": 30}}})
    ep = EndpointPeer(("127.0.0.1", ras_port), alias="alice")
    try:
        with capture([ras_port], tmp_path / "ras.pcapng"):
            gcf = ep.grq()
            assert gcf.name == "gatekeeperConfirm" and gcf.gatekeeper_identifier == "roomgate"
            rcf = ep.rrq(ttl=600)
            assert rcf.name == "registrationConfirm" and rcf.time_to_live == 30 and rcf.endpoint_identifier
            assert ep.keep_alive().name == "registrationConfirm"
            call_id = bytes(range(16))
            acf = ep.arq("3300", call_id)
            assert acf.name == "admissionConfirm", acf
            [dest] = acf.addresses("destCallSignalAddress")
            assert (dest.host, dest.port) == ("127.0.0.1", sig_port)
            # the endpoint calls where the ACF points, and reaches the meeting
            result, heard = run_on_private_loop(h323_call_with_webrtc_peer(
                H323Gateway(gw, dest.port), "3300", seconds=3.0))
            assert result.connected and result.error is None, result
            assert_tone(heard, 48000, CALLER_HZ, min_dbfs=-35, skip_seconds=0.2)
            samples, rate = result.recording()
            assert_tone(samples, rate, BROWSER_HZ, min_dbfs=-35, skip_seconds=1.0)
            assert ep.drq(call_id).name == "disengageConfirm"
            assert ep.lrq("3300").name == "locationConfirm"
            assert ep.lrq("2000").abbreviation == "LRJ"  # policy: SIP only
            assert ep.arq("2000", call_id).abbreviation == "ARJ"
            assert ep.urq().name == "unregistrationConfirm"
            assert ep.arq("3300", call_id).abbreviation == "ARJ"  # no longer registered
            assert ep.keep_alive().abbreviation == "RRJ"
    finally:
        ep.close()
        gw.stop()
    assert [r for _q, r in ep.exchanges] == ["GCF", "RCF", "RCF", "ACF", "DCF", "LCF", "LRJ", "ARJ", "UCF",
                                            "ARJ", "RRJ"]
    names, verbose = ras_sent_by(tmp_path / "ras.pcapng", ras_port)
    assert len(names) == len(ep.exchanges), names
    assert "Malformed" not in verbose and "Expert Info (Error" not in verbose, verbose[-3000:]
    assert gw.events("h323.gatekeeper.registered") and gw.events("h323.gatekeeper.admitted")


def test_gateway_registers_to_a_gatekeeper(tmp_path: Path) -> None:
    _require_tshark()
    ras_port, sig_port = free_udp_port(), free_tcp_port()
    with GatekeeperPeer(time_to_live=4, reject=("3299",)) as gk, capture([ras_port], tmp_path / "ras.pcapng"):
        gw = start_gateway(tmp_path / "gw", policy=POLICY, config={"h323": {
            "listen": f"127.0.0.1:{sig_port}",
            "ras": {"listen": f"127.0.0.1:{ras_port}", "gatekeeper": f"127.0.0.1:{gk.port}",
                    "discover": True, "aliases": ["roomgate", "3200"], "prefixes": ["32"],
                    "time_to_live": 60}}})
        try:
            gk.wait_for("GRQ")
            [rrq] = gk.wait_for("RRQ", keep_alive=False)
            assert rrq.source == ("127.0.0.1", ras_port)
            assert [str(a.value) for a in rrq.message.aliases("terminalAlias")] == ["roomgate", "3200"]
            assert rrq.message.addresses("callSignalAddress")[0].port == sig_port
            # keep-alives before the granted 4 s run out (counted, not timed)
            keep = gk.wait_for("RRQ", keep_alive=True, count=2, timeout=20)
            assert all(k.message.endpoint_identifier == gk.endpoint_id for k in keep)
            # a call: ARQ (answerCall) before the gateway answers, DRQ after
            result, heard = run_on_private_loop(h323_call_with_webrtc_peer(
                H323Gateway(gw, sig_port), "3200", seconds=3.0))
            assert result.connected and result.error is None, result
            assert_tone(heard, 48000, CALLER_HZ, min_dbfs=-35, skip_seconds=0.2)
            [arq] = gk.wait_for("ARQ")
            assert arq.message.value["answerCall"] is True
            assert arq.message.endpoint_identifier == gk.endpoint_id
            [drq] = gk.wait_for("DRQ", timeout=10)
            assert drq.message.value["callIdentifier"] == arq.message.value["callIdentifier"]
            # the gatekeeper refuses the next call: released with a reason, never answered
            refused = run_h323_call("127.0.0.1", sig_port, "3299", seconds=2.0, timeout=20)
            assert not refused.connected
            assert refused.release_reason == "noPermission", refused
            assert gk.wait_for("ARQ", count=2)
            refusal = gw.wait_for_event("call.refused", meeting="3299")
            assert refusal["rule"] == "gatekeeper"
        finally:
            gw.stop()  # SIGTERM: URQ
        gk.wait_for("URQ", timeout=5)
    names = gk.names()
    assert names[0] == "GRQ" and names[1] == "RRQ" and names[-1] == "URQ", names
    assert names.count("DRQ") == 1, names  # the refused call was never admitted: no DRQ
    assert gk.undecodable == 0
    sent, verbose = ras_sent_by(tmp_path / "ras.pcapng", ras_port)
    assert len(sent) == len(names), (sent, names)
    assert "Malformed" not in verbose and "Expert Info (Error" not in verbose, verbose[-3000:]
