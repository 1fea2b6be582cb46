"""What the calls and call-setup benchmarks share around their ramps: repetitions on fresh
processes, and the median [min-max] figures their tables show.

Each benchmark (bench/calls.py, bench/setup_rate.py) has its own ramp, its own figures and its
own table; running ``repeat`` repetitions each on a fresh core and gateway (bench/callrig.py),
summarising a figure over them and writing it in a table cell are the same for both.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from bench.callmedia import percentile
from bench.callrig import Caller, Rig, start_rig


class RigSettings(Protocol):
    """The settings every call benchmark has."""

    @property
    def repeat(self) -> int: ...

    @property
    def media_ports(self) -> int: ...

    @property
    def passthrough(self) -> bool: ...




Ramp = Callable[[Rig, Any, Callable[[str], None]],
                Coroutine[Any, Any, dict[str, Any] | list[dict[str, Any]]]]


def run_repetitions(result: dict[str, Any], settings: RigSettings, ramp: Ramp,
                    aggregate: Callable[[list[dict[str, Any]]], dict[str, Any]],
                    log: Callable[[str], None], *, label: str, h323: bool = False) -> dict[str, Any]:
    """``settings.repeat`` runs of ``ramp``, each on a fresh core and gateway (with an H.323
    listener when ``h323``); ``result`` gets each repetition (with where its logs are and its
    number as ``run``) under ``reps``, then ``aggregate`` of them, the elapsed time and the
    machine's load at the end (others' work on it during the run). A ramp that measures several
    things on one rig (the call-setup benchmark's protocols) returns a list: one rep each."""
    t0 = time.monotonic()
    for i in range(settings.repeat):
        log(f"{label}: repetition {i + 1}/{settings.repeat}")
        rig = start_rig(media_ports=settings.media_ports, passthrough=settings.passthrough, h323=h323)
        try:
            reps = asyncio.run(ramp(rig, settings, log))
            for rep in reps if isinstance(reps, list) else [reps]:
                rep["logs"] = str(rig.workdir)  # the gateway's and the core's logs of this run
                rep["run"] = i + 1
                result["reps"].append(rep)
        finally:
            rig.stop()
    result.update(aggregate(result["reps"]))
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    result["machine"]["loadavg_end"] = os.getloadavg()
    return result


async def ramp_calls(rep: dict[str, Any], *, start: int, factor: float, top: int, meeting_base: int,
                     step: Callable[[int, int], Awaitable[dict[str, Any]]],
                     describe: Callable[[dict[str, Any]], str], log: Callable[[str], None],
                     alive: Callable[[], bool]) -> dict[str, Any]:
    """The ramp the calls and video benchmarks share: an even number of calls from ``start``
    (meetings of two), x``factor`` (at least +2) per step, until a step fails, the processes
    under test die, or the next step would pass ``top``. When the very first step fails, the
    ramp steps down instead (/``factor``, to 2 at least) until one passes, as the media ramp
    does below 10k pps: "0 held at 10" would hide that 4 or 6 calls hold. ``step(n,
    meeting_base)`` runs one step; each gets fresh meeting ids. Fills ``rep``'s "steps",
    "max_calls" and "at_ceiling"."""
    rep.update(steps=[], max_calls=0, at_ceiling=False)
    n = start
    descending = False
    while True:
        n = max(2, n - n % 2)
        result = await step(n, meeting_base)
        meeting_base += 1000
        rep["steps"].append(result)
        log(f"  {n} calls: {describe(result)}"
            + (" ok" if result["passed"] else f" FAILED: {'; '.join(result['why_failed'])}"))
        if not alive():
            break
        if not result["passed"]:
            if rep["max_calls"] or n <= 2:
                break
            descending = True  # the start already failed: look for what does hold below it
            n = int(n / factor)
            continue
        rep["max_calls"] = n
        if descending:
            break  # the largest passing step below a failed start
        following = max(n + 2, int(n * factor))
        if following > top:
            rep["at_ceiling"] = True
            break
        n = following
    return rep


def step_at_max(rep: dict[str, Any]) -> dict[str, Any] | None:
    """The passing step at the largest number of calls a repetition held."""
    return next((s for s in rep["steps"] if s["calls"] == rep["max_calls"] and s["passed"]), None)


def aggregate_at_max(reps: list[dict[str, Any]],
                     figures: dict[str, Callable[[dict[str, Any]], float | None]]) -> dict[str, Any]:
    """Median [min-max] over repetitions of the largest N held and of ``figures`` at it."""
    agg: dict[str, Any] = {"max_calls": spread([r["max_calls"] for r in reps]),
                           "at_ceiling": any(r["at_ceiling"] for r in reps)}
    at_max = [s for s in (step_at_max(r) for r in reps) if s is not None]
    for name, get in figures.items():
        agg[name] = spread([v for v in (get(s) for s in at_max) if v is not None])
    return agg


def load_figures(*, cpu0: dict[str, float], cpu1: dict[str, float], own_cpu_s: float, window: float,
                 n_calls: int, rss_hold: dict[str, int], rss_idle: dict[str, int]) -> dict[str, Any]:
    """The step keys every call benchmark reports about load: CPU of each process under test
    over the hold (% of one core, per call and in all), its memory per call, and the callers'
    own CPU with the load average (they share the machine: a starved step shows here)."""
    return {
        "cpu_pct_per_call": {k: round(100 * (cpu1[k] - cpu0[k]) / window / n_calls, 3) for k in cpu0},
        "cpu_pct_total": {k: round(100 * (cpu1[k] - cpu0[k]) / window, 1) for k in cpu0},
        "callers_cpu_pct": round(100 * own_cpu_s / window, 1),
        "loadavg": os.getloadavg()[0],
        "rss_kib": rss_hold,
        "rss_kib_per_call": {k: round((rss_hold[k] - rss_idle[k]) / n_calls, 1) for k in cpu0},
    }


def setup_figures(callers: list[Caller], *, dropped: int, bye_errors: list[str], setup_elapsed: float,
                  window: float) -> dict[str, Any]:
    """The figures every step of the calls and video benchmarks gives about placing its calls
    (two per meeting), keeping them and hanging up; :func:`setup_failures` reads them."""
    failures = [c.error for c in callers if c.error]
    setups = [c.setup_s * 1000 for c in callers if c.setup_s is not None]
    return {
        "calls": len(callers), "meetings": len(callers) // 2, "setup_failures": len(failures),
        "setup_errors": sorted(set(failures))[:5], "dropped_during_hold": dropped,
        "bye_errors": len(bye_errors), "setup_elapsed_s": round(setup_elapsed, 2),
        "setup_ms_p50": percentile(setups, 50), "setup_ms_p99": percentile(setups, 99),
        "window_s": round(window, 2),
    }


def setup_failures(step: dict[str, Any]) -> list[str]:
    """Why a step fails before any media figure: calls not set up, or ended by the gateway."""
    why = []
    if step["setup_failures"]:
        why.append(f"{step['setup_failures']} calls not set up ({'; '.join(step['setup_errors'])})")
    if step["dropped_during_hold"]:
        why.append(f"{step['dropped_during_hold']} calls ended by the gateway")
    return why


def spread(values: list[float]) -> dict[str, float] | None:
    """Median, min and max of a figure over the repetitions; None when none measured it."""
    return ({"median": statistics.median(values), "min": min(values), "max": max(values)}
            if values else None)


def cell(v: dict[str, float] | None, digits: int = 1) -> str:
    """A :func:`spread` as a table cell: ``median [min-max]``, the median alone when they agree."""
    if not v:
        return "-"
    if v["min"] == v["max"]:
        return f"{v['median']:.{digits}f}"
    return f"{v['median']:.{digits}f} [{v['min']:.{digits}f}-{v['max']:.{digits}f}]"


def machine_line(m: dict[str, Any]) -> str:
    """The table header's line about the machine (bench.media.machine) the figures come from."""
    return (f"machine: {m['nproc']} x {m['cpu_model']}, Linux {m['kernel']}; "
            + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + "\n")
