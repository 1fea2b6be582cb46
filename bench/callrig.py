"""What the calls and call-setup benchmarks share: the processes under test and the callers.

``start_rig`` runs the conference core in its own process (bench/core_process.py) and
``roomgate run`` pointed at it with ``core.url`` (tests/support/gateway_process.py,
with a media range large enough for the ramp), so CPU and memory are read per process
from /proc. Callers are :class:`tests.support.sip_uac.SipUac` instances, each with its
RTP socket (:class:`bench.callmedia.CallAudio`) on the same address.

The gateway limits new INVITEs per source address (sip/ratelimit.py: 5/s, bursts of
10), which is the flood protection doing its job. A benchmark from one address would
measure that limit, so callers are spread over loopback addresses 127.0.1.2 and up
(all of 127/8 is loopback on Linux), as calls from many room systems would be:
:class:`SourcePool` hands out addresses so that none gets more than its budget.
``start_rig(h323=True)`` adds an H.323 listener (``Rig.h323_port``) for the call-setup
benchmark's H.323 callers (bench/h323_cycle.py), which need no such spread: the H.323 side has
no per-source limit.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.callmedia import CallAudio
from tests.support.gateway_process import (
    GatewayProcess,
    MediaRange,
    free_tcp_port,
    reserve_media_range,
    start_gateway,
)
from tests.support.sip_uac import SipUac, UacCall, offer_sdp

#: INVITEs one source address may send per second and at once. The gateway allows 5/s in bursts
#: of 10 (sip/ratelimit.py DEFAULT_LIMITS), but it sees them when its loop reads them: a loaded
#: gateway reads a backlog at once, and 4/s from one address then arrived as 9 at once (503s in the
#: calls benchmark at 20 calls). A wide margin keeps the limit out of the figures.
SOURCE_RATE, SOURCE_BURST = 1.0, 2
#: Loopback source addresses the pool may use (127.0.1.2 and up, 250 per /24).
MAX_SOURCES = 4000


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` (VmRSS from /proc/<pid>/status) in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Rig:
    """The core process and the gateway process under test."""

    core: subprocess.Popen[str]
    core_url: str
    gateway: GatewayProcess
    media: MediaRange
    workdir: Path
    #: The gateway's H.323 call-signalling port on 127.0.0.1 (None: no H.323 listener).
    h323_port: int | None = None

    @property
    def pids(self) -> dict[str, int]:
        return {"gateway": self.gateway.proc.pid, "core": self.core.pid}

    @property
    def max_calls(self) -> int:
        """Calls the media range holds (one RTP/RTCP pair each), leaving a few spare."""
        return (self.media.high - self.media.low + 1) // 2 - 4

    def alive(self) -> bool:
        return self.gateway.alive() and self.core.poll() is None

    def stop(self) -> None:
        try:
            self.gateway.stop()
        finally:
            if self.core.poll() is None:
                self.core.terminate()
                try:
                    self.core.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.core.kill()
                    self.core.wait(timeout=5)
            self.media.release()


def start_rig(*, media_ports: int = 1000, log_level: str = "info",
              workdir: Path | None = None, passthrough: bool = False, h323: bool = False,
              event_loop: str | None = None) -> Rig:
    """Start the core process, then the gateway pointed at it; both on 127.0.0.1 (``passthrough``:
    the gateway runs with ``media.passthrough: auto``; ``h323``: with an ``h323.listen`` on a
    free port, ``Rig.h323_port``; ``event_loop``: both processes' ``runtime.event_loop``, default
    ``$ROOMGATE_BENCH_EVENT_LOOP`` (set by ``python -m bench --event-loop``) or ``auto``)."""
    event_loop = event_loop or os.environ.get("ROOMGATE_BENCH_EVENT_LOOP") or "auto"
    workdir = workdir or Path(tempfile.mkdtemp(prefix="roomgate-bench-calls-"))
    core_log = open(workdir / "core.stderr.log", "w")  # noqa: SIM115 - the child keeps it
    # ROOMGATE_BENCH_PROFILE_CORE=FILE runs the core under cProfile, written to FILE when it stops
    # (SIGTERM ends its loop normally): where its time goes (docs/performance.md, video benchmark).
    profile = os.environ.get("ROOMGATE_BENCH_PROFILE_CORE")
    profiler = ["-m", "cProfile", "-o", profile] if profile else []
    core = subprocess.Popen(
        [sys.executable, *profiler, "-m", "bench.core_process", "--log-level", log_level,
         "--event-loop", event_loop],
        stdout=subprocess.PIPE, stderr=core_log,
        text=True, cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    core_log.close()
    assert core.stdout is not None
    line = core.stdout.readline().strip()
    if not line.startswith("READY "):
        core.kill()
        raise RuntimeError(f"core process did not start: {line!r}; see {workdir / 'core.stderr.log'}")
    core_url = line.split(" ", 1)[1]
    media = reserve_media_range(media_ports)
    h323_port = free_tcp_port() if h323 else None
    try:
        gateway = start_gateway(
            workdir / "gateway", log_level=log_level,
            config={"core": {"url": core_url}, "runtime": {"event_loop": event_loop},
                    "media": {"ports": f"{media.low}-{media.high}",
                              "passthrough": "auto" if passthrough else "off"},
                    **({"h323": {"listen": f"127.0.0.1:{h323_port}"}} if h323 else {})})
    except BaseException:
        core.kill()
        media.release()
        raise
    return Rig(core=core, core_url=core_url, gateway=gateway, media=media, workdir=workdir,
               h323_port=h323_port)


@dataclass
class Caller:
    """One call placed by a benchmark: its UAC dialog and its audio."""

    audio: CallAudio
    call: UacCall | None = None
    error: str | None = None
    setup_s: float | None = None


@dataclass
class SourcePool:
    """UACs on 127.0.1.2, .3, ...; ``take()`` returns one whose INVITE budget has room."""

    uacs: list[SipUac] = field(default_factory=list)
    _spent: list[list[float]] = field(default_factory=list)
    _claimed: int = 0

    async def take(self) -> SipUac:
        """A UAC whose address sent fewer than SOURCE_BURST INVITEs in the last
        SOURCE_BURST / SOURCE_RATE seconds (a new address when all are busy)."""
        now = asyncio.get_running_loop().time()
        window = SOURCE_BURST / SOURCE_RATE
        for uac, times in zip(self.uacs, self._spent, strict=True):
            times[:] = [t for t in times if now - t < window]
            if len(times) < SOURCE_BURST:
                times.append(now)
                return uac
        # The address is claimed before the await: concurrent take()s used to see the same
        # len(self.uacs) while one was being created and open several UACs on one address,
        # whose INVITEs together exceeded the gateway's per-source limit (503s).
        i = self._claimed
        if i >= MAX_SOURCES:
            raise RuntimeError(f"more than {MAX_SOURCES} loopback source addresses needed")
        self._claimed += 1
        uac = await SipUac.create(local_host=f"127.0.{1 + i // 250}.{2 + i % 250}")
        self.uacs.append(uac)
        self._spent.append([now])
        return uac

    async def close(self) -> None:
        for uac in self.uacs:
            await uac.close()


async def place_call(pool: SourcePool, target_uri: str, *, tone_hz: float, timeout: float = 15.0,
                     more_media: Callable[[str], Awaitable[str]] | None = None,
                     **audio_options: Any) -> Caller:
    """Take a source address, bind its RTP socket, INVITE, and start sending on the 200.

    ``more_media(host)``, when given, binds more media on the caller's address and returns the
    SDP lines to offer after the audio (the video benchmark's H.264 line, bench/video.py)."""
    uac = await pool.take()
    audio, port = await CallAudio.bind(uac.host, tone_hz=tone_hz, **audio_options)
    caller = Caller(audio)
    offer = offer_sdp(uac.host, port, (0,)) + (await more_media(uac.host) if more_media else "")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        caller.call = await uac.invite(target_uri, offer, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - every failure is counted, by kind
        caller.error = f"{type(exc).__name__}: {exc}"
        return caller
    caller.setup_s = loop.time() - t0
    m = caller.call.answer_sdp.media[0]
    audio.start((m.connection_address or "127.0.0.1", m.port))
    return caller


async def hang_up(caller: Caller, timeout: float = 10.0) -> str | None:
    """BYE (when the call is up) and close the audio; returns an error text or None."""
    error = None
    if caller.call is not None and not caller.call.ended.done():
        try:
            await caller.call.bye(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - counted by the caller
            error = f"BYE: {type(exc).__name__}: {exc}"
    await caller.audio.stop()
    return error


async def hang_up_all(callers: list[Caller], pool: SourcePool) -> list[str]:
    """Hang every call up at once, then close ``pool``'s callers; the errors of the BYEs that failed."""
    errors = [e for e in await asyncio.gather(*(hang_up(c) for c in callers)) if e]
    await pool.close()
    return errors
