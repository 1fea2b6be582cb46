"""Drive real PJSIP user agents (``tests/peers/pjsua_agent.py``) from tests.

Each agent is its own process (pjsua2 holds at most 4 calls per process and can crash at
teardown), run with this interpreter (the venv's). ``run_pjsua_call`` places one call and returns
when it is over; ``start_pjsua_answer`` starts a listening agent and returns once it listens.

    answer = start_pjsua_answer(codec="PCMU", play_wav=tone440, record_wav=tmp / "a.wav")
    with answer:
        result = run_pjsua_call(answer.uri(), codec="PCMU", play_wav=tone1000,
                                record_wav=tmp / "c.wav", seconds=3)
        answered = answer.wait()
    assert result.connected
    assert_tone(*result.recording(), 440)
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np

from tests.support.audio import read_wav

AGENT = Path(__file__).resolve().parents[1] / "peers" / "pjsua_agent.py"
READY_MARK = "PJSUA_AGENT_READY"


@dataclass(frozen=True)
class PjsuaResult:
    """What one pjsua call did, from the agent's result line."""

    connected: bool
    final_status: int
    reason: str
    warning: str | None
    duration_connected: float
    rx_rtp_packets: int | None
    tx_rtp_packets: int | None
    codec: str | None
    remote_rtp: str | None
    record: Path | None
    status_from_wire: bool
    error: str | None
    returncode: int
    stderr: str = field(repr=False, default="")
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    def recording(self) -> tuple[np.ndarray, int]:
        """The received audio as (int16 samples, rate); pass to ``assert_tone(*r.recording(), hz)``."""
        if self.record is None:
            raise ValueError("this call recorded nothing (no record_wav given)")
        return read_wav(self.record)

    @classmethod
    def from_line(cls, line: str, returncode: int, stderr: str) -> PjsuaResult:
        raw = json.loads(line)
        return cls(
            connected=bool(raw["connected"]),
            final_status=int(raw["final_status"]),
            reason=raw.get("reason") or "",
            warning=raw.get("warning"),
            duration_connected=float(raw.get("duration_connected") or 0.0),
            rx_rtp_packets=raw.get("rx_rtp_packets"),
            tx_rtp_packets=raw.get("tx_rtp_packets"),
            codec=raw.get("codec"),
            remote_rtp=raw.get("remote_rtp"),
            record=Path(raw["record"]) if raw.get("record") else None,
            status_from_wire=bool(raw.get("status_from_wire")),
            error=raw.get("error"),
            returncode=returncode,
            stderr=stderr,
            raw=raw,
        )


def free_rtp_port(low: int = 40000, high: int = 58000) -> int:
    """An even port P in [low, high) with P and P+1 free on UDP 127.0.0.1 (for ``rtp_port``).

    The range keeps clear of the gateway's media range (30000-39999 in tests)."""
    for _ in range(200):
        port = random.randrange(low, high, 2)
        socks = []
        try:
            for p in (port, port + 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free RTP port pair found")


def _common_args(*, codec: str | None, play_wav: Path | str | None, record_wav: Path | str | None,
                 seconds: float, transport: str, timeout: float, srtp: str,
                 log_file: Path | str | None, rtp_port: int = 0,
                 srtp_suite: str | None = None) -> list[str]:
    args = ["--transport", transport, "--seconds", str(seconds), "--timeout", str(timeout),
            "--srtp", srtp]
    if srtp_suite:
        args += ["--srtp-suite", srtp_suite]
    if rtp_port:
        args += ["--rtp-port", str(rtp_port)]
    if codec:
        args += ["--codec", codec]
    if play_wav:
        args += ["--play", str(play_wav)]
    if record_wav:
        args += ["--record", str(record_wav)]
    if log_file:
        args += ["--log-file", str(log_file)]
    return args


def _parse_output(stdout: str, stderr: str, returncode: int, what: str) -> PjsuaResult:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(
            f"pjsua agent ({what}) printed no result (exit {returncode}); stderr tail:\n{stderr[-3000:]}"
        )
    return PjsuaResult.from_line(lines[-1], returncode, stderr)


def run_pjsua_call(uri: str, *, codec: str | None = None, play_wav: Path | str | None = None,
                   record_wav: Path | str | None = None, seconds: float = 3.0,
                   transport: str = "udp", timeout: float = 20.0, srtp: str = "off",
                   log_file: Path | str | None = None, port: int = 0,
                   rtp_port: int = 0, srtp_suite: str | None = None,
                   tls_cert: Path | str | None = None, tls_key: Path | str | None = None,
                   dtmf: str | None = None, dtmf_pause: float | None = None,
                   dtmf_method: str = "rfc4733",
                   session_expires: int | None = None,
                   delayed_offer: bool = False) -> PjsuaResult:
    """Place one call with a real pjsua and wait for it to end.

    ``codec`` (PCMU|PCMA|G722) is the only codec offered; ``play_wav`` is looped into the call;
    the received audio goes to ``record_wav``; the call stays up ``seconds`` once connected.
    ``timeout`` bounds the wait for an answer (the process gets ``timeout + seconds + 15`` s in
    all). ``srtp`` is off|optional|mandatory (SDES); ``srtp_suite`` limits the SDES suites offered
    (comma-separated, e.g. ``AES_CM_128_HMAC_SHA1_32``). ``transport`` is udp, tcp or tls (TLS 1.2,
    server certificate not verified; ``tls_cert``/``tls_key`` are a client certificate to present).
    ``log_file`` gets pjsua's own log.  ``dtmf`` ("1000#,1234#") is sent by RFC 4733 after
    connecting, each comma-separated entry ``dtmf_pause`` seconds after the previous one
    (``dtmf_method="info"``: by SIP INFO instead).  ``session_expires`` turns on RFC 4028
    session timers (pjsua's ``timerUse`` always) with that interval.  ``delayed_offer`` sends the
    INVITE without SDP (RFC 3261 13.2.1): the offer comes in the 200 OK, pjsua answers in the ACK.
    ``port`` is the local SIP port (0: any); ``rtp_port`` the local RTP port (0: a random one
    in 40000-58000; see ``free_rtp_port`` when a test must know it, e.g. to capture it).
    """
    cmd = [sys.executable, str(AGENT), "call", uri, "--port", str(port)] + _common_args(
        codec=codec, play_wav=play_wav, record_wav=record_wav, seconds=seconds,
        transport=transport, timeout=timeout, srtp=srtp, log_file=log_file, rtp_port=rtp_port,
        srtp_suite=srtp_suite)
    if tls_cert and tls_key:
        cmd += ["--tls-cert", str(tls_cert), "--tls-key", str(tls_key)]
    if dtmf:
        cmd += ["--dtmf", dtmf]
    if dtmf_pause is not None:
        cmd += ["--dtmf-pause", str(dtmf_pause)]
    if dtmf_method != "rfc4733":
        cmd += ["--dtmf-method", dtmf_method]
    if session_expires:
        cmd += ["--session-expires", str(session_expires)]
    if delayed_offer:
        cmd += ["--no-sdp-offer"]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout + seconds + 15)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"pjsua call agent hung; stderr tail:\n{(exc.stderr or b'')[-3000:]!r}") from exc
    return _parse_output(proc.stdout, proc.stderr, proc.returncode, f"call {uri}")


