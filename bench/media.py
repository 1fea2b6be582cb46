"""Media fast path benchmark: plain RTP G.711 in, SRTP out, per-packet cost and headroom.

For each system under test (its own process; this process is the load generator
and the sink) one repetition measures:

1. CPU microseconds per packet at 10k packets/s (utime+stime of the relay's process
   from /proc over the measured window, divided by the packets sent in it);
2. a ramp (x1.25 per step) to the highest rate with < 0.1% of packets lost or later
   than 100 ms (stopping early, and saying so, when the generator itself falls behind);
3. added one-way latency p50/p99 at half that rate, paced in 0.2 ms bursts (sender
   timestamp in the payload vs the kernel's receive timestamp at the sink; loopback both
   ways included, the ``loopback`` row shows the harness alone at half the CPU rate).

Repetitions are interleaved (every system once, then again) so drifting machine
load hits all systems alike; the table shows medians with min-max and ratios to
rtpengine measured in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from bench import rtpengine
from bench.rtpload import (
    LATENCY_TICK,
    TICK,
    LoadResult,
    Sender,
    Sink,
    cpu_seconds,
    run_load,
    stream_ssrc,
)

BRIDGE_NOTE = ("the receive path alone: an adapter in bench/ around bridge.legacy_leg.RtpInbound "
               "with a passthrough decoder (the shipped fast path is bridge-fastpath)")
FASTPATH_NOTE = "the lower bound: a lean inline relay in bench/relays.py (the same checks on raw bytes)"
BRIDGE_FASTPATH_NOTE = ("bridge.fastpath.LegacyToCore behind RtpInbound; aiortc's DTLS transport "
                        "stood in by protect + sendto in a coroutine, as aiortc's _send_rtp does")


@dataclass(frozen=True)
class Settings:
    """Rates and durations of one benchmark run."""

    cpu_rate: int = 10_000
    cpu_warmup: float = 1.0
    cpu_duration: float = 3.0
    ramp_factor: float = 1.25
    ramp_max: int = 100_000
    ramp_warmup: float = 0.5
    ramp_duration: float = 2.0
    latency_warmup: float = 0.5
    latency_duration: float = 2.5
    loss_bound: float = 0.001
    repeat: int = 3

    @classmethod
    def quick(cls) -> Settings:
        """A few seconds at a tiny load: exercises every step, measures nothing meaningful."""
        return cls(cpu_rate=500, cpu_warmup=0.2, cpu_duration=0.8, ramp_max=800, ramp_factor=1.6,
                   ramp_warmup=0.2, ramp_duration=0.5, latency_warmup=0.1, latency_duration=0.5, repeat=1)


@dataclass(frozen=True)
class SystemSpec:
    """One system under test: a name for the table, what it is, and how to start it."""

    name: str
    label: str
    kind: str  # "python" | "rtpengine" | "loopback"
    path: str = "floor"
    loop: str = "asyncio"
    note: str = ""


SYSTEMS: dict[str, SystemSpec] = {s.name: s for s in (
    SystemSpec("rtpengine", "rtpengine userspace (C reference)", "rtpengine"),
    SystemSpec("py-asyncio", "30-line relay, asyncio", "python", "floor", "asyncio"),
    SystemSpec("py-uvloop", "30-line relay, uvloop", "python", "floor", "uvloop"),
    SystemSpec("py-twisted", "30-line relay, Twisted epoll", "python", "floor", "twisted"),
    SystemSpec("bridge-asyncio", "bridge RtpInbound passthrough, asyncio", "python", "bridge", "asyncio",
               BRIDGE_NOTE),
    SystemSpec("fastpath-asyncio", "fast path prototype, asyncio", "python", "fastpath", "asyncio",
               FASTPATH_NOTE),
    SystemSpec("fastpath-uvloop", "fast path prototype, uvloop", "python", "fastpath", "uvloop",
               FASTPATH_NOTE),
    SystemSpec("bridge-fastpath-asyncio", "bridge.fastpath relay (media.passthrough), asyncio", "python",
               "bridge-fastpath", "asyncio", BRIDGE_FASTPATH_NOTE),
    SystemSpec("bridge-fastpath-uvloop", "bridge.fastpath relay (media.passthrough), uvloop "
               "(the gateway's default loop)", "python", "bridge-fastpath", "uvloop", BRIDGE_FASTPATH_NOTE),
    SystemSpec("loopback", "no relay: generator -> sink (harness baseline)", "loopback"),
)}
#: ``python -m bench media --passthrough``: today's bridge receive path against the shipped
#: fast path (and the bench prototype), measured in one run so the ratio is fair.
PASSTHROUGH_SYSTEMS = ("bridge-asyncio", "bridge-fastpath-asyncio", "fastpath-asyncio")
DEFAULT_SYSTEMS = tuple(SYSTEMS)


def available(spec: SystemSpec) -> str | None:
    """None when ``spec`` can run here, else why not."""
    if spec.kind == "rtpengine" and rtpengine.binary() is None:
        return "rtpengine not installed (make bench-packages)"
    if spec.loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "uvloop not installed (pip install -e '.[bench]')"
    return None


class Running:
    """A started system under test: where to send each stream and how to stop it."""

    def __init__(self, pid: int | None, ports: list[int], keys: list[bytes | None], ssrc_xor: int,
                 stop: Callable[[], None]) -> None:
        self.pid, self.ports, self.keys, self.ssrc_xor, self.stop = pid, ports, keys, ssrc_xor, stop


def start_system(spec: SystemSpec, streams: int, sender: Sender, sink: Sink) -> Running:
    """Start ``spec`` with ``streams`` streams from ``sender`` toward ``sink``."""
    if spec.kind == "loopback":
        return Running(None, [sink.address[1]] * streams, [None] * streams, 0, lambda: None)
    if spec.kind == "rtpengine":
        relay = rtpengine.RtpEngineRelay.start(streams=streams, generator=sender.address, sink=sink.address)
        return Running(relay.pid, relay.ports, list(relay.keys), 0, relay.stop)
    host, port = sink.address
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.relays", "--path", spec.path, "--loop", spec.loop,
         "--streams", str(streams), "--sink", f"{host}:{port}"],
        stdout=subprocess.PIPE, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        preexec_fn=rtpengine.die_with_parent)  # noqa: PLW1509 - only a prctl, no locks
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise RuntimeError(f"{spec.name}: relay exited with {proc.returncode} before announcing its ports")
    info = json.loads(line)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    return Running(proc.pid, info["ports"], [bytes.fromhex(k) for k in info["keys"]], info["ssrc_xor"], stop)


def measure_once(spec: SystemSpec, settings: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    """One repetition of all figures for one system."""
    max_streams = -(-settings.ramp_max // 50)
    sender, sink = Sender(), Sink.open()
    run = start_system(spec, max_streams, sender, sink)
    try:
        for i, key in enumerate(run.keys):
            sink.expect(i, stream_ssrc(i) ^ run.ssrc_xor, key)
        dests = [("127.0.0.1", p) for p in run.ports]
        cpu: dict[str, float] = {}

        def window(edge: str) -> None:
            if run.pid is not None:
                cpu[edge] = cpu_seconds(run.pid)

        def load(rate: float, warmup: float, duration: float, cb: Callable[[str], None] | None = None,
                 tick: float = TICK) -> LoadResult:
            return run_load(sender=sender, destinations=dests, sink=sink, rate=rate, warmup=warmup,
                            duration=duration, on_window=cb, tick=tick)

        r_cpu = load(settings.cpu_rate, settings.cpu_warmup, settings.cpu_duration, window)
        out: dict[str, Any] = {"at_cpu_rate": r_cpu.summary()}
        out["cpu_us_per_packet"] = ((cpu["end"] - cpu["start"]) * 1e6 / r_cpu.sent) if cpu else None
        out["decrypt_errors"] = r_cpu.decrypt_errors
        log(f"  {spec.name}: {settings.cpu_rate} pps -> cpu {_fmt(out['cpu_us_per_packet'])} us/pkt, "
            f"loss+late {100 * r_cpu.loss_or_late_ratio:.3f}%, p99 {_fmt(r_cpu.percentile_us(99))} us")
        if spec.kind == "loopback":  # the harness alone: latency at the CPU rate, finely paced
            r_lat = load(settings.cpu_rate / 2, settings.latency_warmup, settings.latency_duration,
                         tick=LATENCY_TICK)
            out["max_rate_pps"] = None
            out["latency_rate_pps"] = r_lat.target_pps
            out["latency_p50_us"], out["latency_p99_us"] = r_lat.percentile_us(50), r_lat.percentile_us(99)
            out["latency_run"] = r_lat.summary()
            return out
        steps = [r_cpu.summary()]

        def ok(r: LoadResult) -> bool:
            return r.loss_or_late_ratio < settings.loss_bound and r.decrypt_errors == 0

        best: float | None = r_cpu.target_pps if ok(r_cpu) else None
        limited = False
        rate = float(settings.cpu_rate)
        while True:
            rate = rate * settings.ramp_factor if best is not None else rate / settings.ramp_factor
            if rate > settings.ramp_max or rate < 100:
                break
            time.sleep(0.3)
            r = load(rate, settings.ramp_warmup, settings.ramp_duration)
            steps.append(r.summary())
            out["decrypt_errors"] += r.decrypt_errors
            log(f"  {spec.name}: ramp {r.target_pps:.0f} pps -> loss+late {100 * r.loss_or_late_ratio:.3f}%"
                f"{' (generator behind)' if r.generator_limited else ''}")
            if best is None:
                if ok(r):
                    best = r.target_pps
                    break
                continue
            if not ok(r):
                break
            best = r.target_pps
            if r.generator_limited:
                limited = True
                break
        out["ramp"] = steps
        out["max_rate_pps"] = best
        out["max_rate_generator_limited"] = limited
        out["max_rate_at_ceiling"] = best is not None and best * settings.ramp_factor > settings.ramp_max
        if best:
            time.sleep(0.5)
            r_lat = load(best / 2, settings.latency_warmup, settings.latency_duration, tick=LATENCY_TICK)
            out["latency_rate_pps"] = r_lat.target_pps
            out["latency_p50_us"], out["latency_p99_us"] = r_lat.percentile_us(50), r_lat.percentile_us(99)
            out["latency_run"] = r_lat.summary()
            out["decrypt_errors"] += r_lat.decrypt_errors
        return out
    finally:
        run.stop()
        sender.close()
        sink.sock.close()


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


METRICS = ("cpu_us_per_packet", "max_rate_pps", "latency_p50_us", "latency_p99_us")


def aggregate(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max of each figure over the repetitions."""
    agg: dict[str, Any] = {}
    for m in METRICS:
        values = [r[m] for r in reps if r.get(m) is not None]
        agg[m] = ({"median": statistics.median(values), "min": min(values), "max": max(values)}
                  if values else None)
    agg["max_rate_generator_limited"] = any(r.get("max_rate_generator_limited") for r in reps)
    agg["max_rate_at_ceiling"] = any(r.get("max_rate_at_ceiling") for r in reps)
    agg["decrypt_errors"] = sum(r.get("decrypt_errors", 0) for r in reps)
    return agg


