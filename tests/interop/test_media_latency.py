"""Issue 4/6: one-way audio delay both ways, and no lasting backlog after the gateway stalls once.

A real pjsua2 caller (PCMU) dials the real gateway process through a loopback relay that only
dates packets (:mod:`tests.support.impairment` with no loss and no jitter); an aiortc WHIP peer
publishes to the same meeting and an aiortc WHEP subscriber listens to the meeting minus that
publisher (so it hears the caller alone; the caller hears the publisher alone: N-1).

Both sides send short tone bursts once a second, on different frequencies:

- SIP -> WHEP: the caller's 1 kHz bursts are dated where its packets reach the relay and where
  the subscriber's decoded samples arrive;
- WHIP -> SIP: the publisher's 2 kHz bursts are dated when its track hands aiortc the burst's
  first frame and where the gateway's packets carrying it reach the relay.

Half-way through, the gateway process is stopped (SIGSTOP) for 300 ms and resumed, while both
peers keep sending: what they sent meanwhile reaches the gateway as one burst. The figures are
printed; the asserted property is that, once the stall is ``RECOVERY_S`` behind, each direction's
delay is back within 40 ms of what it was before (no FIFO keeps the stall's backlog as added
delay; before bridge.backlog, WHIP -> SIP stayed ~180 ms longer for the rest of the call).
"""

from __future__ import annotations

import asyncio
import os
import signal
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.codecs import PCMU
from bridge.ice import use_host_addresses
from tests.interop.test_walking_skeleton import run_on_private_loop
from tests.support.audio import tone, write_wav
from tests.support.gateway_process import GatewayProcess, start_gateway
from tests.support.impairment import GATEWAY_SIDE, ImpairmentRelay, pjsua_call_through
from tests.support.pjsua import PjsuaResult, free_rtp_port
from tests.support.webrtc_client import RATE, ToneTrack, publish, subscribe

pytestmark = pytest.mark.interop

MEETING = "5150"
CALLER_HZ, PUBLISHER_HZ = 1000.0, 2000.0
BURST_S = 0.08
CALL_SECONDS = 24.0
SETTLE_S, BEFORE_S, STALL_S, AFTER_S = 3.0, 7.0, 0.3, 9.0
#: Bursts sent within this long after the stall are left out: the FIFOs' drains need up to two
#: windows (0.5 s), the legacy jitter buffer's adaptation (bridge/jitter.py) takes a few seconds.
RECOVERY_S = 4.0
#: A burst counts for the first onset heard within this long after it was sent.
MAX_DELAY_S = 0.9


def caller_wav(path: Path) -> Path:
    """2 s (pjsua loops it): an 80 ms 1 kHz burst at 0 s and at 1 s, silence between."""
    x = np.zeros(16000, dtype=np.int16)
    burst = tone(CALLER_HZ, BURST_S, rate=8000, amplitude=0.3)
    for at in (0, 8000):
        x[at:at + burst.size] = burst
    return write_wav(path, x, rate=8000)


class BurstTrack(ToneTrack):
    """One second looped: an 80 ms 2 kHz burst, then silence; notes when each burst is handed to aiortc."""

    def __init__(self) -> None:
        x = np.zeros(RATE, dtype=np.int16)
        burst = tone(PUBLISHER_HZ, BURST_S, rate=RATE, amplitude=0.3)
        x[:burst.size] = burst
        super().__init__(x)
        self.sent: list[float] = []

    async def recv(self) -> Any:
        starts_burst = self._pos == 0
        frame = await super().recv()
        if starts_burst:
            self.sent.append(asyncio.get_running_loop().time())
        return frame


