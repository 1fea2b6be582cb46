"""Codecs carry a tone intact (measured by FFT), keep state across frames, and the resampler and
FIFO between the legacy rate and aiortc's 48 kHz behave."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.codecs import (
    AUDIO_CODECS,
    G722,
    PCMA,
    PCMU,
    PcmFifo,
    Resampler,
    codec_by_name,
    downmix,
)
from tests.support.audio import analyse, assert_tone, tone


def round_trip(codec_name: str, signal: np.ndarray) -> tuple[np.ndarray, list[bytes]]:
    codec = AUDIO_CODECS[codec_name]
    enc, dec = codec.encoder(), codec.decoder()
    n = codec.samples_per_frame
    payloads, out = [], []
    for i in range(0, signal.size - n + 1, n):
        p = enc.encode(signal[i:i + n])
        payloads.append(p)
        out.append(dec.decode(p))
    return np.concatenate(out), payloads


def test_registry_has_the_three_static_codecs_and_opus() -> None:
    assert {(c.name, c.payload_type, c.clock_rate, c.sample_rate) for c in AUDIO_CODECS.values()} == {
        ("PCMU", 0, 8000, 8000), ("PCMA", 8, 8000, 8000), ("G722", 9, 8000, 16000),
        ("OPUS", 111, 48000, 48000)}  # Opus: dynamic PT, 111 only a default (tests/unit/test_bridge_opus.py)
    assert G722.samples_per_frame == 320 and G722.timestamp_step == 160
    assert PCMU.samples_per_frame == 160 and PCMU.timestamp_step == 160
    assert codec_by_name("pcma") is PCMA
    with pytest.raises(KeyError, match="supported"):
        codec_by_name("G729")


@pytest.mark.parametrize("name", ["PCMU", "PCMA"])
def test_g711_tone_round_trip(name: str) -> None:
    signal = tone(1000, 1.0, rate=8000)
    out, payloads = round_trip(name, signal)
    assert all(len(p) == 160 for p in payloads)
    assert_tone(out, 8000, 1000, min_dbfs=-20, skip_seconds=0.0)
    # G.711 is near-transparent: the decoded signal follows the input closely (SNR > 30 dB).
    err = out.astype(np.float64) - signal[: out.size]
    snr = 10 * np.log10(np.mean(signal.astype(np.float64) ** 2) / np.mean(err**2))
    assert snr > 30, f"{name} SNR {snr:.1f} dB"


def test_g711_laws_differ_and_match_known_codes() -> None:
    # ITU-T G.711: silence encodes as 0xFF (mu-law) and 0xD5 (A-law).
    zero = np.zeros(160, dtype=np.int16)
    assert PCMU.encoder().encode(zero) == b"\xff" * 160
    assert PCMA.encoder().encode(zero) == b"\xd5" * 160


@pytest.mark.parametrize("frequency", [1000, 6000])
def test_g722_wideband_tone_round_trip(frequency: int) -> None:
    # 6 kHz cannot exist at 8 kHz sampling: it proves the 16 kHz wideband path end to end.
    signal = tone(frequency, 1.0, rate=16000)
    out, payloads = round_trip("G722", signal)
    assert all(len(p) == 160 for p in payloads)
    assert_tone(out, 16000, frequency, min_dbfs=-20, skip_seconds=0.1)


def test_g722_decoder_state_runs_across_frames() -> None:
    # A fresh decoder per frame (the bug the stateful objects prevent) degrades the audio badly.
    signal = tone(1000, 0.5, rate=16000)
    good, payloads = round_trip("G722", signal)
    bad = np.concatenate([G722.decoder().decode(p) for p in payloads])
    ref = signal[: good.size].astype(np.float64)

    def snr(x: np.ndarray) -> float:
        # G.722 delays the signal by a few samples: compare at the best alignment.
        return max(10 * np.log10(np.mean(ref[50:-50] ** 2) / np.mean((x[50 + d:x.size - 50 + d] - ref[50:-50]) ** 2))
                   for d in range(40))

    assert snr(good.astype(np.float64)) > snr(bad.astype(np.float64)) + 6


@pytest.mark.parametrize("rate", [8000, 16000])
def test_resampler_to_48k_and_back_keeps_the_tone(rate: int) -> None:
    up, down = Resampler(rate, 48000), Resampler(48000, rate)
    signal = tone(1000, 1.0, rate=rate)
    block = rate // 50
    hi = np.concatenate([up.process(signal[i:i + block]) for i in range(0, signal.size, block)])
    assert abs(hi.size - 48000) < 480  # filter delay only
    assert_tone(hi, 48000, 1000, min_dbfs=-20, skip_seconds=0.05)
    lo = np.concatenate([down.process(hi[i:i + 960]) for i in range(0, hi.size, 960)])
    assert_tone(lo, rate, 1000, min_dbfs=-20, skip_seconds=0.05)


def test_resampler_same_rate_is_identity() -> None:
    x = tone(440, 0.1, rate=8000)
    assert np.array_equal(Resampler(8000, 8000).process(x), x)


def test_downmix_packed_and_planar() -> None:
    left = np.full(4, 1000, dtype=np.int16)
    right = np.full(4, 3000, dtype=np.int16)
    packed = np.stack([left, right], axis=1).reshape(1, -1)
    planar = np.stack([left, right])
    assert np.array_equal(downmix(packed, 2, planar=False), np.full(4, 2000))
    assert np.array_equal(downmix(planar, 2, planar=True), np.full(4, 2000))
    assert np.array_equal(downmix(left.reshape(1, -1), 1, planar=False), left)


def test_fifo_drops_oldest_beyond_its_bound() -> None:
    fifo = PcmFifo(max_samples=300)
    fifo.push(np.arange(200, dtype=np.int16))
    assert fifo.pop(250) is None and len(fifo) == 200  # not enough: nothing consumed
    fifo.push(np.arange(200, 400, dtype=np.int16))
    assert len(fifo) == 300 and fifo.dropped_samples == 100
    first = fifo.pop(160)
    assert first is not None and first[0] == 100 and first[-1] == 259
    fifo.clear()
    assert len(fifo) == 0


def test_tone_analysis_sanity() -> None:
    # Guard the measurement itself: a 1 kHz tone is not reported as 2 kHz.
    assert abs(analyse(tone(2000, 0.5), 8000).peak_hz - 2000) < 15
