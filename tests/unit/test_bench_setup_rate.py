"""The call-setup benchmark's protocol-neutral parts and its H.323 cycle (bench/setup_rate.py,
bench/h323_cycle.py), without a gateway.

The H.323 cycle's verdict (:func:`bench.h323_cycle.classify`) is checked over every combination
of what a caller can see; whole cycles run against loopback callees written here with the codec
layer: one that never answers (the setup timeout), one that closes at once, and one that
answers with Fast Start, echoes RTP and then closes TCP after the release, or does not. The
ramp runs with fake callers (it stops at the first failing rate, per protocol), and the report
code is fed a synthetic two-protocol result: each protocol gets its row.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import threading
import time
from dataclasses import asdict
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import h323_cycle, setup_rate
from bench.h323_cycle import TimedCaller, classify, run_cycle
from h323 import h225, h245, q931, tpkt
from h323.q931 import MessageType
from tests.peers.h323_caller import CallerResult


def _caller(result: CallerResult, *, timed_out: bool = False, closed: bool | None = True) -> TimedCaller:
    fake = SimpleNamespace(result=result, setup_timed_out=timed_out, setup_timeout=5.0, closed_by_gateway=closed)
    return cast(TimedCaller, fake)


@settings(max_examples=200, deadline=None)
@given(connected=st.booleans(), fast_start=st.booleans(), rtp_in=st.integers(0, 3),
       released_by=st.sampled_from([None, "caller", "callee", "caller-setup-timeout"]),
       error=st.sampled_from([None, "timeout", "ConnectionRefusedError: [Errno 111]"]),
       timed_out=st.booleans(), closed=st.sampled_from([None, False, True]))
def test_a_cycle_passes_exactly_when_every_step_did(connected: bool, fast_start: bool, rtp_in: int,
                                                    released_by: str | None, error: str | None,
                                                    timed_out: bool, closed: bool | None) -> None:
    r = CallerResult(connected=connected, fast_start_accepted=fast_start, rtp_in=rtp_in,
                     released_by=released_by, error=error, release_reason="gatewayResources",
                     release_cause=47)
    kind = classify(_caller(r, timed_out=timed_out, closed=closed))
    every_step = (connected and fast_start and rtp_in > 0 and released_by != "callee" and error is None
                  and not timed_out and closed is True)
    assert (kind is None) == every_step
    if released_by == "callee":
        assert kind == "released by the gateway: gatewayResources (cause 47)"
    elif timed_out:
        assert kind == "no Connect within 5 s"


def test_a_gateway_release_names_reason_cause_and_display() -> None:
    r = CallerResult(released_by="callee", release_reason="calledPartyNotRegistered", release_cause=1,
                     release_display="refused by rule protocols")
    assert classify(_caller(r)) == ("released by the gateway: calledPartyNotRegistered (cause 1, "
                                    "'refused by rule protocols')")


def test_close_is_seen_after_data_and_not_while_the_peer_holds_the_connection() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert not h323_cycle._wait_for_close(ours, time.monotonic() + 0.2)  # held open
        theirs.sendall(tpkt.encode(b"\x08\x02\x00\x01\x5a"))  # a last message, then the close
        theirs.close()
        assert h323_cycle._wait_for_close(ours, time.monotonic() + 2.0)


class _SilentGateway:
    """A TCP listener on 127.0.0.1 that accepts one connection and records what arrives, and
    never answers; ``close_at_once`` closes the connection right after accepting it instead."""

    def __init__(self, *, close_at_once: bool = False) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: list[bytes] = []
        self.close_at_once = close_at_once
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            if self.close_at_once:
                return
            framer = tpkt.TpktFramer()
            conn.settimeout(10)
            while data := conn.recv(65536):
                self.received.extend(framer.feed(data))

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.listener.close()


def test_no_connect_within_the_setup_timeout_fails_the_cycle_and_releases() -> None:
    gw = _SilentGateway()
    try:
        out = run_cycle(gw.port, "1000", media_s=0.1, setup_timeout=0.3, scheduled_at=time.monotonic())
    finally:
        gw.close()
    assert out.failure == "no Connect within 0.3 s" and out.setup_ms is None
    messages = [q931.parse(p) for p in gw.received]
    assert [m.message_type for m in messages] == [MessageType.SETUP, MessageType.RELEASE_COMPLETE]
    assert messages[0].user_user is not None
    setup = h225.decode(messages[0].user_user)  # the quickest path: Fast Start and tunnelling
    assert isinstance(setup.body, h225.Setup) and setup.body.fast_start and setup.h245_tunnelling


def test_a_connection_closed_before_connect_fails_the_cycle() -> None:
    gw = _SilentGateway(close_at_once=True)
    try:
        out = run_cycle(gw.port, "1000", media_s=0.1, setup_timeout=5.0, scheduled_at=time.monotonic())
    finally:
        gw.close()
    assert out.setup_ms is None
    assert out.failure is not None
    assert out.failure == "connection closed before Connect" or out.failure.startswith("setup: ")


class _ScriptedGateway:
    """A loopback H.323 callee that answers Setup with a Connect carrying a Fast Start answer
    (PCMU to its own RTP socket), echoes every RTP packet, and on the caller's ReleaseComplete
    closes the connection, or (``hold_open``) keeps it open until the test is done."""

    def __init__(self, *, hold_open: bool = False) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.hold_open, self.echoed = hold_open, 0
        self.received: list[MessageType] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _connect(self, setup_msg: q931.Q931Message) -> bytes:
        assert setup_msg.user_user is not None
        setup = h225.decode(setup_msg.user_user).body
        assert isinstance(setup, h225.Setup)
        host, port = self.rtp.getsockname()
        answer = h245.OpenLogicalChannel(1, h245.LogicalChannelParameters(
            h245.MediaType("audioData", "g711Ulaw64k", 20), 1, h245.UnicastAddress(host, port),
            h245.UnicastAddress(host, port + 1)))
        body = h225.Connect(setup.call_identifier, fast_start=(h245.encode_olc(answer),),
                            conference_id=setup.conference_id)
        info = h225.UserInformation(body, h245_tunnelling=True)
        return tpkt.encode(setup_msg.reply(MessageType.CONNECT).with_user_user(info.encode(role="gateway")).encode())

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        framer, released_at = tpkt.TpktFramer(), None
        with conn:
            while released_at is None or (self.hold_open and not self.done.is_set()):
                readable, _, _ = select.select([conn, self.rtp], [], [], 0.05)
                if self.rtp in readable:
                    data, addr = self.rtp.recvfrom(2048)
                    self.rtp.sendto(data, addr)
                    self.echoed += 1
                if conn in readable and released_at is None:
                    data = conn.recv(65536)
                    if not data:
                        return
                    for payload in framer.feed(data):
                        msg = q931.parse(payload)
                        self.received.append(msg.message_type)
                        if msg.message_type is MessageType.SETUP:
                            conn.sendall(self._connect(msg))
                        elif msg.message_type is MessageType.RELEASE_COMPLETE:
                            released_at = time.monotonic()

    def close(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)
        self.listener.close()
        self.rtp.close()


@pytest.mark.parametrize("hold_open", [False, True], ids=["gateway-closes", "gateway-holds-tcp"])
def test_a_whole_cycle_passes_only_when_the_gateway_closes_tcp_after_release(hold_open: bool) -> None:
    gw = _ScriptedGateway(hold_open=hold_open)
    try:
        out = run_cycle(gw.port, "1000", media_s=0.3, setup_timeout=5.0, scheduled_at=time.monotonic())
    finally:
        gw.close()
    assert gw.received[0] is MessageType.SETUP and gw.received[-1] is MessageType.RELEASE_COMPLETE
    assert gw.echoed > 0 and out.setup_ms is not None and out.setup_ms >= 0
    if hold_open:
        assert out.failure == "gateway did not close TCP within 2 s of ReleaseComplete"
    else:
        assert out.failure is None


def _step(protocol: str, rate: float, ok: int, cycles: int, failures: dict[str, int]) -> dict[str, Any]:
    return {"protocol": protocol, "offered_cps": rate, "cycles": cycles, "ok": ok, "failed": cycles - ok,
            "failure_pct": 100 * (cycles - ok) / cycles, "failures": failures, "completed_cps": ok / 10,
            "setup_ms_p50": 80.0, "setup_ms_p99": 300.0, "callers_cpu_ms_per_cycle": 20.0,
            "cpu_ms_per_cycle": {"gateway": 100.0 + rate, "core": 50.0}, "passed": cycles == ok}


def test_the_table_has_a_row_per_protocol_and_names_failure_kinds() -> None:
    kind = "released by the gateway: gatewayResources (cause 47)"
    reps = [
        {"protocol": "sip", "run": 1, "max_cps": 2.0, "at_ceiling": True,
         "rates": [_step("sip", 1, 10, 10, {}), _step("sip", 2, 20, 20, {})]},
        {"protocol": "h323", "run": 1, "max_cps": 1.0, "at_ceiling": False,
         "rates": [_step("h323", 1, 10, 10, {}), _step("h323", 2, 15, 20, {kind: 5})]},
    ]
    result = {"settings": {**asdict(setup_rate.Settings()), "media_s": 1.0},
              "machine": {"nproc": 2, "cpu_model": "test", "kernel": "6", "versions": {"python": "3"}},
              "reps": reps, **setup_rate.aggregate(reps)}
    assert result["protocols"]["sip"]["max_cps"]["median"] == 2.0
    assert result["protocols"]["h323"]["cpu_ms_per_cycle_gateway"]["median"] == 101.0  # at its passing rate
    text = setup_rate.table(result)
    assert "| sip | INVITE -> 200 (WebRTC leg joined)" in text and ">= 2.0 (ramp ceiling)" in text
    assert "| h323 | Setup (Fast Start G.711, H.245 tunnelled) -> Connect" in text
    assert f"| h323 | 1 | 2 | 15 / 20 | 1.5 | 80 / 300 | 102.0 / 50.0 / 20.0 | 5 x {kind} |" in text


def test_protocol_settings() -> None:
    assert setup_rate.Settings().protocols == ("sip", "h323")
    assert setup_rate.settings_from(True, None, protocol="h323").protocols == ("h323",)
    with pytest.raises(ValueError, match="protocol"):
        setup_rate.settings_from(False, None, protocol="iax")
    rig = cast(Any, SimpleNamespace(h323_port=None))
    with pytest.raises(ValueError, match="H.323 listener"):
        setup_rate.callers_for("h323", rig, setup_rate.Settings())


class _FakeCallers:
    """One offered rate's callers: every cycle passes, or (``failing``) every odd-numbered one fails."""

    def __init__(self, protocol: str, failing: bool) -> None:
        self.protocol, self.failing, self.start_lags_ms = protocol, failing, [0.5]

    async def cycle(self, meeting: str) -> dict[str, Any]:
        if self.failing and int(meeting) % 2:
            return {"ok": False, "failure": "no Connect within 5 s", "setup_ms": None}
        return {"ok": True, "failure": None, "setup_ms": 10.0 + int(meeting) % 7}

    async def close(self) -> None:
        pass