class DatingRelay(ImpairmentRelay):
    """The relay, also keeping the gateway's RTP toward the caller with its arrival time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gateway_rtp: list[tuple[float, bytes]] = []

    def _from_gateway(self, caller_port: int, data: bytes, addr: Any) -> None:
        if caller_port % 2 == 0 and len(data) > 12 and data[1] & 0x7F == PCMU.payload_type:
            assert self._loop is not None
            self.gateway_rtp.append((self._loop.time(), data))
        super()._from_gateway(caller_port, data, addr)


def burst_onsets(samples: np.ndarray, rate: int, hz: float) -> list[int]:
    """Sample indices (5 ms resolution) where a burst at ``hz`` starts: its band rises above -40 dBFS."""
    x = samples.astype(np.float64) / 32768.0
    hop, width = rate // 200, rate // 50
    found: list[int] = []
    was_on = False
    window = np.hanning(width)
    freqs = np.fft.rfftfreq(width, 1 / rate)
    band = (freqs > hz - 100) & (freqs < hz + 100)
    for i in range(0, x.size - width, hop):
        spectrum = np.abs(np.fft.rfft(x[i:i + width] * window)) * 2 / window.sum()
        on = bool(spectrum[band].max() > 0.01)
        if on and not was_on and (not found or i - found[-1] > rate // 2):
            found.append(i)
        was_on = on
    return found


def rtp_timeline(packets: list[tuple[float, bytes]]) -> tuple[np.ndarray, np.ndarray]:
    """(PCMU-decoded audio in sequence order, per-sample arrival time) of one RTP stream."""
    ordered = sorted(((struct.unpack_from("!H", d, 2)[0], t, d[12:]) for t, d in packets), key=lambda p: p[0])
    pcm = PCMU.decoder().decode(b"".join(p for *_, p in ordered))
    times = np.repeat([t for _, t, _ in ordered], [len(p) for *_, p in ordered])
    return pcm, times


def match(sent: list[float], heard: list[float]) -> list[tuple[float, float]]:
    """(send time, delay) per burst: the first onset heard within ``MAX_DELAY_S`` after it was sent."""
    out = []
    for s in sent:
        later = [h for h in heard if 0 < h - s < MAX_DELAY_S]
        if later:
            out.append((s, later[0] - s))
    return out


def before_and_after(delays: list[tuple[float, float]], stall_at: float) -> tuple[list[float], list[float]]:
    before = [d * 1000 for s, d in delays if s < stall_at]
    after = [d * 1000 for s, d in delays if s > stall_at + STALL_S + RECOVERY_S]
    return before, after


async def stalled_call(gw: GatewayProcess, tmp_path: Path) -> dict[str, Any]:
    use_host_addresses(["127.0.0.1"])
    loop = asyncio.get_running_loop()
    relay = DatingRelay(gw.media_ports, free_rtp_port(), loss=0.0, jitter=0.0, base_delay=0.0)
    out: dict[str, Any] = {"relay": relay}
    async with pjsua_call_through(relay, gw, MEETING, caller_wav(tmp_path / "caller.wav"),
                                  seconds=CALL_SECONDS) as call:
        track = BurstTrack()
        pub = await publish(gw.http_url, MEETING, audio=track)
        sub = await subscribe(gw.http_url, MEETING, exclude=pub.participant_id, video=False)
        try:
            await asyncio.sleep(SETTLE_S)
            sub.clear()
            arrivals: list[tuple[float, int]] = []

            async def note_arrivals(until: float) -> None:
                while loop.time() < until:
                    arrivals.append((loop.time(), sum(c.size for c in sub.chunks)))
                    await asyncio.sleep(0.005)

            start = loop.time()
            noting = asyncio.ensure_future(note_arrivals(start + BEFORE_S + STALL_S + AFTER_S))
            await asyncio.sleep(BEFORE_S)
            out["stall_at"] = loop.time()
            os.kill(gw.proc.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(STALL_S)  # both peers keep sending meanwhile
            finally:
                os.kill(gw.proc.pid, signal.SIGCONT)
            await noting
            out["window"] = (start, loop.time())
            out["audio"], out["arrivals"], out["published"] = sub.audio(), arrivals, list(track.sent)
        finally:
            await sub.close()
            await pub.close()
        out["call"] = await call.result
    return out


def test_delay_returns_after_a_gateway_stall(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path / "gw", config={"media": {"public_address": GATEWAY_SIDE}})
    try:
        out = run_on_private_loop(stalled_call(gw, tmp_path), timeout=CALL_SECONDS + 90)
        assert gw.alive(), "the gateway did not survive the stall"
    finally:
        gw.stop()
    call: PjsuaResult = out["call"]
    assert call.connected, call
    start, end = out["window"]
    stall_at = out["stall_at"]

    # SIP -> WHEP: caller bursts dated at the relay, heard by the subscriber.
    caller_pcm, caller_times = rtp_timeline(out["relay"].caller_rtp)
    sent_up = [float(caller_times[i]) for i in burst_onsets(caller_pcm, 8000, CALLER_HZ)
               if start <= caller_times[i] <= end - MAX_DELAY_S]
    audio = out["audio"]
    write_wav(tmp_path / "whep.wav", audio, rate=RATE)  # to listen to on failure
    times, counts = np.array(out["arrivals"]).T
    heard_up = [float(times[np.searchsorted(counts, i, side="right")]) for i in burst_onsets(audio, RATE, CALLER_HZ)
                if i < counts[-1]]
    up = match(sent_up, heard_up)

    # WHIP -> SIP: publisher bursts dated when handed to aiortc, heard in the gateway's RTP.
    gw_pcm, gw_times = rtp_timeline(out["relay"].gateway_rtp)
    heard_down = [float(gw_times[i]) for i in burst_onsets(gw_pcm, 8000, PUBLISHER_HZ)]
    sent_down = [s for s in out["published"] if start <= s <= end - MAX_DELAY_S]
    down = match(sent_down, heard_down)

    up_before, up_after = before_and_after(up, stall_at)
    down_before, down_after = before_and_after(down, stall_at)
    print(f"\nSIP -> WHEP one-way delay per burst (ms): {[(round(s - stall_at, 1), round(d * 1000)) for s, d in up]}"
          f"\nWHIP -> SIP one-way delay per burst (ms): {[(round(s - stall_at, 1), round(d * 1000)) for s, d in down]}"
          f"\n(times in s relative to the {STALL_S * 1000:.0f} ms SIGSTOP of the gateway)")
    for name, before, after in (("SIP -> WHEP", up_before, up_after), ("WHIP -> SIP", down_before, down_after)):
        print(f"{name}: median before the stall {np.median(before) if before else float('nan'):.0f} ms "
              f"({len(before)} bursts), after {np.median(after) if after else float('nan'):.0f} ms ({len(after)} bursts)")
    least_after = AFTER_S - RECOVERY_S - 2
    assert len(up_before) >= BEFORE_S - 3 and len(up_after) >= least_after, (up_before, up_after)
    assert len(down_before) >= BEFORE_S - 3 and len(down_after) >= least_after, (down_before, down_after)
    # No lasting backlog: the stall's excess is shed, the delay comes back.
    assert np.median(up_after) <= np.median(up_before) + 40, (up_before, up_after)
    assert np.median(down_after) <= np.median(down_before) + 40, (down_before, down_after)
