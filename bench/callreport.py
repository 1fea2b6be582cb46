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
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from bench.callrig import Rig, start_rig


class RigSettings(Protocol):
    """The settings every call benchmark has."""

    @property
    def repeat(self) -> int: ...

    @property
    def media_ports(self) -> int: ...

    @property
    def passthrough(self) -> bool: ...




def run_repetitions(result: dict[str, Any], settings: RigSettings,
                    ramp: Callable[[Rig, Any, Callable[[str], None]], Coroutine[Any, Any, dict[str, Any]]],
                    aggregate: Callable[[list[dict[str, Any]]], dict[str, Any]],
                    log: Callable[[str], None], *, label: str) -> dict[str, Any]:
    """``settings.repeat`` runs of ``ramp``, each on a fresh core and gateway; ``result`` gets
    each repetition (with where its logs are) under ``reps``, then ``aggregate`` of them, the
    elapsed time and the machine's load at the end (others' work on it during the run)."""
    t0 = time.monotonic()
    for i in range(settings.repeat):
        log(f"{label}: repetition {i + 1}/{settings.repeat}")
        rig = start_rig(media_ports=settings.media_ports, passthrough=settings.passthrough)
        try:
            rep = asyncio.run(ramp(rig, settings, log))
            rep["logs"] = str(rig.workdir)  # the gateway's and the core's logs of this run
            result["reps"].append(rep)
        finally:
            rig.stop()
    result.update(aggregate(result["reps"]))
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    result["machine"]["loadavg_end"] = os.getloadavg()
    return result


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
