"""Calls benchmark (issue 6): how many concurrent two-way SIP calls one gateway carries.

Each repetition starts a fresh conference core in its own process and a fresh gateway
pointed at it (bench/callrig.py), then:

1. **Calibration**: one meeting of two calls, to measure the fixed mouth-to-ear latency
   of the path (caller -> gateway -> core -> gateway -> other caller) when idle.
2. **Ramp**: N calls (N/2 meetings of two callers, so each caller hears the other: with
   one caller the N-1 mix is silence) for ``start_calls``, then x``factor`` per step.
   Every caller sends a G.711 tone in bursts and keeps what the gateway sends back
   (bench/callmedia.py). After ``warmup`` the step is held for ``hold`` seconds and
   measured: packet loss of the gateway's stream to each caller, bursts not heard,
   latency of each burst, CPU (utime+stime from /proc/<pid>/stat) and RSS (VmRSS) of
   the gateway and core processes. A step passes with every call set up and none
   dropped, under ``loss_bound`` of packets lost and of bursts unheard, and a p99
   *added* latency under ``added_p99_bound_ms``. A burst's added latency is its latency
   minus the lowest latency of its own call and direction during the hold: each call's
   path has a standing delay of its own (a few hundred ms, set when the call starts and
   varying from call to call), and what load adds comes on top of it. That floor is
   reported beside (lowest and highest over the calls, and the calibration's median).

The ramp stops at the first failing step (or at the media port range). Codec cases: (a)
G.711 passthrough (``--passthrough``: the gateway relays packets undecoded, bridge/fastpath.py)
and (b) G.711 <-> Opus transcoding (the default: the gateway decodes and encodes Opus). In
meetings of two the core forwards each side's packets to the other (gateway/core/forwarding.py)
rather than decoding and mixing, as it would from three participants.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from bench.callmedia import pairs_figures
from bench.callreport import (
    aggregate_at_max,
    cell,
    load_figures,
    machine_line,
    ramp_calls,
    run_repetitions,
    setup_failures,
    setup_figures,
    spread,
)
from bench.callrig import (
    Caller,
    Rig,
    SourcePool,
    hang_up_all,
    place_call,
    rss_kib,
)
from bench.rtpload import cpu_seconds

TRANSCODE_PATH = ("G.711 -> gateway decode -> Opus -> core forwards (one other party; mixes from three) "
                  "-> Opus -> gateway -> G.711")
PASSTHROUGH_PATH = ("G.711 -> gateway relay (SRTP) -> core forwards (one other party; mixes G.711 from three) "
                    "-> gateway relay -> G.711")
PATH_NOTE = ("(a) G.711 passthrough is `--passthrough` (the gateway runs with media.passthrough: auto, "
             "bridge/fastpath.py relays packets undecoded); (b) G.711 <-> Opus transcoding is the "
             "default path (media.passthrough: off). In meetings of two the core forwards, in both")


def path_label(passthrough: bool) -> str:
    """What a call's audio crosses in this run."""
    return PASSTHROUGH_PATH if passthrough else TRANSCODE_PATH


TONES = (700.0, 1100.0)


@dataclass(frozen=True)
class Settings:
    """Ramp, durations and pass bounds of one calls benchmark run."""

    start_calls: int = 10
    factor: float = 2.0
    max_calls: int = 480
    hold: float = 60.0
    warmup: float = 3.0
    calibrate_hold: float = 10.0
    repeat: int = 3
    setup_concurrency: int = 8
    setup_timeout: float = 20.0
    loss_bound: float = 0.001
    added_p99_bound_ms: float = 20.0
    media_ports: int = 1000
    #: Run the gateway with ``media.passthrough: auto`` (the G.711 fast path).
    passthrough: bool = False

    @classmethod
    def quick(cls) -> Settings:
        """Seconds at a tiny load: the smoke test."""
        return cls(start_calls=2, max_calls=4, hold=4.0, warmup=1.5, calibrate_hold=4.0, repeat=1,
                   media_ports=200)


