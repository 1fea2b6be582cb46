"""Issue 4 "Media in depth" (jitter buffer, RTCP) and issue 7 (jitter/RTT in the API), end to end.

A real pjsua2 caller dials the real gateway process through an impairment relay on loopback
(:mod:`tests.support.impairment`: 5 % loss, 50 ms uniform jitter, hence reordering, on the
caller -> gateway RTP). A WHEP subscriber (aiortc) records the meeting, which is the caller alone.

Measured, not assumed:

- the caller's 1 kHz tone arrives (FFT), continuously: 20 ms blocks without the tone are rare
  (concealment covers single losses);
- the delay does not grow: the caller's wav carries a 1.5 kHz marker every second; each marker
  is dated where it enters the path (the relay decodes the caller's packets) and where the
  subscriber receives it, which gives the end-to-end delay marker by marker;
- the gateway sends RTCP SRs that tshark decodes (sender SSRC, packet count, a CNAME);
- the control API shows ``jitter_ms`` and ``rtt_ms`` for the participant (validated against
  docs/openapi.yaml), and /metrics has the jitter and RTT gauges.
"""

from __future__ import annotations

import asyncio
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.codecs import PCMU
from bridge.ice import use_host_addresses
from gateway.api.tokens import MIN_ITERATIONS, hash_token, new_token
from tests.interop.test_walking_skeleton import run_on_private_loop
from tests.support.audio import assert_tone, tone, write_wav
from tests.support.control_api import check_response, https_request, make_self_signed
from tests.support.gateway_process import GatewayProcess, free_tcp_port, start_gateway
from tests.support.impairment import GATEWAY_SIDE, ImpairmentRelay, pjsua_call_through
from tests.support.pjsua import PjsuaResult, free_rtp_port
from tests.support.tshark import capture, decode
from tests.support.webrtc_client import subscribe

pytestmark = pytest.mark.interop

MEETING = "4711"
TONE_HZ, MARK_HZ = 1000.0, 1500.0
CALL_SECONDS = 16.0
RECORD_AFTER, RECORD_SECONDS = 3.0, 9.0
WHEP_RATE = 48000


def caller_wav(path: Path) -> Path:
    """2 s of 1 kHz with a 60 ms 1.5 kHz marker at 0.5 s and 1.5 s: one per second as pjsua loops."""
    rate = 8000
    x = tone(TONE_HZ, 2.0, rate=rate, amplitude=0.25).astype(np.float64)
    mark = tone(MARK_HZ, 0.06, rate=rate, amplitude=0.25).astype(np.float64)
    for at in (0.5, 1.5):
        i = int(at * rate)
        x[i:i + mark.size] = mark
    return write_wav(path, x.astype(np.int16), rate=rate)


def band_level(block: np.ndarray, hz: float, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(block * np.hanning(block.size)))
    freqs = np.fft.rfftfreq(block.size, 1 / rate)
    return float(spectrum[(freqs > hz - 60) & (freqs < hz + 60)].max())