def test_the_ramp_stops_at_the_first_failing_rate_for_each_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    good_rates = {"sip": 3, "h323": 1}  # SIP passes 1, 2, 4 and fails at 8; H.323 passes 1, fails at 2
    made: dict[str, int] = {"sip": 0, "h323": 0}

    def callers_for(protocol: str, rig: Any, settings: Any) -> _FakeCallers:
        made[protocol] += 1
        return _FakeCallers(protocol, failing=made[protocol] > good_rates[protocol])

    monkeypatch.setattr(setup_rate, "callers_for", callers_for)
    rig = cast(Any, SimpleNamespace(pids={"gateway": os.getpid(), "core": os.getpid()}, alive=lambda: True))
    settings = setup_rate.Settings(duration=1.0, settle_s=0.0, max_rate=64.0)
    reps = asyncio.run(setup_rate.ramp(rig, settings, log=lambda line: None))
    assert [r["protocol"] for r in reps] == ["sip", "h323"]
    sip, h323 = reps
    assert [s["offered_cps"] for s in sip["rates"]] == [1, 2, 4, 8] and sip["max_cps"] == 4
    assert [s["offered_cps"] for s in h323["rates"]] == [1, 2] and h323["max_cps"] == 1
    failed = h323["rates"][-1]
    assert not failed["passed"] and failed["failures"] == {"no Connect within 5 s": failed["failed"]} == {
        "no Connect within 5 s": 1}
    for step in sip["rates"] + h323["rates"]:
        assert step["ok"] + step["failed"] == step["cycles"] == step["offered_cps"]
        assert step["start_lag_ms_p99"] == 0.5 and step["callers_cpu_ms_per_cycle"] >= 0
        assert step["setup_ms_p50"] is not None
