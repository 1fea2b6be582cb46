"""Four participants in one meeting, two by SIP and two by WebRTC: everyone hears the other three.

Issue 4, done-when 1. Two real pjsua2 callers (PCMU sending 700 Hz, G.722 sending 1300 Hz)
dial the real gateway while two aiortc participants publish 440 Hz and 1000 Hz over WHIP and
subscribe over WHEP to the mix minus themselves. Every tone starts at the same level (0.2 of
full scale), so what each participant receives is judged by measuring it:

- the other three tones are there, within 3 dB of each other (the legs, codecs, resamplers
  and the mixer neither boost nor attenuate one path against another);
- its own tone is at least 30 dB under them (the N-1 mix really excludes it);
- the mix is not clipped (peak under full scale, crest factor near the ideal of three
  summed sines: flattened peaks would lower it).

The figures are printed (``pytest -s``), including the gateway process' CPU time over the
measured stretch with four participants.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.ice import use_host_addresses
from tests.interop.test_walking_skeleton import run_on_private_loop
from tests.support.audio import tone, write_wav
from tests.support.gateway_process import GatewayProcess
from tests.support.pjsua import PjsuaResult, run_pjsua_call
from tests.support.webrtc_client import ToneTrack, publish, subscribe

pytestmark = pytest.mark.interop

MEETING = "4400"
AMPLITUDE = 0.2
"""Every participant's tone, as a fraction of full scale (-14 dBFS peak): four of them sum to 0.8."""
SIP_CALLERS = {"PCMU": 700.0, "G722": 1300.0}
WEBRTC_PUBLISHERS = (440.0, 1000.0)
CALL_SECONDS = 10.0
RECORD_SECONDS = 3.0
LEVEL_SPREAD_DB = 3.0
OWN_TONE_BELOW_DB = 30.0


def tone_dbfs(samples: np.ndarray, rate: int, frequency: float, width: float = 20.0) -> float:
    """The amplitude of the sine at ``frequency`` in dB relative to full scale (0 dBFS = 32768 peak).

    A Hann-windowed FFT's peak bin, rescaled by the window's coherent gain, is the sine's
    amplitude (within the window's scalloping loss, under 1.5 dB; the same for every tone here).
    """
    x = np.asarray(samples, dtype=np.float64)
    window = np.hanning(x.size)
    mags = np.abs(np.fft.rfft(x * window)) * 2 / window.sum()
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    band = (freqs > frequency - width) & (freqs < frequency + width)
    return float(20 * np.log10(mags[band].max() / 32768 + 1e-12))


SEGMENT_SECONDS = 0.1
"""Judged in short stretches (whole periods of every tone here): a late packet (jitter on a busy
machine) shifts a tone's phase, which would smear one long FFT or fit, but spoils only a stretch."""


def judge(who: str, samples: np.ndarray, rate: int, own: float, others: list[float]) -> dict[str, Any]:
    """Measure and assert what one participant heard; return the figures (also printed)."""
    assert samples.size >= 4 * rate * SEGMENT_SECONDS, f"{who}: only {samples.size} samples to judge"
    step = int(rate * SEGMENT_SECONDS)
    segments = [samples[i:i + step] for i in range(0, samples.size - step + 1, step)]
    levels = {f: float(np.median([tone_dbfs(seg, rate, f) for seg in segments])) for f in others}
    own_level = float(np.median([tone_dbfs(seg, rate, own) for seg in segments]))
    peak = int(np.abs(samples.astype(np.int32)).max())
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    crest_db = 20 * np.log10(peak / rms) if rms else float("inf")
    clipped = int(np.count_nonzero(np.abs(samples.astype(np.int32)) >= 32767))
    # A clipping or limiting mix distorts every stretch of this steady signal (the tones' peaks
    # line up every 50 ms), so even the cleanest quarter of the stretches would show it, while
    # jitter glitches (counted and printed) spoil only some.
    residual_db, fit_peak = [], 0.0
    for seg in segments:
        fit = fit_tones(seg, rate, [own, *others])
        energy = float(np.mean(seg.astype(np.float64) ** 2))
        # A silent stretch (a dropout) counts as all residual: 0 dB, a glitch.
        residual_db.append(10 * np.log10(np.mean((seg - fit) ** 2) / energy + 1e-12) if energy else 0.0)
        fit_peak = max(fit_peak, float(np.abs(fit).max()))
    median_residual = float(np.median(residual_db))
    clean_residual = float(np.percentile(residual_db, 25))
    glitches = int(np.count_nonzero(np.array(residual_db) > -15))
    figures = {"levels": levels, "own": own_level, "peak": peak, "crest_db": crest_db, "clipped": clipped,
               "residual_db": clean_residual, "glitches": glitches}
    print(f"{who} ({rate} Hz): " + ", ".join(f"{f:.0f} Hz {db:.1f} dBFS" for f, db in levels.items())
          + f"; own {own:.0f} Hz {own_level:.1f} dBFS; peak {peak} ({20 * np.log10(peak / 32768):.1f} dBFS, "
          f"ideal sum of the tones {fit_peak:.0f}), crest {crest_db:.1f} dB, clipped samples {clipped}, "
          f"everything but the tones {clean_residual:.1f} dB (cleanest quarter; median {median_residual:.1f}), "
          f"{glitches} of {len(segments)} stretches glitched")

    loudest, quietest = max(levels.values()), min(levels.values())
    # Every path crosses aiortc's Opus encoder twice (into the core, out of it); the bridge, the
    # core (bridge.pacing.mono_s16_frame) and the test client all hand it L=R stereo frames, as
    # a browser does, so no path loses level: allow 3 dB for codecs and resampling.
    assert quietest > 20 * np.log10(AMPLITUDE) - 3, f"{who}: a tone is missing or faint: {levels}"
    assert loudest - quietest <= LEVEL_SPREAD_DB, (
        f"{who}: the other participants arrive {loudest - quietest:.1f} dB apart: {levels}")
    assert own_level <= quietest - OWN_TONE_BELOW_DB, (
        f"{who} hears itself at {own_level:.1f} dBFS against {quietest:.1f} dBFS for the others")
    # No clipping: nothing at full scale, the peaks as high as the clean sum of the tones would
    # have them (a limiter or a clip flattens them), and little energy outside the tones
    # (clipping and limiting add harmonics and intermodulation; codec noise stays well under).
    assert clipped == 0 and peak < 32767, f"{who}: the mix clips ({clipped} samples at full scale)"
    assert peak >= 0.85 * fit_peak, f"{who}: peaks flattened: {peak} against {fit_peak:.0f} for the clean sum"
    assert clean_residual < -20, f"{who}: {clean_residual:.1f} dB of even the cleanest stretches is not the tones"
    return figures


