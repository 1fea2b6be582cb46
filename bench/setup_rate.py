"""Call-setup benchmark (issue 6): INVITE -> 200 -> ACK -> media -> BYE cycles per second.

Each repetition starts a fresh core process and gateway (bench/callrig.py). At each
offered rate (``start_rate`` cycles per second, then x``factor``) cycles are started on
a fixed schedule for ``duration`` seconds, whatever the earlier ones are doing, as
independent callers would. One cycle is one SIP call into a meeting of its own:

1. INVITE and wait for the 200 (the gateway answers only once the WebRTC leg has joined
   the core: WHIP publish and WHEP subscribe both up, so every 200 includes that join);
2. ACK, then send G.711 for ``media_s`` seconds and require RTP back from the gateway;
3. BYE, and require its 200.

A cycle fails when any step does (a non-2xx or no final response within ``setup_timeout``,
5 s by default, no RTP back, no 200 to the BYE); failures are counted by kind. Without
the timeout an offered rate above capacity would still "pass", its calls answered ever
later as the queue grows; ``completed_cps`` against the offered rate shows it too. A rate passes with fewer than ``failure_bound``
of its cycles failed, and the ramp stops at the first rate that does not.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from bench.callmedia import percentile
from bench.callreport import cell, machine_line, run_repetitions, spread
from bench.callrig import Rig, SourcePool, hang_up, place_call
from bench.rtpload import cpu_seconds


@dataclass(frozen=True)
class Settings:
    """Offered rates, durations and the pass bound of one call-setup run."""

    start_rate: float = 1.0
    factor: float = 2.0
    max_rate: float = 64.0
    duration: float = 20.0
    media_s: float = 1.0
    repeat: int = 3
    #: A cycle whose INVITE is not answered within this many seconds fails (and is CANCELled):
    #: past it a queue is growing, not a rate being sustained.
    setup_timeout: float = 5.0
    failure_bound: float = 0.01
    media_ports: int = 1000
    #: Call setup always measures the default (transcoding) path.
    passthrough: bool = False

    @classmethod
    def quick(cls) -> Settings:
        """Seconds at a tiny rate: the smoke test."""
        return cls(start_rate=1.0, max_rate=2.0, duration=3.0, media_s=0.5, repeat=1, media_ports=200)


async def _cycle(rig: Rig, pool: SourcePool, meeting: str, settings: Settings) -> dict[str, Any]:
    caller = await place_call(pool, rig.gateway.sip_uri(meeting), tone_hz=1000.0,
                              timeout=settings.setup_timeout)
    if caller.call is None:
        await caller.audio.stop()
        return {"ok": False, "failure": f"setup: {caller.error}", "setup_ms": None}
    await asyncio.sleep(settings.media_s)
    got_media = bool(caller.audio.received.arrivals)
    bye_error = await hang_up(caller)
    failure = None if got_media else "no RTP back from the gateway"
    failure = failure or bye_error
    return {"ok": failure is None, "failure": failure,
            "setup_ms": caller.setup_s * 1000 if caller.setup_s is not None else None}


async def run_rate(rig: Rig, rate: float, settings: Settings, meeting_base: int) -> dict[str, Any]:
    """Start ``rate`` cycles per second for ``settings.duration`` seconds; wait for all of them."""
    loop = asyncio.get_running_loop()
    pool = SourcePool()
    pids = rig.pids
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    t0 = loop.time()
    count = max(1, round(rate * settings.duration))
    tasks: list[asyncio.Task[dict[str, Any]]] = []
    for i in range(count):
        await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
        tasks.append(loop.create_task(_cycle(rig, pool, str(meeting_base + i), settings)))
    offered_s = loop.time() - t0
    results = await asyncio.gather(*tasks)
    elapsed = loop.time() - t0
    cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
    await pool.close()
    failures = Counter(r["failure"] for r in results if not r["ok"])
    setups = [r["setup_ms"] for r in results if r["setup_ms"] is not None]
    ok = sum(1 for r in results if r["ok"])
    return {
        "offered_cps": rate, "cycles": count, "ok": ok, "failed": count - ok,
        "failure_pct": round(100 * (count - ok) / count, 3),
        "failures": dict(failures.most_common(5)),
        "achieved_start_cps": round(count / offered_s, 2) if offered_s > 0 else None,
        "completed_cps": round(ok / elapsed, 2),
        "setup_ms_p50": percentile(setups, 50), "setup_ms_p99": percentile(setups, 99),
        "cpu_ms_per_cycle": {k: round(1000 * (cpu1[k] - cpu0[k]) / count, 1) for k in pids},
        "passed": (count - ok) / count < settings.failure_bound,
    }


async def ramp(rig: Rig, settings: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    """One repetition: offered rates up from ``start_rate`` until one fails."""
    rep: dict[str, Any] = {"rates": [], "max_cps": 0.0, "at_ceiling": False}
    rate, meeting_base = settings.start_rate, 300000
    while True:
        step = await run_rate(rig, rate, settings, meeting_base)
        meeting_base += 10000
        rep["rates"].append(step)
        log(f"  {rate:g} cycles/s offered: {step['ok']}/{step['cycles']} ok, setup p50/p99 "
            f"{step['setup_ms_p50']}/{step['setup_ms_p99']} ms"
            + ("" if step["passed"] else f" FAILED: {step['failures']}"))
        if not step["passed"] or not rig.alive():
            break
        rep["max_cps"] = rate
        if rate * settings.factor > settings.max_rate:
            rep["at_ceiling"] = True
            break
        rate *= settings.factor
        await asyncio.sleep(2.0)  # let the gateway finish tearing the last calls down
    return rep


def aggregate(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """Median [min-max] of the highest passing rate and of the figures at it."""
    at_max = [next((s for s in r["rates"] if s["offered_cps"] == r["max_cps"]), None) for r in reps]
    found = [s for s in at_max if s is not None]
    return {
        "max_cps": spread([r["max_cps"] for r in reps]),
        "at_ceiling": any(r["at_ceiling"] for r in reps),
        "setup_ms_p50": spread([s["setup_ms_p50"] for s in found if s["setup_ms_p50"] is not None]),
        "setup_ms_p99": spread([s["setup_ms_p99"] for s in found if s["setup_ms_p99"] is not None]),
        "cpu_ms_per_cycle_gateway": spread([s["cpu_ms_per_cycle"]["gateway"] for s in found]),
        "cpu_ms_per_cycle_core": spread([s["cpu_ms_per_cycle"]["core"] for s in found]),
    }


def run(settings: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """``settings.repeat`` repetitions, each on a fresh core and gateway."""
    from bench.media import machine

    result: dict[str, Any] = {"benchmark": "call-setup", "machine": machine(),
                              "settings": asdict(settings), "reps": []}
    return run_repetitions(result, settings, ramp, aggregate, log, label="call setup")


def table(result: dict[str, Any]) -> str:
    """The figures as a Markdown table, then every offered rate of every run."""
    s = result["settings"]
    best = cell(result["max_cps"], 1)
    if result.get("at_ceiling"):
        best = ">= " + best + " (ramp ceiling)"
    rows = [
        (f"| cycle | max cycles/s, <{100 * s['failure_bound']:g}% failed (200 within "
         f"{s['setup_timeout']:g} s) | setup ms p50 / p99 "
         "| CPU ms per cycle: gateway / core |"),
        "| --- | --- | --- | --- |",
        (f"| INVITE -> 200 (WebRTC leg joined) -> ACK -> {s['media_s']:g} s G.711 -> BYE | {best} "
         f"| {cell(result['setup_ms_p50'], 0)} / {cell(result['setup_ms_p99'], 0)} "
         f"| {cell(result['cpu_ms_per_cycle_gateway'], 0)} / {cell(result['cpu_ms_per_cycle_core'], 0)} |"),
        "",
        "| run | offered cycles/s | ok / cycles | completed cycles/s | setup ms p50 / p99 | failures |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i, rep in enumerate(result["reps"]):
        for st in rep["rates"]:
            why = "; ".join(f"{n} x {k}" for k, n in st["failures"].items()) or "-"
            p50, p99 = st["setup_ms_p50"], st["setup_ms_p99"]
            rows.append(f"| {i + 1} | {st['offered_cps']:g} | {st['ok']} / {st['cycles']} | "
                        f"{st['completed_cps']} | {'-' if p50 is None else round(p50)} / "
                        f"{'-' if p99 is None else round(p99)} | {why} |")
    m = result["machine"]
    head = (f"call setup: {s['duration']:g} s per offered rate, one meeting per cycle, core in its own "
            f"process; median [min-max] of {s['repeat']} run(s)\n"
            + machine_line(m))
    return head + "\n".join(rows)


def settings_from(quick: bool, repeat: int | None, duration: float | None = None,
                  max_rate: float | None = None) -> Settings:
    """Settings for the command line: defaults or quick, with overrides."""
    settings = Settings.quick() if quick else Settings()
    overrides: dict[str, Any] = {}
    if repeat is not None:
        overrides["repeat"] = repeat
    if duration is not None:
        overrides["duration"] = duration
    if max_rate is not None:
        overrides["max_rate"] = max_rate
    return replace(settings, **overrides)
