"""The test/bench SIP UAC (tests/support/sip_uac.py) against the real gateway, and on its own.

Against ``roomgate run``: two UAC callers join one meeting, each sends a G.711 tone of its
own, and each must hear the other's tone (FFT) and not its own: the INVITE/200/ACK, the
SDP answer and the RTP port it names are all proven by the audio. INFO and BYE get their
200s; a policy refusal surfaces as ``CallFailed(403)``; the gateway's own BYE (at shutdown)
resolves ``call.ended``.

On its own, against a scripted UDP peer: Timer A retransmits the INVITE until a response,
a non-2xx is ACKed with the INVITE's branch, and hostile datagrams are dropped and counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.callmedia import CallAudio, measure
from sip.message import SipRequest, make_response, parse_message
from sip.timers import TimerValues
from tests.interop.test_walking_skeleton import run_on_private_loop
from tests.support.audio import analyse, assert_tone
from tests.support.gateway_process import GatewayProcess
from tests.support.sip_uac import CallFailed, SipUac, offer_sdp

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"
TONE_A, TONE_B = 700.0, 1300.0


async def _two_callers(gw: GatewayProcess, seconds: float) -> dict[str, object]:
    uac = await SipUac.create(local_host=HOST)
    a, port_a = await CallAudio.bind(HOST, tone_hz=TONE_A, burst_ms=600, period_ms=1000,
                                     codes=1)
    b, port_b = await CallAudio.bind(HOST, tone_hz=TONE_B, burst_ms=600, period_ms=1000,
                                     codes=1)
    try:
        call_a = await uac.invite(gw.sip_uri("1000"), offer_sdp(HOST, port_a), timeout=20)
        call_b = await uac.invite(gw.sip_uri("1000"), offer_sdp(HOST, port_b), timeout=20)
        for call, audio in ((call_a, a), (call_b, b)):
            m = call.answer_sdp.media[0]
            assert m.port in gw.media_ports and m.formats[0] == "0", str(call.answer_sdp)
            audio.start((m.connection_address or HOST, m.port))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(seconds)
        window = (t0 + 1.0, loop.time())
        info = await call_a.info("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n")
        bye_a = await call_a.bye()
        bye_b = await call_b.bye()
        return {"a": a, "b": b, "info": info.status, "bye": (bye_a.status, bye_b.status),
                "a_to_b": measure(a, b, window), "b_to_a": measure(b, a, window),
                "tags": (call_a.remote_tag, call_b.remote_tag)}
    finally:
        await a.stop()
        await b.stop()
        await uac.close()


def test_two_uac_callers_hear_each_other_through_the_gateway(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    gw = gateway_factory()
    out = run_on_private_loop(_two_callers(gw, seconds=5.0), timeout=90)
    a, b = out["a"], out["b"]
    assert isinstance(a, CallAudio) and isinstance(b, CallAudio)
    assert out["info"] == 200 and out["bye"] == (200, 200)
    assert all(out["tags"])  # type: ignore[union-attr]
    heard_by_a, heard_by_b = a.audio(), b.audio()
    spec_a = assert_tone(heard_by_a, 8000, TONE_B, min_dbfs=-45, skip_seconds=1.0)
    spec_b = assert_tone(heard_by_b, 8000, TONE_A, min_dbfs=-45, skip_seconds=1.0)
    # Each hears the other, not itself (the core's mix excludes the listener).
    assert spec_a.level_at(TONE_A) < -20 and spec_b.level_at(TONE_B) < -20
    for key in ("a_to_b", "b_to_a"):
        m = out[key]
        print(f"{key}: {m}")
        assert m.received > 0 and m.bursts_heard >= 1  # type: ignore[attr-defined]
    gw.wait_for_event("call.ended", timeout=10)


async def _refused_then_ended(gw: GatewayProcess) -> tuple[int, str, str]:
    uac = await SipUac.create(local_host=HOST)
    audio, port = await CallAudio.bind(HOST)
    try:
        with pytest.raises(CallFailed) as refused:
            await uac.invite(gw.sip_uri("2000"), offer_sdp(HOST, port), timeout=20)
        call = await uac.invite(gw.sip_uri("1000"), offer_sdp(HOST, port), timeout=20)
        seen: list[str] = []
        call.on_request = lambda req: seen.append(req.method)
        await asyncio.get_running_loop().run_in_executor(None, gw.stop)  # SIGTERM: hangs up
        bye = await asyncio.wait_for(call.ended, 15)
        return refused.value.status, bye.method, ",".join(seen)
    finally:
        await audio.stop()
        await uac.close()


def test_refusal_is_call_failed_and_gateway_bye_ends_the_call(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    gw = gateway_factory(policy={"meetings": {"2000": {"protocols": ["h323"]}}})
    status, method, seen = run_on_private_loop(_refused_then_ended(gw), timeout=60)
    assert status == 403
    assert method == "BYE" and seen == "BYE"


# -- on its own, against a scripted peer ---------------------------------------------------------

class _ScriptedUas(asyncio.DatagramProtocol):
    """Ignores the first ``silent`` INVITEs, then answers ``status``; records every request."""

    def __init__(self, silent: int, status: int) -> None:
        self.silent, self.status = silent, status
        self.requests: list[SipRequest] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        req = parse_message(data)
        assert isinstance(req, SipRequest)
        self.requests.append(req)
        invites = [r for r in self.requests if r.method == "INVITE"]
        if req.method == "INVITE" and len(invites) > self.silent and self.transport is not None:
            self.transport.sendto(bytes(make_response(req, 100)), addr)
            self.transport.sendto(bytes(make_response(req, self.status, to_tag="uas1")), addr)


async def _against_scripted(silent: int, status: int, timeout: float) -> tuple[int, _ScriptedUas]:
    loop = asyncio.get_running_loop()
    transport, uas = await loop.create_datagram_endpoint(
        lambda: _ScriptedUas(silent, status), local_addr=(HOST, 0))
    port = transport.get_extra_info("sockname")[1]
    uac = await SipUac.create(local_host=HOST, timer_values=TimerValues(t1=0.05))
    try:
        await uac.invite(f"sip:1000@{HOST}:{port}", offer_sdp(HOST, 40000), timeout=timeout)
        return 200, uas
    except CallFailed as exc:
        await asyncio.sleep(0.1)  # let the ACK arrive
        return exc.status, uas
    finally:
        await uac.close()
        transport.close()


def test_timer_a_retransmits_and_non_2xx_is_acked_in_its_transaction() -> None:
    status, uas = run_on_private_loop(_against_scripted(silent=3, status=486, timeout=5))
    assert status == 486
    methods = [r.method for r in uas.requests]
    assert methods == ["INVITE"] * 4 + ["ACK"], methods
    invite, ack = uas.requests[0], uas.requests[-1]
    assert {bytes(r) for r in uas.requests[:4]} == {bytes(invite)}  # the same INVITE each time
    assert ack.top_via is not None and invite.top_via is not None
    assert ack.top_via.branch == invite.top_via.branch and ack.cseq == (1, "ACK")


def test_no_answer_is_408_after_retransmissions() -> None:
    status, uas = run_on_private_loop(_against_scripted(silent=99, status=200, timeout=0.5))
    assert status == 408
    # T1 = 50 ms: sent at 0, 50, 150, 350 ms within the 0.5 s timeout.
    assert len([r for r in uas.requests if r.method == "INVITE"]) >= 3


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600) | st.builds(
    lambda head, tail: head + tail,
    st.sampled_from([b"SIP/2.0 200 OK\r\n", b"BYE sip:a@b SIP/2.0\r\n", b"INVITE sip:x SIP/2.0\r\n"]),
    st.binary(max_size=300)))
def test_hostile_datagrams_are_dropped_never_raised(data: bytes) -> None:
    async def feed() -> int:
        uac = await SipUac.create(local_host=HOST)
        try:
            uac._datagram(data, ("127.0.0.1", 5060))
            return uac.dropped
        finally:
            await uac.close()

    assert run_on_private_loop(feed()) in (0, 1)


def test_measure_finds_burst_latency_on_a_local_loop() -> None:
    """The audio latency meter on a direct loop (no gateway): latency is the loop's, tiny."""

    async def loop_back() -> tuple[CallAudio, CallAudio, tuple[float, float]]:
        a, _ = await CallAudio.bind(HOST, tone_hz=700.0)
        b, port_b = await CallAudio.bind(HOST, tone_hz=700.0)
        a.start((HOST, port_b))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(5.0)
        await a.stop()
        await b.stop()
        return a, b, (t0, loop.time())

    a, b, window = run_on_private_loop(loop_back())
    m = measure(a, b, window)
    print(m)
    assert m.bursts_sent >= 3 and m.bursts_heard == m.bursts_sent
    assert all(0 <= x < 40 for x in m.latencies_ms)  # one 20 ms frame of onset resolution
    # The bursts cycle through a.codes tones: every one of them arrived.
    heard = {round(analyse(np.concatenate(b.received.pcm[i:i + 5]), 8000).peak_hz / 50) * 50
             for i in range(0, len(b.received.pcm) - 5, a.period_frames)}
    assert {a.burst_hz(k) for k in range(a.codes)} <= heard