def silent_blocks(samples: np.ndarray, rate: int) -> tuple[int, int]:
    """(20 ms blocks under -40 dBFS, blocks): the tone sits near -20 dBFS."""
    x = samples.astype(np.float64)
    block = rate // 50
    blocks = x[: x.size // block * block].reshape(-1, block)
    rms = np.sqrt((blocks**2).mean(axis=1))
    return int(np.count_nonzero(rms < 300)), int(blocks.shape[0])


def onsets_in(samples: np.ndarray, rate: int) -> list[int]:
    """Sample indices where the 1.5 kHz marker starts (10 ms resolution)."""
    x = samples.astype(np.float64)
    step = rate // 100
    hops = [x[i:i + 2 * step] for i in range(0, x.size - 2 * step, step)]
    ratio = np.array([band_level(h, MARK_HZ, rate) / (band_level(h, TONE_HZ, rate) + 1e-9) for h in hops])
    found: list[int] = []
    for i in range(1, ratio.size):
        if ratio[i] > 1 and ratio[i - 1] <= 1 and (not found or (i * step - found[-1]) > rate // 2):
            found.append(i * step)
    return found


def source_marker_times(caller_rtp: list[tuple[float, bytes]]) -> list[float]:
    """When each marker the caller sent reached the relay (loop time), from its PCMU packets."""
    by_seq = sorted(((struct.unpack_from("!H", d, 2)[0], t, d[12:]) for t, d in caller_rtp),
                    key=lambda x: x[0])  # one call's worth: no sequence wrap to worry about here
    times = np.repeat([t for _, t, _ in by_seq], [len(p) for *_, p in by_seq])
    pcm = PCMU.decoder().decode(b"".join(p for *_, p in by_seq))
    return [float(times[i]) for i in onsets_in(pcm, 8000)]


def api_request(api: dict[str, Any], path: str) -> Any:
    status, _, body = https_request(f"https://127.0.0.1:{api['port']}{path}", cafile=api["cafile"],
                                    token=api["token"])
    check_response("GET", path, status, body)
    assert status == 200, body
    return body


async def impaired_call(gw: GatewayProcess, tmp_path: Path, api: dict[str, Any]) -> dict[str, Any]:
    use_host_addresses(["127.0.0.1"])
    loop = asyncio.get_running_loop()
    relay = ImpairmentRelay(gw.media_ports, free_rtp_port(), loss=0.05, jitter=0.05, base_delay=0.01, seed=11)
    out: dict[str, Any] = {"relay": relay}
    async with pjsua_call_through(relay, gw, MEETING, caller_wav(tmp_path / "caller.wav"),
                                  seconds=CALL_SECONDS) as call:
        t_answered = time.monotonic()
        sub = await subscribe(gw.http_url, MEETING, video=False)
        try:
            await asyncio.sleep(max(0.0, RECORD_AFTER - (time.monotonic() - t_answered)))
            # Note when the recording's samples arrive, to date the markers heard (5 ms steps).
            sub.clear()
            arrivals: list[tuple[float, int]] = []
            end = loop.time() + RECORD_SECONDS
            while loop.time() < end:
                arrivals.append((loop.time(), sum(c.size for c in sub.chunks)))
                await asyncio.sleep(0.005)
            out["audio"], out["arrivals"] = sub.audio(), arrivals
            meeting = await loop.run_in_executor(None, api_request, api, f"/api/v1/meetings/{MEETING}")
            participant = call.answered["participant"]
            out["participant"] = next(p for p in meeting["participants"] if p["id"] == participant)
            out["metrics"] = await loop.run_in_executor(None, api["scrape"])
        finally:
            await sub.close()
        out["call"] = await call.result
    return out


def test_impaired_caller_is_heard_continuously_without_growing_delay(tmp_path: Path) -> None:
    work = tmp_path / "gw"
    cert, key = make_self_signed(work / "tls")
    token = new_token()
    port, metrics_port = free_tcp_port(), free_tcp_port()
    gw = start_gateway(work, config={
        "media": {"public_address": GATEWAY_SIDE},
        "control": {"listen": f"127.0.0.1:{port}", "tls_cert": str(cert), "tls_key": str(key),
                    "tokens": [{"id": "jitter-read", "scope": "read",
                                "hash": hash_token(token, iterations=MIN_ITERATIONS)}]},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
    })

    def scrape() -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    api = {"port": port, "cafile": cert, "token": token, "scrape": scrape}
    pcap = tmp_path / "rtcp.pcapng"
    try:
        with capture(f"udp and portrange {gw.media_ports.start}-{gw.media_ports.stop - 1}", pcap):
            out = run_on_private_loop(impaired_call(gw, tmp_path, api), timeout=CALL_SECONDS + 60)
        up = gw.wait_for_event("bridge.leg.up", leg="legacy")
    finally:
        gw.stop()

    call: PjsuaResult = out["call"]
    s = out["relay"].stats
    assert call.connected, call
    assert s.received > 300 and s.returned > 300, (s, call.remote_rtp)
    audio, p = out["audio"], out["participant"]
    write_wav(tmp_path / "whep.wav", audio, rate=WHEP_RATE)  # to listen to on failure
    silent, blocks = silent_blocks(audio, WHEP_RATE)
    # End-to-end delay of each marker: when the subscriber received it minus when the caller's
    # packet carrying it reached the relay (both on this process' loop clock).
    sent = source_marker_times(out["relay"].caller_rtp)
    times, counts = np.array(out["arrivals"]).T
    delays_ms = []
    for onset in onsets_in(audio, WHEP_RATE):
        heard_at = times[np.searchsorted(counts, onset, side="right")] if onset < counts[-1] else None
        before = [t for t in sent if heard_at is not None and t < heard_at]
        if heard_at is not None and before:
            delays_ms.append((heard_at - before[-1]) * 1000)
    path = np.array(s.delays or [0.0]) * 1000
    print(f"\nrelay: {s.received} RTP in, {s.lost} lost ({s.lost / s.received:.1%}), {s.reordered} reordered, "
          f"delay {path.min():.0f}-{path.max():.0f} ms (mean {path.mean():.0f})\n"
          f"heard {audio.size / WHEP_RATE:.1f} s; silent 20 ms blocks {silent}/{blocks}\n"
          f"caller -> WHEP subscriber delay per marker (ms): {[round(d) for d in delays_ms]}\n"
          f"API: packet_loss={p['packet_loss']} jitter_ms={p['jitter_ms']} rtt_ms={p['rtt_ms']}")
    assert s.lost > 0 and s.reordered > 0  # the impairment really happened

    # The tone, continuously.
    assert_tone(audio, WHEP_RATE, TONE_HZ, min_dbfs=-30, skip_seconds=0.0)
    assert silent <= 0.02 * blocks

    # No growing delay: the later half of the markers (median) arrive no later than the first
    # half did, give or take three 20 ms adaptation steps of the jitter buffer; none is held for
    # more than 600 ms end to end (relay <= 60 ms, buffer <= 200 ms, the WebRTC leg, the mixer
    # and the subscriber's own buffer, on a machine shared with other test runs).
    assert len(delays_ms) >= RECORD_SECONDS - 2, f"markers dated: {delays_ms}"
    half = len(delays_ms) // 2
    assert np.median(delays_ms[half:]) <= np.median(delays_ms[:half]) + 60, delays_ms
    assert max(delays_ms) < 600, delays_ms

    # The API and the metrics show jitter and RTT.
    assert p["jitter_ms"] is not None and p["jitter_ms"] > 5  # 50 ms uniform jitter: ~17 ms expected
    assert p["packet_loss"] > 0.01
    assert p["rtt_ms"] is not None and p["rtt_ms"] < 200  # pjsua answered our SR over loopback
    families = {f.name: f for f in text_string_to_metric_families(out["metrics"])}
    jitter = {x.labels["stat"]: x.value for x in families["roomgate_rtp_jitter_seconds"].samples}
    assert jitter["max"] == pytest.approx(p["jitter_ms"] / 1000, rel=0.5)
    assert "roomgate_rtt_seconds" in families

    # tshark decodes our SRs on the RTCP port (RTP + 1).
    rtcp_port = int(up["local_port"]) + 1
    srs = decode(pcap, f"rtcp.pt == 200 && ip.src == 127.0.0.1 && udp.srcport == {rtcp_port}",
                 ["rtcp.senderssrc", "rtcp.sender.packetcount", "rtcp.sdes.text", "rtcp.ssrc.jitter"],
                 decode_as=[f"udp.port=={rtcp_port},rtcp"])
    print(f"gateway SRs decoded by tshark: {[(r['rtcp.senderssrc'], r['rtcp.sender.packetcount']) for r in srs]}, "
          f"CNAME {srs[0]['rtcp.sdes.text'] if srs else None}")
    assert len(srs) >= 2
    assert all(r["rtcp.sdes.text"].startswith("roomgate-") for r in srs)
    counts = [int(r["rtcp.sender.packetcount"]) for r in srs]
    assert counts == sorted(counts) and counts[-1] > 100
