"""Run the real gateway (``roomgate run``) as a subprocess for interop tests.

    with running_gateway(tmp_path, policy={"unknown_meetings": "defaults"}) as gw:
        result = run_pjsua_call(gw.sip_uri("1000"), codec="PCMU", ...)
        assert any(e["event"] == "call.admitted" for e in gw.log_lines())

or, in a test, the ``gateway_factory`` fixture (registered by tests/conftest.py)::

    def test_x(gateway_factory):
        gw = gateway_factory(policy={...})   # stopped at the end of the test

Each gateway gets free ports on 127.0.0.1 (SIP UDP and TCP on one port number, HTTP) and a
200-port media range inside 30000-39999 that no other gateway started through this module (in
any process on the machine) holds at the same time; its config and logs live in a temp folder.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

MEDIA_LOW, MEDIA_HIGH, MEDIA_BLOCK = 30000, 40000, 200
LOCK_DIR = Path(tempfile.gettempdir()) / "roomgate-test-media-locks"

DEFAULT_POLICY: dict[str, Any] = {
    "version": 1,
    "unknown_meetings": "defaults",
    "defaults": {"legacy_media": "allow-plain", "protocols": ["sip", "h323"]},
    "meetings": {},
}


def roomgate_command() -> list[str]:
    """The venv's ``roomgate`` console script (beside this interpreter)."""
    script = Path(sys.executable).with_name("roomgate")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main())"]


# -- ports --------------------------------------------------------------------------------------

def _outside_media_ranges(port: int) -> bool:
    """Signalling ports never fall in the block media ranges are taken from (the kernel's
    ephemeral range overlaps it), or a gateway's config check would refuse the clash."""
    return not MEDIA_LOW <= port < MEDIA_HIGH


def free_tcp_port() -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if _outside_media_ranges(port):
            return port
    raise RuntimeError("no free TCP port outside the media ranges")


def free_sip_port() -> int:
    """A port number free on 127.0.0.1 for both UDP and TCP."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            if not _outside_media_ranges(port):
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP")


def _udp_ports_free(low: int, high: int) -> bool:
    socks: list[socket.socket] = []
    try:
        for port in range(low, high + 1):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


class MediaRange:
    """A block of UDP ports held (by an flock) until ``release()``."""

    def __init__(self, low: int, high: int, lock_file: Any) -> None:
        self.low, self.high, self._lock_file = low, high, lock_file

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"

    def release(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None


def reserve_media_range(size: int = MEDIA_BLOCK) -> MediaRange:
    """Take a free block of ``size`` UDP ports in 30000-39999 (blocks tried in random order)."""
    LOCK_DIR.mkdir(exist_ok=True)
    bases = list(range(MEDIA_LOW, MEDIA_HIGH - size + 1, size))
    random.shuffle(bases)
    for base in bases:
        lock = open(LOCK_DIR / f"{base}.lock", "w")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        if _udp_ports_free(base, base + size - 1):
            return MediaRange(base, base + size - 1, lock)
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
    raise RuntimeError(f"no free block of {size} UDP ports in {MEDIA_LOW}-{MEDIA_HIGH - 1}")


# -- config -------------------------------------------------------------------------------------

def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_policy(policy: Mapping[str, Any] | None) -> dict[str, Any]:
    """DEFAULT_POLICY with ``policy`` merged over it (``meetings`` keys become strings)."""
    merged = _merge(DEFAULT_POLICY, policy or {})
    merged["meetings"] = {str(k): v for k, v in (merged.get("meetings") or {}).items()}
    return merged


# -- the running gateway -----------------------------------------------------------------------

@dataclass
class GatewayProcess:
    proc: subprocess.Popen[bytes]
    workdir: Path
    config_path: Path
    policy_path: Path
    sip_port: int  # UDP and TCP
    http_port: int
    media: MediaRange
    config: dict[str, Any]
    policy: dict[str, Any]
    stderr_path: Path
    stdout_path: Path
    _log_offset: int = field(default=0, repr=False)
    tls_port: int | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def media_ports(self) -> range:
        return range(self.media.low, self.media.high + 1)

    def sip_uri(self, meeting: str, transport: str = "udp") -> str:
        """The URI a room system dials to join ``meeting`` over ``transport`` (udp|tcp|tls|sips).

        ``sips`` gives a ``sips:`` URI (TLS implied); both TLS forms need ``start_gateway(tls=True)``."""
        if transport in ("tls", "sips"):
            if self.tls_port is None:
                raise ValueError("this gateway has no TLS listener (start it with tls=True)")
            if transport == "sips":
                return f"sips:{meeting}@127.0.0.1:{self.tls_port}"
            return f"sip:{meeting}@127.0.0.1:{self.tls_port};transport=tls"
        if transport not in ("udp", "tcp"):
            raise ValueError(f"unknown transport {transport!r}")
        suffix = ";transport=tcp" if transport == "tcp" else ""
        return f"sip:{meeting}@127.0.0.1:{self.sip_port}{suffix}"

    def page_url(self, meeting: str) -> str:
        return f"{self.http_url}/m/{meeting}"

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def log_lines(self) -> list[dict[str, Any]]:
        """Every JSON log event the gateway wrote so far (other stderr lines are left out)."""
        events = []
        for line in self.stderr_text().splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def logged(self, secret: str) -> bool:
        """Whether ``secret`` (a PIN, a token) appears in the log: anywhere in a line that is not
        an event, and in an event's keys and string values except its timestamp.  Timestamps and
        numbers are left out because digits turn up there by chance (``...51.874321Z`` holds
        "4321", ``"shed_total": 1111`` holds "1111"); the gateway keeps PINs and tokens as strings,
        so a leak would be a string."""
        for line in self.stderr_text().splitlines():
            try:
                event = json.loads(line) if line.lstrip().startswith("{") else None
            except ValueError:
                event = None
            if not isinstance(event, dict):
                if secret in line:
                    return True
                continue
            event.pop("timestamp", None)
            if any(secret in text for text in _strings(event)):
                return True
        return False

    def events(self, name: str, **match: Any) -> list[dict[str, Any]]:
        """Log events called ``name`` whose fields equal ``match``."""
        return [e for e in self.log_lines()
                if e.get("event") == name and all(e.get(k) == v for k, v in match.items())]

    def wait_for_event(self, name: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """Wait until a log event ``name`` (with fields ``match``) appears; return it."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(name, **match)
            if found:
                return found[0]
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"no log event {name} {match or ''} within {timeout}s "
                    f"(exit {self.proc.poll()}); stderr tail:\n{self.stderr_text()[-4000:]}")
            time.sleep(0.1)

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET ``path`` on the gateway's HTTP listener: (status, body)."""
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            self.media.release()
        return self.proc.returncode


