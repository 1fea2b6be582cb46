"""IRQ/IRR against the real gateway process (issue 5, slice 3; H.225.0 7.7.18-7.7.19).

- ``h323.ras.gatekeeper``: the project's RAS peer (tests/peers/ras_peer.py) is the gatekeeper
  and its ACF asks for an IRR every second (``irrFrequency``).  During a call from the project's
  H.323 caller (tones measured both ways, so the call really carries media) the gateway sends
  unsolicited IRRs naming that call, and answers the peer's IRQ (call reference 0) with an IRR
  carrying the IRQ's sequence number and the call's call identifier (the one in its ARQ).
  After the DRQ an IRQ gets an IRR with no call in it.
- ``h323.gatekeeper: own``: an endpoint's IRR with ``needResponse`` gets an IACK.
tshark decodes every datagram the gateway sends as RAS, none malformed.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.interop.test_h323_calls import H323Gateway, h323_call_with_webrtc_peer
from tests.interop.test_h323_ras import (
    POLICY,
    _require_tshark,
    free_udp_port,
    ras_sent_by,
)
from tests.interop.test_walking_skeleton import (
    BROWSER_HZ,
    CALLER_HZ,
    run_on_private_loop,
)
from tests.peers.ras_peer import EndpointPeer, GatekeeperPeer
from tests.support.audio import assert_tone
from tests.support.gateway_process import free_tcp_port, start_gateway
from tests.support.tshark import capture

pytestmark = pytest.mark.interop


def _guids(msg: object) -> list[bytes]:
    return [p["callIdentifier"]["guid"] for p in msg.value.get("perCallInfo", [])]  # type: ignore[attr-defined]


def test_gateway_answers_irq_and_sends_unsolicited_irrs(tmp_path: Path) -> None:
    _require_tshark()
    ras_port, sig_port = free_udp_port(), free_tcp_port()
    with GatekeeperPeer(time_to_live=60, irr_frequency=1) as gk, capture([ras_port], tmp_path / "ras.pcapng"):
        gw = start_gateway(tmp_path / "gw", policy=POLICY, config={"h323": {
            "listen": f"127.0.0.1:{sig_port}",
            "ras": {"listen": f"127.0.0.1:{ras_port}", "gatekeeper": f"127.0.0.1:{gk.port}",
                    "aliases": ["roomgate", "3200"], "time_to_live": 60}}})
        asked: list[int] = []
        try:
            gk.wait_for("RRQ", keep_alive=False)

            def irq_during_the_call() -> None:
                gk.wait_for("ARQ", timeout=60)
                time.sleep(1.0)  # admitted and answered; the call lasts 4 s more
                asked.append(gk.irq(0))

            timer = threading.Thread(target=irq_during_the_call, daemon=True)
            timer.start()
            result, heard = run_on_private_loop(h323_call_with_webrtc_peer(
                H323Gateway(gw, sig_port), "3200", seconds=4.0))
            timer.join()
            assert result.connected and result.error is None, result
            assert_tone(heard, 48000, CALLER_HZ, min_dbfs=-35, skip_seconds=0.2)
            samples, rate = result.recording()
            assert_tone(samples, rate, BROWSER_HZ, min_dbfs=-35, skip_seconds=1.0)
            [arq] = gk.wait_for("ARQ")
            call_id = arq.message.value["callIdentifier"]["guid"]
            [drq] = gk.wait_for("DRQ", timeout=10)
            irrs = gk.wait_for("IRR", count=2)
            after = gk.irq(0)
            irrs = gk.wait_for("IRR", count=len(irrs) + 1)
        finally:
            gw.stop()
        gk.wait_for("URQ", timeout=5)
    unsolicited = [r for r in irrs if r.message.value.get("unsolicited")]
    answers = {r.message.request_seq_num: r for r in irrs if not r.message.value.get("unsolicited")}
    print(f"IRRs: {len(unsolicited)} unsolicited during the call, answers to IRQs {sorted(answers)}")
    assert len(unsolicited) >= 2, gk.names()  # a 4 s call at irrFrequency 1 s
    assert all(_guids(r.message) == [call_id] for r in unsolicited)
    assert all(r.at < drq.at + 0.5 for r in unsolicited)  # none after the call was disengaged
    [during] = [answers[s] for s in asked]
    assert _guids(during.message) == [call_id]
    assert during.message.value["irrStatus"][0] == "complete"
    assert during.message.endpoint_identifier == gk.endpoint_id
    assert during.message.addresses("callSignalAddress")[0].port == sig_port
    assert _guids(answers[after].message) == []
    assert gk.undecodable == 0
    names, verbose = ras_sent_by(tmp_path / "ras.pcapng", ras_port)
    print(f"tshark RAS message kinds from the gateway: {names}")
    assert len(names) == len(gk.received), (names, gk.names())
    assert names.count("22") == len(irrs), names  # RasMessage alternative 22: infoRequestResponse
    assert "Malformed" not in verbose and "Expert Info (Error" not in verbose, verbose[-3000:]


def test_own_gatekeeper_accepts_an_irr_and_acks_it(tmp_path: Path) -> None:
    _require_tshark()
    ras_port, sig_port = free_udp_port(), free_tcp_port()
    gw = start_gateway(tmp_path / "gw", policy=POLICY, config={"h323": {
        "listen": f"127.0.0.1:{sig_port}", "gatekeeper": "own",
        "ras": {"listen": f"127.0.0.1:{ras_port}", "time_to_live": 30}}})
    ep = EndpointPeer(("127.0.0.1", ras_port), alias="alice")
    try:
        with capture([ras_port], tmp_path / "ras.pcapng"):
            assert ep.rrq().name == "registrationConfirm"
            iack = ep.irr(bytes(range(16)))
            assert iack.name == "infoRequestAck", iack
        irr_event = gw.wait_for_event("h323.gatekeeper.irr")
        assert irr_event["endpoint"] == ep.endpoint_id and irr_event["calls"] == 1
    finally:
        ep.close()
        gw.stop()
    names, verbose = ras_sent_by(tmp_path / "ras.pcapng", ras_port)
    assert len(names) == 2, names
    assert "Malformed" not in verbose and "Expert Info (Error" not in verbose, verbose[-3000:]
