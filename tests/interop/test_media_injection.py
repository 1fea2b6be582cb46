"""RTP injected at a call's media port never reaches the meeting, and is counted (issue 4, done-when 3).

A real pjsua2 caller (1000 Hz) is in a meeting with an aiortc WHEP subscriber hearing the whole
mix and, for plain RTP, a second pjsua2 caller (700 Hz). Once the first caller's leg has latched
its source, strangers blast RTP carrying a loud 1900 Hz tone at that leg's port:

- plain RTP: from 127.0.0.1 on another port, and from 127.0.0.2 (loopback too on Linux, so a
  different host as far as the leg can tell). Both must be dropped as ``wrong_source``, which
  the gateway's ``/metrics`` reports (``roomgate_rtp_dropped{reason="wrong_source"}``).
- SDES-SRTP: packets protected with a wrong key, forged (raw socket) to come from the caller's
  own RTP address and port, the one the leg latched; they must fail authentication and be
  counted as such (``legacy_srtp_dropped`` in ``bridge.session.closed``).

The proof that nothing got through is the FFT of what the others heard: the caller's tone is
there, the injected tone is not.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import numpy as np
import pytest

from bridge.codecs import PCMU
from bridge.ice import use_host_addresses
from bridge.rtp import RtpPacket
from bridge.srtp import SdesSrtp
from tests.interop.test_walking_skeleton import run_on_private_loop
from tests.support.audio import analyse, tone, write_wav
from tests.support.gateway_process import GatewayProcess, free_tcp_port
from tests.support.pjsua import PjsuaResult, free_rtp_port, run_pjsua_call
from tests.support.webrtc_client import subscribe

pytestmark = pytest.mark.interop

MEETING = "5150"
CALLER_HZ = 1000.0
OTHER_CALLER_HZ = 700.0
INJECTED_HZ = 1900.0
INJECT_SECONDS = 3.0
SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"
SRTP_KEY_BYTES = 30


def injected_packets(count: int, *, ssrc: int) -> list[bytes]:
    """``count`` 20 ms PCMU RTP packets of a loud 1900 Hz tone (what a stranger would like heard)."""
    samples = tone(INJECTED_HZ, count * 0.02, rate=8000, amplitude=0.6)
    encoder = PCMU.encoder()
    return [bytes(RtpPacket(payload_type=0, sequence_number=(1000 + i) & 0xFFFF, timestamp=160 * i, ssrc=ssrc,
                            payload=encoder.encode(samples[160 * i:160 * (i + 1)])))
            for i in range(count)]


def forged_udp(payload: bytes, source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """An IPv4 + UDP datagram claiming to come from ``source`` (the kernel fills in the IP checksum
    and length; a zero UDP checksum means "none" in IPv4)."""
    udp = struct.pack("!HHHH", source[1], destination[1], 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                     socket.inet_aton(source[0]), socket.inet_aton(destination[0]))
    return ip + udp


class Injector:
    """Sends one packet per 20 ms from each of its sources for ``seconds``, in a thread; counts them."""

    def __init__(self, senders: list[Callable[[bytes], object]], packets: list[bytes]) -> None:
        self.senders = senders
        self.packets = packets
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="rtp-injector", daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        for i, packet in enumerate(self.packets):
            delay = start + 0.02 * i - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            for send in self.senders:
                send(packet)
                self.sent += 1

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=INJECT_SECONDS + 5)


def udp_sender(bind_ip: str, destination: tuple[str, int]) -> tuple[socket.socket, Callable[[bytes], object]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind_ip, 0))
    assert sock.getsockname()[1] != destination[1]
    return sock, lambda data: sock.sendto(data, destination)


def scrape_dropped(metrics_port: int, reason: str) -> float:
    """``roomgate_rtp_dropped{reason=...}`` from the gateway's /metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    match = re.search(rf'^roomgate_rtp_dropped(?:_total)?{{reason="{reason}"}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def assert_not_heard(who: str, samples: np.ndarray, rate: int, present_hz: float) -> None:
    """The legitimate tone is the strongest thing heard; the injected one is at least 40 dB under it."""
    spectrum = analyse(samples, rate)
    injected = spectrum.level_at(INJECTED_HZ)
    print(f"{who}: strongest {spectrum.peak_hz:.0f} Hz, {spectrum.rms_dbfs:.1f} dBFS; "
          f"{present_hz:.0f} Hz at {spectrum.level_at(present_hz):.1f} dB, injected {INJECTED_HZ:.0f} Hz at "
          f"{injected:.1f} dB (relative to the strongest)")
    assert spectrum.rms_dbfs > -40, f"{who} heard next to nothing ({spectrum.rms_dbfs:.1f} dBFS)"
    assert spectrum.level_at(present_hz) > -6, f"{who} does not hear {present_hz:.0f} Hz"
    assert injected < -40, f"{who} hears the injected tone at {injected:.1f} dB"


async def plain_scenario(gw: GatewayProcess, tmp_path: Path, metrics_port: int
                         ) -> tuple[PjsuaResult, np.ndarray, int, float]:
    loop = asyncio.get_running_loop()
    use_host_addresses(["127.0.0.1"])
    subscriber = await subscribe(gw.http_url, MEETING, video=False)
    try:
        caller_wav = write_wav(tmp_path / "caller.wav", tone(CALLER_HZ, 2.0, rate=8000), rate=8000)
        other_wav = write_wav(tmp_path / "other.wav", tone(OTHER_CALLER_HZ, 2.0, rate=8000), rate=8000)
        caller = loop.run_in_executor(None, lambda: run_pjsua_call(
            gw.sip_uri(MEETING), codec="PCMU", play_wav=caller_wav, seconds=10.0, timeout=40))
        await loop.run_in_executor(None, lambda: wait_until(
            lambda: bool(gw.events("bridge.rtp.latched")), "the caller's leg to latch"))
        leg_port = int(gw.events("call.answered")[0]["local_port"])
        other = loop.run_in_executor(None, lambda: run_pjsua_call(
            gw.sip_uri(MEETING), codec="PCMA", play_wav=other_wav, record_wav=tmp_path / "other-heard.wav",
            seconds=INJECT_SECONDS + 3.0, timeout=40))
        await loop.run_in_executor(None, lambda: wait_until(
            lambda: len(gw.events("call.answered")) >= 2, "the second caller to be answered"))
        await asyncio.sleep(1.0)

        before = scrape_dropped(metrics_port, "wrong_source")
        target = ("127.0.0.1", leg_port)
        sock_a, from_other_port = udp_sender("127.0.0.1", target)
        sock_b, from_other_host = udp_sender("127.0.0.2", target)
        try:
            with Injector([from_other_port, from_other_host],
                          injected_packets(int(INJECT_SECONDS / 0.02), ssrc=0x5EED)) as injector:
                heard = await subscriber.record(INJECT_SECONDS)
        finally:
            sock_a.close()
            sock_b.close()
        await asyncio.sleep(0.2)
        dropped = scrape_dropped(metrics_port, "wrong_source") - before
        other_result = await other
        await caller
    finally:
        await subscriber.close()
    return other_result, heard, injector.sent, dropped


def test_plain_rtp_from_other_sources_is_dropped_and_counted(
    gateway_factory: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    metrics_port = free_tcp_port()
    gw = gateway_factory(config={"metrics": {"listen": f"127.0.0.1:{metrics_port}"}})
    other, heard, sent, dropped = run_on_private_loop(plain_scenario(gw, tmp_path, metrics_port), timeout=120)

    print(f"injected {sent} packets from 127.0.0.1:<other port> and 127.0.0.2; "
          f"wrong_source drops counted meanwhile: {dropped:.0f}")
    assert sent > 250
    assert dropped >= sent, f"sent {sent} strangers' packets, {dropped:.0f} counted as wrong_source"
    assert_not_heard("WHEP subscriber (whole mix)", heard, 48000, CALLER_HZ)

    assert other.connected, other
    samples, rate = other.recording()
    # The injection ran from ~1 s after this caller was answered for INJECT_SECONDS.
    assert_not_heard("the other SIP caller", samples[int(1.0 * rate):int((1.0 + INJECT_SECONDS) * rate)], rate,
                     CALLER_HZ)
    closed = gw.wait_for_event("bridge.session.closed", timeout=20, codec="PCMU")
    assert closed["legacy_dropped"] >= sent and closed["legacy_in"] > 200, closed


async def srtp_scenario(gw: GatewayProcess, tmp_path: Path) -> tuple[np.ndarray, int, int]:
    loop = asyncio.get_running_loop()
    use_host_addresses(["127.0.0.1"])
    subscriber = await subscribe(gw.http_url, MEETING, video=False)
    try:
        caller_wav = write_wav(tmp_path / "caller.wav", tone(CALLER_HZ, 2.0, rate=8000), rate=8000)
        caller_rtp = free_rtp_port()
        caller = loop.run_in_executor(None, lambda: run_pjsua_call(
            gw.sip_uri(MEETING), codec="PCMU", play_wav=caller_wav, seconds=INJECT_SECONDS + 3.0, timeout=40,
            srtp="mandatory", srtp_suite=SRTP_SUITE, rtp_port=caller_rtp))
        await loop.run_in_executor(None, lambda: wait_until(
            lambda: bool(gw.events("bridge.rtp.latched")), "the caller's leg to latch"))
        latched = gw.events("bridge.rtp.latched")[0]
        assert latched["authenticated"] is True, latched
        leg_port = int(gw.events("call.answered")[0]["local_port"])
        await asyncio.sleep(1.0)

        # Same payloads, but protected with a key nobody negotiated.
        wrong = SdesSrtp(SRTP_SUITE, remote_key=os.urandom(SRTP_KEY_BYTES), local_key=os.urandom(SRTP_KEY_BYTES))
        packets = [wrong.protect(p) for p in injected_packets(int(INJECT_SECONDS / 0.02), ssrc=0x5EED)]
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        source, target = ("127.0.0.1", caller_rtp), ("127.0.0.1", leg_port)
        try:
            with Injector([lambda data: raw.sendto(forged_udp(data, source, target), target)], packets) as injector:
                heard = await subscriber.record(INJECT_SECONDS)
        finally:
            raw.close()
        await caller
    finally:
        await subscriber.close()
    closed = await loop.run_in_executor(None, lambda: gw.wait_for_event("bridge.session.closed", timeout=20))
    return heard, injector.sent, int(closed["legacy_srtp_dropped"])


def test_srtp_with_a_wrong_key_from_the_latched_source_fails_authentication(
    gateway_factory: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    gw = gateway_factory()
    heard, sent, srtp_dropped = run_on_private_loop(srtp_scenario(gw, tmp_path), timeout=120)
    closed: dict[str, Any] = gw.events("bridge.session.closed")[0]
    print(f"forged {sent} wrong-key SRTP packets from the caller's own address; "
          f"legacy_srtp_dropped {srtp_dropped}, legacy_dropped {closed['legacy_dropped']}, "
          f"legacy_in {closed['legacy_in']}")
    assert sent > 120
    assert closed["legacy_encryption"] == "sdes-srtp", closed
    # From the latched source, so the source check passes and SRTP authentication refuses them.
    assert srtp_dropped >= sent, f"forged {sent} packets, {srtp_dropped} failed authentication"
    assert closed["legacy_in"] > 100, closed
    assert_not_heard("WHEP subscriber (whole mix)", heard, 48000, CALLER_HZ)
