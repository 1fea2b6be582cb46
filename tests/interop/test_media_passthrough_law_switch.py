"""The G.711 fast path follows a PCMU -> PCMA re-INVITE (``media.passthrough: auto``).

A SIP caller (tests/support/sip_uac.py, its RTP from a socket of this test) joins a meeting with
an aiortc participant through the gateway process; the call takes the fast path with PCMU.
After 3 s the caller re-INVITEs offering only PCMA (same address and port) and from the 200 OK
on sends A-law.  The core keeps the PCMU it answered at the join, so the gateway translates the
law per packet both ways (bridge.fastpath.LawFollower).

Measured, before and after the switch: the caller's 1 kHz at the participant and the
participant's 440 Hz at the caller (FFT), plus how much of each recording's energy is the tone
(a payload read in the wrong law is mostly noise: this is what fails without the translation);
the gateway's packets to the caller carry payload type 8 after the switch; the fast path stays
undecoded (``webrtc_in == 0`` at close) and logs ``bridge.fastpath.law_changed`` both ways.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import numpy as np
import pytest

from bridge.codecs import PCMA, PCMU, AudioCodec
from bridge.ice import use_host_addresses
from bridge.rtp import RtpError, RtpPacket
from sip.dialog import new_branch
from sip.message import SipResponse
from tests.interop.test_bridge_webrtc_leg import MEETING, WebPeer
from tests.support.audio import assert_tone
from tests.support.core_server import loop_and_reactor, run
from tests.support.gateway_process import running_gateway
from tests.support.sip_uac import CallFailed, SipUac, UacCall, offer_sdp

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"
CALLER_HZ, PARTICIPANT_HZ = 1000.0, 440.0


class SwitchingCaller(asyncio.DatagramProtocol):
    """The caller's RTP: a continuous tone in ``law`` (switchable mid-call, same SSRC and
    socket) and, for each packet the gateway sends, its arrival time, payload type and PCM
    decoded in the law its payload type names."""

    def __init__(self) -> None:
        self.law: AudioCodec = PCMU
        self.received: list[tuple[float, int, np.ndarray]] = []
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            return
        law = {PCMU.payload_type: PCMU, PCMA.payload_type: PCMA}.get(packet.payload_type)
        if law is not None and len(packet.payload) == 160:
            self.received.append((asyncio.get_running_loop().time(), packet.payload_type,
                                  law.decoder().decode(packet.payload)))

    def start(self, remote: tuple[str, int]) -> None:
        self._task = asyncio.get_running_loop().create_task(self._send(remote))

    async def _send(self, remote: tuple[str, int]) -> None:
        loop, ssrc = asyncio.get_running_loop(), secrets.randbits(32)
        start, index = loop.time(), 0
        while self._transport is not None and not self._transport.is_closing():
            n = np.arange(index * 160, (index + 1) * 160)
            pcm = (np.sin(2 * np.pi * CALLER_HZ * n / 8000) * 0.3 * 32767).astype(np.int16)
            packet = RtpPacket(self.law.payload_type, index & 0xFFFF, index * 160, ssrc,
                               self.law.encoder().encode(pcm))
            self._transport.sendto(bytes(packet), remote)
            index += 1
            await asyncio.sleep(max(0.0, start + index * 0.02 - loop.time()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()


async def reinvite(call: UacCall, sdp: str, timeout: float = 10.0) -> SipResponse:
    """A re-INVITE with an SDP offer in the dialog (RFC 3261 14.1), ACKed (13.2.2.4).  The test
    UAC sends re-INVITEs only without SDP, so this uses its transaction machinery directly."""
    uac = call.uac
    req = call.dialog.build_request("INVITE", uac._via(new_branch()))
    req.headers.add("Contact", uac.contact)
    req.headers.add("Content-Type", "application/sdp")
    req.body = sdp.encode()
    ctx = uac._start(req, uac._target_addr(call))
    resp = await asyncio.wait_for(asyncio.shield(ctx.future), timeout)
    if resp.status >= 300:
        raise CallFailed(resp.status, resp.reason)
    call.dialog.local_seq -= 1  # the ACK takes the re-INVITE's CSeq number
    call.ack = bytes(call.dialog.build_request("ACK", uac._via(new_branch())))
    call.offer = sdp
    uac._sendto(call.ack, uac._target_addr(call))
    return resp


def tone_share_db(samples: np.ndarray, rate: int, frequency: float, width: float = 40.0) -> float:
    """Energy within ``width`` Hz of ``frequency`` over the rest (above 50 Hz), in dB."""
    x = np.asarray(samples, dtype=np.float64)
    power = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    band = np.abs(freqs - frequency) < width
    rest = (~band) & (freqs > 50)
    return float(10 * np.log10(power[band].sum() / (power[rest].sum() + 1e-12)))


def test_a_pcmu_to_pcma_reinvite_keeps_the_tone_both_ways_on_the_fast_path(tmp_path: Path) -> None:
    _, reactor = loop_and_reactor()
    use_host_addresses([HOST])
    with running_gateway(tmp_path / "gw", config={"media": {"passthrough": "auto"}}) as gw:
        async def scenario() -> dict[str, object]:
            loop = asyncio.get_running_loop()
            peer = WebPeer(gw.http_url, reactor, frequency=PARTICIPANT_HZ)
            await peer.join()
            transport, caller = await loop.create_datagram_endpoint(SwitchingCaller, local_addr=(HOST, 0))
            port = transport.get_extra_info("sockname")[1]
            uac = await SipUac.create(local_host=HOST)
            sid = secrets.randbelow(2**31)
            try:
                call = await uac.invite(gw.sip_uri(MEETING), offer_sdp(HOST, port, (0,), session_id=sid),
                                        timeout=20)
                caller.start((HOST, call.answer_sdp.media[0].port))
                await asyncio.sleep(3.0)
                heard_before = len(peer.heard)
                pcma_offer = offer_sdp(HOST, port, (8,), session_id=sid).replace(
                    f"o=- {sid} 1 IN", f"o=- {sid} 2 IN")
                resp = await reinvite(call, pcma_offer)
                caller.law = PCMA
                switched = loop.time()
                heard_switch = len(peer.heard)
                await asyncio.sleep(4.0)
                await call.bye()
                await peer.leave()
                return {"answer": resp.body.decode(), "switched": switched, "received": caller.received,
                        "peer_before": peer.heard[max(0, heard_before - 100):heard_before],
                        "peer_after": peer.heard[heard_switch + 50:]}
            finally:
                await caller.stop()
                await uac.close()

        out = run(scenario(), timeout=90)
        up = gw.wait_for_event("bridge.leg.up", timeout=10, leg="webrtc")
        closed = gw.wait_for_event("bridge.session.closed", timeout=10)
        answered = gw.wait_for_event("call.reoffer_answered", timeout=10)
        changed = gw.events("bridge.fastpath.law_changed")

    assert "RTP/AVP 8" in str(out["answer"]) and answered["codec"] == "PCMA"
    switched = float(out["switched"])  # type: ignore[arg-type]
    received: list[tuple[float, int, np.ndarray]] = out["received"]  # type: ignore[assignment]
    before = [pcm for at, pt, pcm in received if at < switched and pt == 0]
    after = [(pt, pcm) for at, pt, pcm in received if at > switched + 0.5]
    after_pts = {pt for pt, _ in after}
    at_caller_before, at_caller_after = np.concatenate(before[-100:]), np.concatenate([p for _, p in after])
    peer_before: list[np.ndarray] = out["peer_before"]  # type: ignore[assignment]
    peer_after: list[np.ndarray] = out["peer_after"]  # type: ignore[assignment]
    at_peer_before, at_peer_after = np.concatenate(peer_before), np.concatenate(peer_after)
    figures = []
    for name, samples, rate, hz in (("caller before", at_caller_before, 8000, PARTICIPANT_HZ),
                                    ("caller after", at_caller_after, 8000, PARTICIPANT_HZ),
                                    ("participant before", at_peer_before, 48000, CALLER_HZ),
                                    ("participant after", at_peer_after, 48000, CALLER_HZ)):
        spectrum = assert_tone(samples, rate, hz, min_dbfs=-35, skip_seconds=0.0)
        share = tone_share_db(samples, rate, hz)
        figures.append((name, spectrum.peak_hz, spectrum.rms_dbfs, share))
        print(f"{name}: {spectrum.peak_hz:.0f} Hz at {spectrum.rms_dbfs:.1f} dBFS, "
              f"tone {share:.1f} dB over the rest ({samples.size / rate:.1f} s)")
    print(f"after the switch the caller got payload types {sorted(after_pts)} in {len(after)} packets; "
          f"law_changed: {[(e['direction'], e['legacy']) for e in changed]}; {up}; {closed}")
    assert up["path"] == "passthrough"
    assert after_pts == {8} and len(after) > 100
    for _name, _peak, _rms, share in figures:
        # Measured: 21-44 dB with the translation; 2-8 dB with a payload read in the wrong law.
        assert share > 15
    assert {(e["direction"], e["legacy"]) for e in changed} == {("to_core", "PCMA"), ("to_legacy", "PCMA")}
    assert closed["webrtc_in"] == 0 and closed["codec"] == "PCMA"