def machine() -> dict[str, Any]:
    """What this ran on: processors, model, kernel, Python and package versions."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    versions: dict[str, str | None] = {"python": platform.python_version(), "rtpengine": rtpengine.version()}
    for pkg in ("pylibsrtp", "uvloop", "twisted", "roomgate"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "loadavg": os.getloadavg(), "versions": versions}


def run(systems: Sequence[str], settings: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure ``systems`` ``settings.repeat`` times (interleaved) and aggregate."""
    result: dict[str, Any] = {"benchmark": "media-fast-path", "machine": machine(), "settings": settings.__dict__,
                              "systems": {}}
    specs = []
    for name in systems:
        spec = SYSTEMS[name]
        why = available(spec)
        if why:
            log(f"skipping {name}: {why}")
            result["systems"][name] = {"label": spec.label, "skipped": why}
        else:
            specs.append(spec)
            result["systems"][name] = {"label": spec.label, "note": spec.note, "reps": []}
    t0 = time.monotonic()
    for rep in range(settings.repeat):
        log(f"repetition {rep + 1}/{settings.repeat}")
        for spec in specs:
            result["systems"][spec.name]["reps"].append(measure_once(spec, settings, log))
    for spec in specs:
        entry = result["systems"][spec.name]
        entry.update(aggregate(entry["reps"]))
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    result["machine"]["loadavg_end"] = os.getloadavg()  # others' work on the machine during the run
    result["ratios_to_rtpengine"] = ratios(result)
    return result