def _wait_healthy(gw: GatewayProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        if gw.proc.poll() is not None:
            raise RuntimeError(f"roomgate exited with {gw.proc.returncode} before /healthz answered; "
                               f"config {gw.config_path}; stderr:\n{gw.stderr_text()[-6000:]}")
        try:
            status, _ = gw.get("/healthz", timeout=1.0)
            if status == 200:
                return
            last = f"status {status}"
        except OSError as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise RuntimeError(f"roomgate /healthz not 200 within {timeout}s ({last}); "
                               f"stderr:\n{gw.stderr_text()[-6000:]}")
        time.sleep(0.1)


def make_test_certificate(folder: Path, name: str = "sip") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM), made with ``openssl``."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}-cert.pem", folder / f"{name}-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


def start_gateway(workdir: Path | str, *, policy: Mapping[str, Any] | None = None,
                  config: Mapping[str, Any] | None = None, log_level: str | None = None,
                  ready_timeout: float = 30.0, env: Mapping[str, str] | None = None,
                  command: list[str] | None = None, tls: bool = False) -> GatewayProcess:
    """Write gateway.yaml + policy.yaml into ``workdir``, start ``roomgate run``, wait for /healthz.

    ``policy`` is merged over DEFAULT_POLICY; ``config`` over the generated gateway config (e.g.
    ``{"core": {"url": ...}}``); ``log_level`` sets ``log.level``. ``command`` replaces
    ``roomgate`` (``run --config PATH`` is appended to it). ``tls`` adds a SIP TLS listener on
    a free port with a fresh self-signed certificate (``.tls_port``, ``sip_uri(m, "tls")``).
    Call ``.stop()`` (or use ``running_gateway``).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    media = reserve_media_range()
    try:
        sip_port, http_port = free_sip_port(), free_tcp_port()
        while http_port == sip_port:
            http_port = free_tcp_port()
        tls_port: int | None = None
        tls_config: dict[str, Any] = {}
        if tls:
            tls_port = free_tcp_port()
            while tls_port in (sip_port, http_port):
                tls_port = free_tcp_port()
            cert, key = make_test_certificate(workdir / "tls")
            tls_config = {"tls": f"127.0.0.1:{tls_port}", "tls_cert": str(cert), "tls_key": str(key)}
        policy_doc = build_policy(policy)
        policy_path = workdir / "policy.yaml"
        policy_path.write_text(yaml.safe_dump(policy_doc, sort_keys=False))
        config_doc = _merge({
            "sip": {"udp": f"127.0.0.1:{sip_port}", "tcp": f"127.0.0.1:{sip_port}", **tls_config},
            "http": {"listen": f"127.0.0.1:{http_port}"},
            "media": {"address": "127.0.0.1", "ports": f"{media.low}-{media.high}"},
            "policy": str(policy_path),
            "log": {"format": "json", **({"level": log_level} if log_level else {})},
        }, config or {})
        config_path = workdir / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(config_doc, sort_keys=False))
        stderr_path, stdout_path = workdir / "gateway.stderr.log", workdir / "gateway.stdout.log"
        with open(stderr_path, "wb") as err, open(stdout_path, "wb") as out:
            proc = subprocess.Popen(
                (command or roomgate_command()) + ["run", "--config", str(config_path)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=workdir,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
    except BaseException:
        media.release()
        raise
    gw = GatewayProcess(proc=proc, workdir=workdir, config_path=config_path, policy_path=policy_path,
                        sip_port=sip_port, http_port=http_port, media=media, config=config_doc,
                        policy=policy_doc, stderr_path=stderr_path, stdout_path=stdout_path,
                        tls_port=tls_port)
    try:
        _wait_healthy(gw, ready_timeout)
    except BaseException:
        gw.stop()
        raise
    return gw


def _strings(value: Any) -> Iterator[str]:
    """Every key and string value inside a decoded JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@contextlib.contextmanager
def running_gateway(workdir: Path | str, **kwargs: Any) -> Iterator[GatewayProcess]:
    """``start_gateway`` as a context manager: stopped (SIGTERM, then SIGKILL) on exit."""
    gw = start_gateway(workdir, **kwargs)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """A factory of running gateways (``gateway_factory(policy=..., config=...)``), all stopped
    at the end of the test; each has its own folder under ``tmp_path``."""
    started: list[GatewayProcess] = []

    def make(**kwargs: Any) -> GatewayProcess:
        gw = start_gateway(tmp_path / f"gateway{len(started)}", **kwargs)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()
