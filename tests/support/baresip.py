"""Run baresip 1.0.0 (Debian ``baresip-core``) headless as a SIP caller for interop tests.

What /work/shared/PEERS.md says works: ``aufile`` as the audio source (a WAV file), ``sndfile``
to record what it hears (``snd_path``), ``aubridge`` as a null player, ``-n 127.0.0.1``, and
``-e "/dial URI" -t SECS`` to call and exit.  Media encryption is per account
(``;mediaenc=srtp-mand`` ... RFC 4568 SDES).  Each run gets its own config directory.
``codec="opus"`` loads ``opus.so`` too; baresip's aufile source then needs a 2-channel
48 kHz WAV (:func:`write_stereo_wav`: with a mono file it opens no audio source).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.support.audio import read_wav

BARESIP = shutil.which("baresip")
MODULES = Path("/usr/lib/baresip/modules")


class BaresipError(RuntimeError):
    """baresip is missing, or did not produce what the run needed."""


@dataclass
class BaresipResult:
    """One baresip run: exit code, its console output and the recording of what it heard."""

    returncode: int
    output: str
    recording_path: Path | None

    @property
    def established(self) -> bool:
        """Whether the call was answered (baresip prints ``Call established``)."""
        return "Call established" in self.output or "call established" in self.output

    def recording(self) -> tuple[np.ndarray, int]:
        """The received audio as int16 samples and its rate."""
        if self.recording_path is None:
            raise BaresipError(f"baresip recorded nothing; output:\n{self.output[-3000:]}")
        return read_wav(self.recording_path)


def write_stereo_wav(path: Path, samples: np.ndarray, rate: int = 48000) -> Path:
    """Write mono int16 ``samples`` to both channels of a PCM WAV (baresip's Opus source)."""
    mono = np.asarray(samples, dtype=np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.stack([mono, mono], axis=1).tobytes())
    return path


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_baresip_call(uri: str, workdir: Path, *, play_wav: Path, seconds: float = 6.0,
                     mediaenc: str | None = None, codec: str = "PCMU",
                     timeout: float = 40.0) -> BaresipResult:
    """Dial ``uri`` from a fresh baresip that plays ``play_wav`` and records what it hears.

    ``mediaenc``: None (plain RTP), ``srtp`` (best-effort), ``srtp-mand``, ``srtp-mandf``.
    The call lasts ``seconds`` (``-t``) and baresip exits by itself.
    """
    if BARESIP is None:
        raise BaresipError("baresip is not installed (Debian package baresip-core)")
    conf = workdir / "baresip"
    rec = workdir / "baresip-rec"
    conf.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(rec, ignore_errors=True)  # one run's recordings only
    rec.mkdir(parents=True)
    # The media encryption module must be loaded before account.so reads the accounts.
    codecs = ["opus"] if codec.lower() == "opus" else []
    modules = (["srtp"] if mediaenc else []) + codecs + ["g711", "g722", "aufile", "sndfile",
                                                         "aubridge", "uuid"]
    port = _free_udp_port()
    (conf / "config").write_text("\n".join([
        f"module_path {MODULES}",
        f"sip_listen 127.0.0.1:{port}",
        "sip_transports udp,tcp",
        f"audio_source aufile,{play_wav}",
        "audio_player aubridge,roomgate-null",
        "audio_alert aubridge,roomgate-null",
        f"snd_path {rec}",
        "rtp_tos 0",
        "rtp_ports 31000-31999",
        "net_interface 127.0.0.1",
        "answermode manual",
        *[f"module {m}.so" for m in modules],
        "module_app account.so",
        "module_app menu.so",
        "",
    ]))
    params = f";regint=0;audio_codecs={codec}"
    if mediaenc:
        params += f";mediaenc={mediaenc}"
    (conf / "accounts").write_text(f"<sip:baresip@127.0.0.1:{port}>{params}\n")
    (conf / "contacts").write_text("")
    cmd = [BARESIP, "-f", str(conf), "-n", "127.0.0.1", "-e", f"/dial {uri}",
           "-t", str(int(seconds))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=workdir, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BaresipError(f"baresip did not exit within {timeout} s") from exc
    decoded = sorted(rec.glob("*-dec.wav"))  # sndfile: what baresip decoded (heard)
    return BaresipResult(proc.returncode, proc.stdout + proc.stderr,
                         decoded[-1] if decoded else None)