def ratios(result: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per system: median CPU per packet / rtpengine's and max rate / rtpengine's (same run)."""
    ref = result["systems"].get("rtpengine", {})
    out: dict[str, dict[str, float | None]] = {}
    for name, entry in result["systems"].items():
        if "reps" not in entry or "reps" not in ref:
            continue
        out[name] = {}
        for m in ("cpu_us_per_packet", "max_rate_pps"):
            a, b = entry.get(m), ref.get(m)
            out[name][m] = round(a["median"] / b["median"], 2) if a and b and b["median"] else None
    return out


def table(result: dict[str, Any]) -> str:
    """The figures as a Markdown table."""
    s = result["settings"]
    rows = [(f"| system | CPU us/pkt at {s['cpu_rate']} pps | x rtpengine | max pps, <0.1% loss/late "
             "| x rtpengine | latency p50 / p99 us at half max |"),
            "| --- | --- | --- | --- | --- | --- |"]
    for name, e in result["systems"].items():
        if "skipped" in e:
            rows.append(f"| {name} | skipped: {e['skipped']} | | | | |")
            continue
        r = result["ratios_to_rtpengine"].get(name, {})

        def cell(m: str, digits: int = 1, e: dict[str, Any] = e) -> str:
            v = e.get(m)
            if not v:
                return "-"
            if v["min"] == v["max"]:
                return _fmt(v["median"], digits)
            return f"{_fmt(v['median'], digits)} [{_fmt(v['min'], digits)}-{_fmt(v['max'], digits)}]"

        rate = cell("max_rate_pps", 0)
        if e.get("max_rate_generator_limited") and rate != "-":
            rate = ">= " + rate + " (generator limit)"
        elif e.get("max_rate_at_ceiling") and rate != "-":
            rate = ">= " + rate + " (ramp ceiling)"
        lat = f"{cell('latency_p50_us', 0)} / {cell('latency_p99_us', 0)}"
        rows.append(f"| {name} | {cell('cpu_us_per_packet')} | {_fmt(r.get('cpu_us_per_packet'), 2)} | {rate} "
                    f"| {_fmt(r.get('max_rate_pps'), 2)} | {lat} |")
    m = result["machine"]
    head = (f"media fast path: RTP PCMU 172 B, 50 pps/stream -> SRTP AES_CM_128_HMAC_SHA1_80; "
            f"median [min-max] of {s['repeat']} run(s)\n"
            f"machine: {m['nproc']} x {m['cpu_model']}, Linux {m['kernel']}; "
            + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + "\n")
    notes = [f"- {name}: {e['note']}" for name, e in result["systems"].items() if e.get("note")]
    return head + "\n".join(rows) + ("\n" + "\n".join(notes) if notes else "")
