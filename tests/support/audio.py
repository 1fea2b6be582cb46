"""Audio measurement for tests: make tones, find the strongest frequency and the level.

Media tests prove that audio flowed by measuring it on the far side (a tone's
frequency and level), never by a call state alone.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def tone(frequency: float, seconds: float, rate: int = 8000, amplitude: float = 0.3) -> np.ndarray:
    """A sine tone as int16 samples (``amplitude`` is a fraction of full scale)."""
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * frequency * t) * amplitude * 32767).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray, rate: int = 8000) -> Path:
    """Write mono int16 samples as a PCM WAV file (what pjsua2's player and baresip's aufile read)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype=np.int16).tobytes())
    return path


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Read a PCM WAV file as mono int16 samples (first channel) and its rate."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        rate = w.getframerate()
        channels = w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    if channels > 1:
        data = data.reshape(-1, channels)[:, 0]
    return data, rate


@dataclass(frozen=True)
class Spectrum:
    """What a stretch of audio holds: its strongest frequency, its RMS level, the level at any frequency."""

    peak_hz: float
    rms_dbfs: float
    _freqs: np.ndarray
    _mags: np.ndarray

    def level_at(self, frequency: float, width: float = 30.0) -> float:
        """Magnitude (dB relative to the spectrum's peak) within ``width`` Hz of ``frequency``."""
        band = (self._freqs > frequency - width) & (self._freqs < frequency + width)
        if not band.any():
            return float("-inf")
        peak = self._mags.max()
        return float(20 * np.log10(self._mags[band].max() / peak + 1e-12))


def analyse(samples: np.ndarray, rate: int, skip_seconds: float = 0.0) -> Spectrum:
    """FFT of ``samples`` (after dropping ``skip_seconds`` of start-up) with a Hann window."""
    x = np.asarray(samples, dtype=np.float64)[int(skip_seconds * rate):]
    if x.size < rate // 10:
        raise ValueError(f"too little audio to analyse: {x.size} samples at {rate} Hz")
    rms = float(np.sqrt(np.mean(x**2)))
    rms_dbfs = 20 * np.log10(rms / 32768 + 1e-12)
    mags = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    mags[freqs < 50] = 0  # ignore DC and rumble
    return Spectrum(peak_hz=float(freqs[int(mags.argmax())]), rms_dbfs=rms_dbfs, _freqs=freqs, _mags=mags)


def assert_tone(samples: np.ndarray, rate: int, frequency: float, *, min_dbfs: float = -40.0,
                tolerance_hz: float = 15.0, skip_seconds: float = 0.5) -> Spectrum:
    """Assert the audio's strongest component is ``frequency`` and it is louder than ``min_dbfs``."""
    spectrum = analyse(samples, rate, skip_seconds)
    assert spectrum.rms_dbfs > min_dbfs, (
        f"audio too quiet: {spectrum.rms_dbfs:.1f} dBFS (want > {min_dbfs}); peak at {spectrum.peak_hz:.0f} Hz"
    )
    assert abs(spectrum.peak_hz - frequency) <= tolerance_hz, (
        f"strongest component at {spectrum.peak_hz:.0f} Hz, expected {frequency:.0f} Hz "
        f"(level {spectrum.rms_dbfs:.1f} dBFS)"
    )
    return spectrum