def fit_tones(samples: np.ndarray, rate: int, frequencies: list[float]) -> np.ndarray:
    """The least-squares sum of sines at ``frequencies`` closest to ``samples``: the clean mix."""
    t = np.arange(samples.size) / rate
    basis = np.column_stack([fn(2 * np.pi * f * t) for f in frequencies for fn in (np.sin, np.cos)])
    coef, *_ = np.linalg.lstsq(basis, samples.astype(np.float64), rcond=None)
    return basis @ coef


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


async def four_party_meeting(gw: GatewayProcess, tmp_path: Path
                             ) -> tuple[dict[str, PjsuaResult], dict[float, np.ndarray], float]:
    """Run the meeting; return the callers' results, each subscriber's recording by its own tone,
    and the gateway's CPU seconds over the recorded stretch."""
    use_host_addresses(["127.0.0.1"])
    loop = asyncio.get_running_loop()
    publishers = {hz: await publish(gw.http_url, MEETING, audio=ToneTrack.sine(hz, amplitude=AMPLITUDE))
                  for hz in WEBRTC_PUBLISHERS}
    subscribers = {hz: await subscribe(gw.http_url, MEETING, exclude=pub.participant_id, video=False)
                   for hz, pub in publishers.items()}
    try:
        def dial(codec: str, hz: float) -> PjsuaResult:
            wav = write_wav(tmp_path / f"{codec}.wav", tone(hz, 2.0, rate=16000, amplitude=AMPLITUDE), rate=16000)
            return run_pjsua_call(gw.sip_uri(MEETING), codec=codec, play_wav=wav,
                                  record_wav=tmp_path / f"{codec}-heard.wav",
                                  seconds=CALL_SECONDS, timeout=CALL_SECONDS + 30)

        calls = {codec: loop.run_in_executor(None, dial, codec, hz) for codec, hz in SIP_CALLERS.items()}

        def both_answered() -> None:
            for _ in range(300):
                if len(gw.events("call.answered", meeting=MEETING)) >= len(SIP_CALLERS):
                    return
                if not gw.alive():
                    break
                time.sleep(0.1)
            raise AssertionError(f"not all callers answered: {gw.events('call.answered')}")

        await loop.run_in_executor(None, both_answered)
        await asyncio.sleep(1.5)  # the last joiner's first packets through fresh jitter buffers
        cpu_before = cpu_seconds(gw.proc.pid)
        for sub in subscribers.values():
            sub.clear()
        await asyncio.sleep(RECORD_SECONDS)
        cpu = cpu_seconds(gw.proc.pid) - cpu_before
        heard = {hz: sub.audio() for hz, sub in subscribers.items()}
        results = {codec: await call for codec, call in calls.items()}
    finally:
        for sub in subscribers.values():
            await sub.close()
        for pub in publishers.values():
            await pub.close()
    return results, heard, cpu


def test_four_participants_each_hear_the_other_three_at_equal_levels(
    gateway_factory: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    gw = gateway_factory()
    results, heard, cpu = run_on_private_loop(four_party_meeting(gw, tmp_path), timeout=120)
    every_tone = [*SIP_CALLERS.values(), *WEBRTC_PUBLISHERS]

    for hz, samples in heard.items():
        write_wav(tmp_path / f"whep-minus-{hz:.0f}.wav", samples, rate=48000)  # to listen to on failure
        judge(f"WHEP subscriber minus {hz:.0f} Hz", samples, 48000, hz, [f for f in every_tone if f != hz])

    for codec, result in results.items():
        assert result.connected and result.final_status == 200, result
        assert result.codec and result.codec.upper().startswith(codec), result.codec
        samples, rate = result.recording()
        # All four were in the meeting from ~1 s after both callers connected until the first hung up.
        window = samples[int(3.0 * rate):-int(1.5 * rate)]
        own = SIP_CALLERS[codec]
        judge(f"SIP caller {codec}", window, rate, own, [f for f in every_tone if f != own])

    print(f"gateway CPU over {RECORD_SECONDS:.0f} s with 4 participants (2 SIP legs): {cpu:.2f} s "
          f"({100 * cpu / RECORD_SECONDS:.0f}% of one core)")
    assert gw.alive()