class PjsuaAnswer:
    """A running pjsua ``answer`` agent. Use as a context manager (it is killed on exit)."""

    def __init__(self, proc: subprocess.Popen[str], ports: dict[str, int],
                 stderr_lines: list[str], drain: threading.Thread) -> None:
        self.proc = proc
        self.ports = ports
        self._stderr_lines = stderr_lines  # filled by the drain thread
        self._drain = drain
        self._result: PjsuaResult | None = None

    @property
    def port(self) -> int:
        """The SIP port (UDP's when it listens on both)."""
        return self.ports.get("udp") or self.ports["tcp"]

    def uri(self, user: str = "answer", transport: str | None = None) -> str:
        """A SIP URI reaching this agent (``;transport=tcp`` added for TCP)."""
        transport = transport or ("udp" if "udp" in self.ports else "tcp")
        suffix = ";transport=tcp" if transport == "tcp" else ""
        return f"sip:{user}@127.0.0.1:{self.ports[transport]}{suffix}"

    @property
    def stderr(self) -> str:
        return "".join(self._stderr_lines)

    def wait(self, timeout: float = 30.0) -> PjsuaResult:
        """Wait for the agent to finish (its calls ended or its own timeout) and return its result."""
        if self._result is None:
            try:
                stdout, _ = self.proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.stop()
                raise RuntimeError(f"pjsua answer agent did not finish; stderr tail:\n{self.stderr[-3000:]}")
            self._drain.join(timeout=5)
            self._result = _parse_output(stdout or "", self.stderr, self.proc.returncode, "answer")
        return self._result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_pjsua_answer(*, codec: str | None = None, play_wav: Path | str | None = None,
                       record_wav: Path | str | None = None, seconds: float = 30.0,
                       transport: str = "udp", port: int = 0, timeout: float = 30.0,
                       answer_status: int = 200, answer_warning: str | None = None,
                       calls: int = 1, srtp: str = "off", log_file: Path | str | None = None,
                       rtp_port: int = 0, ready_timeout: float = 15.0) -> PjsuaAnswer:
    """Start a pjsua that answers incoming calls on 127.0.0.1 and return once it listens.

    It answers ``answer_status`` (with ``answer_warning`` as a Warning header when it rejects),
    hangs up ``seconds`` after connecting unless the caller hangs up first, and exits when
    ``calls`` calls have ended or ``timeout`` passed. ``transport`` is udp, tcp or "udp,tcp";
    ``port`` 0 picks a free port (see ``.ports``/``.uri()``). Recordings of calls after the first
    get ``.1``, ``.2`` before the extension.
    """
    cmd = [sys.executable, str(AGENT), "answer", "--port", str(port),
           "--answer-status", str(answer_status), "--calls", str(calls)] + _common_args(
        codec=codec, play_wav=play_wav, record_wav=record_wav, seconds=seconds,
        transport=transport, timeout=timeout, srtp=srtp, log_file=log_file, rtp_port=rtp_port)
    if answer_warning:
        cmd += ["--answer-warning", answer_warning]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    ready = threading.Event()
    ports: dict[str, int] = {}

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if line.startswith(READY_MARK) and not ready.is_set():
                ports.update(json.loads(line[len(READY_MARK):]))
                ready.set()
        ready.set()  # EOF: the process ended (maybe before being ready)

    thread = threading.Thread(target=drain, name="pjsua-answer-stderr", daemon=True)
    thread.start()
    deadline = time.monotonic() + ready_timeout
    while not ready.wait(0.1):
        if time.monotonic() > deadline:
            break
    if not ports:
        proc.kill()
        proc.wait(timeout=10)
        thread.join(timeout=5)
        raise RuntimeError(f"pjsua answer agent never listened; stderr tail:\n{''.join(lines)[-3000:]}")
    return PjsuaAnswer(proc, ports, lines, thread)