async def run_step(rig: Rig, n_calls: int, hold: float, warmup: float, meeting_base: int,
                   settings: Settings, baseline_ms: float | None) -> dict[str, Any]:
    """Set up ``n_calls`` calls (two per meeting), hold them, measure, hang up."""
    loop = asyncio.get_running_loop()
    pids = rig.pids
    rss_idle = {k: rss_kib(p) for k, p in pids.items()}
    pool = SourcePool()
    gate = asyncio.Semaphore(settings.setup_concurrency)

    async def one(meeting: int, tone: float) -> Caller:
        async with gate:
            return await place_call(pool, rig.gateway.sip_uri(str(meeting)), tone_hz=tone,
                                    timeout=settings.setup_timeout)

    t_setup = loop.time()
    jobs = [one(meeting_base + i // 2, TONES[i % 2]) for i in range(n_calls)]
    callers: list[Caller] = list(await asyncio.gather(*jobs))
    setup_elapsed = loop.time() - t_setup
    try:
        await asyncio.sleep(warmup)
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        own0 = time.process_time()
        t0 = loop.time()
        await asyncio.sleep(hold)
        t1 = loop.time()
        cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
        own = time.process_time() - own0
        rss_hold = {k: rss_kib(p) for k, p in pids.items()}
    finally:
        dropped = sum(1 for c in callers if c.call is not None and c.call.ended.done())
        bye_errors = await hang_up_all(callers, pool)
    audio = pairs_figures([(a.audio, b.audio) for a, b in zip(callers[0::2], callers[1::2], strict=False)
                           if a.call is not None and b.call is not None], (t0, t1))
    window = t1 - t0
    p99 = audio["latency_p99_ms"]
    step: dict[str, Any] = {
        **setup_figures(callers, dropped=dropped, bye_errors=bye_errors, setup_elapsed=setup_elapsed,
                        window=window),
        **audio,
        "p99_above_idle_ms": (p99 - baseline_ms) if p99 is not None and baseline_ms is not None else None,
        **load_figures(cpu0=cpu0, cpu1=cpu1, own_cpu_s=own, window=window, n_calls=n_calls,
                       rss_hold=rss_hold, rss_idle=rss_idle),
    }
    step["why_failed"] = _failures(step, settings)
    step["passed"] = not step["why_failed"]
    return step


def _failures(step: dict[str, Any], settings: Settings) -> list[str]:
    why = setup_failures(step)
    if step["loss_pct"] >= 100 * settings.loss_bound:
        why.append(f"packet loss {step['loss_pct']}%")
    if step["burst_miss_pct"] >= 100 * settings.loss_bound:
        why.append(f"{step['burst_miss_pct']}% of tone bursts not heard")
    if step["latency_p99_ms"] is None:
        why.append("no latency measured")
    elif step["added_p99_ms"] is not None and step["added_p99_ms"] >= settings.added_p99_bound_ms:
        why.append(f"p99 added latency {step['added_p99_ms']:.1f} ms")
    return why


def _describe(step: dict[str, Any]) -> str:
    return (f"loss {step['loss_pct']}%, bursts missed {step['burst_miss_pct']}%, "
            f"latency p50/p99 {step['latency_p50_ms']}/{step['latency_p99_ms']} ms, "
            f"CPU/call gw {step['cpu_pct_per_call']['gateway']}% core {step['cpu_pct_per_call']['core']}%")


async def ramp(rig: Rig, settings: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    """One repetition: calibration, then the ramp until a step fails."""
    calib = await run_step(rig, 2, settings.calibrate_hold, settings.warmup, 100000, settings, None)
    baseline = calib["latency_p50_ms"]
    log(f"  calibration (2 calls): latency p50 {baseline} ms, p99 {calib['latency_p99_ms']} ms"
        + ("" if calib["passed"] else f"; FAILED: {calib['why_failed']}"))
    rep: dict[str, Any] = {"calibration": calib, "baseline_latency_ms": baseline, "steps": [],
                           "max_calls": 0, "at_ceiling": False}
    if baseline is not None:
        await ramp_calls(
            rep, start=settings.start_calls, factor=settings.factor, top=min(settings.max_calls, rig.max_calls),
            meeting_base=200000, log=log, alive=rig.alive, describe=_describe,
            step=lambda n, base: run_step(rig, n, settings.hold, settings.warmup, base, settings, baseline))
    return rep


FIGURES: dict[str, Callable[[dict[str, Any]], float | None]] = {
    "loss_pct": lambda s: s["loss_pct"],
    "latency_p50_ms": lambda s: s["latency_p50_ms"],
    "latency_p99_ms": lambda s: s["latency_p99_ms"],
    "added_p99_ms": lambda s: s["added_p99_ms"],
    "cpu_pct_per_call_gateway": lambda s: s["cpu_pct_per_call"]["gateway"],
    "cpu_pct_per_call_core": lambda s: s["cpu_pct_per_call"]["core"],
    "rss_mib_per_call_gateway": lambda s: s["rss_kib_per_call"]["gateway"] / 1024,
    "rss_mib_per_call_core": lambda s: s["rss_kib_per_call"]["core"] / 1024,
}


def aggregate(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """Median [min-max] over repetitions of the largest N held and the figures at it."""
    agg = aggregate_at_max(reps, FIGURES)
    agg["baseline_latency_ms"] = spread([r["baseline_latency_ms"] for r in reps
                                          if r["baseline_latency_ms"] is not None])
    return agg


def run(settings: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """``settings.repeat`` repetitions, each on a fresh core and gateway."""
    from bench.media import machine

    result: dict[str, Any] = {"benchmark": "calls", "machine": machine(), "settings": asdict(settings),
                              "path": path_label(settings.passthrough), "note": PATH_NOTE, "reps": []}
    return run_repetitions(result, settings, ramp, aggregate, log, label="calls")


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def table(result: dict[str, Any]) -> str:
    """The figures as a Markdown table, with what limited each repetition."""
    s = result["settings"]
    held = cell(result["max_calls"], 0)
    if result.get("at_ceiling"):
        held = ">= " + held + " (ramp ceiling)"
    rows = [
        (f"| path | max calls held {s['hold']:g} s (<{100 * s['loss_bound']:g}% loss, p99 added < "
        f"{s['added_p99_bound_ms']:g} ms) | loss % | latency p50 / p99 ms | p99 added ms "
        "| CPU % of a core per call: gateway / core | RSS MiB per call: gateway / core |"),
        "| --- | --- | --- | --- | --- | --- | --- |",
        (f"| {result['path']} | {held} | {cell(result['loss_pct'], 3)} "
        f"| {cell(result['latency_p50_ms'], 0)} / {cell(result['latency_p99_ms'], 0)} "
        f"| {cell(result['added_p99_ms'])} "
        f"| {cell(result['cpu_pct_per_call_gateway'], 2)} / {cell(result['cpu_pct_per_call_core'], 2)} "
        f"| {cell(result['rss_mib_per_call_gateway'], 2)} / {cell(result['rss_mib_per_call_core'], 2)} |"),
    ]
    m = result["machine"]
    head = (f"calls: two-way G.711 calls, two per meeting, core in its own process; "
            f"median [min-max] of {s['repeat']} run(s); idle path latency "
            f"{cell(result['baseline_latency_ms'], 0)} ms\n"
            + machine_line(m))
    steps = ["", ("| run | calls | loss % | bursts missed % | latency p50 / p99 ms | added p99 ms "
             "| per-call floor ms | CPU %/call gw / core | callers CPU % | load | result |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for i, rep in enumerate(result["reps"]):
        for st in [rep["calibration"], *rep["steps"]]:
            steps.append(
                f"| {i + 1} | {st['calls']}{' (calibration)' if st is rep['calibration'] else ''} "
                f"| {st['loss_pct']} | {st['burst_miss_pct']} | {_ms(st['latency_p50_ms'])} / "
                f"{_ms(st['latency_p99_ms'])} | {_ms(st['added_p99_ms'])} | {_ms(st['call_floor_ms_min'])}-"
                f"{_ms(st['call_floor_ms_max'])} | {st['cpu_pct_per_call']['gateway']} / "
                f"{st['cpu_pct_per_call']['core']} | {st['callers_cpu_pct']} | {st['loadavg']:.1f} "
                f"| {'ok' if st['passed'] else 'failed'} |")
    notes = [f"- {PATH_NOTE}"]
    for i, rep in enumerate(result["reps"]):
        failed = next((st for st in rep["steps"] if not st["passed"]), None)
        if failed:
            notes.append(f"- run {i + 1}: {failed['calls']} calls failed: {'; '.join(failed['why_failed'])}")
        elif rep["at_ceiling"]:
            notes.append(f"- run {i + 1}: stopped at the ramp ceiling ({s['max_calls']} calls or the media range)")
        if not rep["calibration"]["passed"]:
            notes.append(f"- run {i + 1}: calibration failed: {'; '.join(rep['calibration']['why_failed'])}")
    return head + "\n".join(rows + steps) + "\n" + "\n".join(notes)


def settings_from(quick: bool, repeat: int | None, hold: float | None = None,
                  max_calls: int | None = None, start_calls: int | None = None,
                  passthrough: bool = False) -> Settings:
    """Settings for the command line: defaults or quick, with overrides."""
    settings = Settings.quick() if quick else Settings()
    overrides: dict[str, Any] = {}
    if repeat is not None:
        overrides["repeat"] = repeat
    if hold is not None:
        overrides["hold"] = hold
    if max_calls is not None:
        overrides["max_calls"] = max_calls
        overrides["media_ports"] = max(settings.media_ports, 2 * max_calls + 20)
    if start_calls is not None:
        overrides["start_calls"] = start_calls
    return replace(settings, passthrough=passthrough, **overrides)
