"""Call-setup benchmark (issue 6): call setups per second, SIP and H.323, WebRTC leg included.

Each repetition starts a fresh core process and gateway (bench/callrig.py). For each protocol
in turn (``protocol``: sip, h323 or both, on the same gateway), at each offered rate
(``start_rate`` cycles per second, then x``factor``) cycles are started on a fixed schedule for
``duration`` seconds, whatever the earlier ones are doing, as independent callers would. The
ramp, its pass bound, the figures and the table are the same for both protocols; only the
cycle differs (:class:`SipCallers` here, :class:`bench.h323_cycle.H323Callers` for H.323: Setup
with Fast Start -> Connect -> media -> ReleaseComplete, see there). One SIP cycle is one call
into a meeting of its own:

1. INVITE and wait for the 200 (the gateway answers only once the WebRTC leg has joined
   the core: WHIP publish and WHEP subscribe both up, so every 200 includes that join);
2. ACK, then send G.711 for ``media_s`` seconds and require RTP back from the gateway;
3. BYE, and require its 200.

A cycle fails when any step does (a non-2xx or no final response within ``setup_timeout``,
5 s by default, no RTP back, no 200 to the BYE); failures are counted by kind. Without
the timeout an offered rate above capacity would still "pass", its calls answered ever
later as the queue grows; ``completed_cps`` against the offered rate shows it too. A rate passes with fewer than ``failure_bound``
of its cycles failed, and the ramp stops at the first rate that does not. CPU per cycle is
read from /proc for the gateway and the core, and from ``time.process_time()`` for this process
(the callers), so a rate the callers could not offer shows as such.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from bench import h323_cycle
from bench.callmedia import percentile
from bench.callreport import cell, machine_line, run_repetitions, spread
from bench.callrig import Rig, SourcePool, hang_up, place_call
from bench.rtpload import cpu_seconds

PROTOCOLS = ("sip", "h323")
#: Each protocol's cycle as the table names it ({media_s} filled in).
CYCLES = {"sip": "INVITE -> 200 (WebRTC leg joined) -> ACK -> {media_s:g} s G.711 -> BYE",
          "h323": h323_cycle.CYCLE}
#: Where each protocol's meetings are numbered from (fresh meetings for every cycle).
MEETING_BASE = {"sip": 300000, "h323": 600000}


@dataclass(frozen=True)
class Settings:
    """Offered rates, durations and the pass bound of one call-setup run."""

    start_rate: float = 1.0
    factor: float = 2.0
    max_rate: float = 64.0
    duration: float = 20.0
    media_s: float = 1.0
    repeat: int = 3
    #: A cycle not answered (200, Connect) within this many seconds fails (SIP CANCELs, H.323
    #: sends ReleaseComplete): past it a queue is growing, not a rate being sustained.
    setup_timeout: float = 5.0
    failure_bound: float = 0.01
    media_ports: int = 1000
    #: Call setup always measures the default (transcoding) path.
    passthrough: bool = False
    #: "sip", "h323" or "both" (one ramp each, SIP first, on the same gateway).
    protocol: str = "both"
    #: Seconds between two offered rates (and two protocols): the gateway tears the last calls down.
    settle_s: float = 2.0

    @property
    def protocols(self) -> tuple[str, ...]:
        return PROTOCOLS if self.protocol == "both" else (self.protocol,)

    @classmethod
    def quick(cls) -> Settings:
        """Seconds at a tiny rate: the smoke test."""
        return cls(start_rate=1.0, max_rate=2.0, duration=3.0, media_s=0.5, repeat=1, media_ports=200)


class Callers(Protocol):
    """One protocol's callers for one offered rate: ``cycle`` runs one whole cycle."""

    protocol: str
    #: How late each cycle started after its scheduled time, where the callers queue cycles
    #: (H.323: worker threads); empty where they start on time (SIP: tasks on this loop).
    start_lags_ms: list[float]

    async def cycle(self, meeting: str) -> dict[str, Any]:
        """``{"ok", "failure" (a kind, or None), "setup_ms" (None when not set up)}``."""
        ...

    async def close(self) -> None: ...


class SipCallers:
    """The SIP side of a call-setup rate: UACs spread over loopback sources (bench/callrig.py)."""

    protocol = "sip"

    def __init__(self, rig: Rig, settings: Settings) -> None:
        self.rig, self.settings, self.pool = rig, settings, SourcePool()
        self.start_lags_ms: list[float] = []

    async def cycle(self, meeting: str) -> dict[str, Any]:
        caller = await place_call(self.pool, self.rig.gateway.sip_uri(meeting), tone_hz=1000.0,
                                  timeout=self.settings.setup_timeout)
        if caller.call is None:
            await caller.audio.stop()
            return {"ok": False, "failure": f"setup: {caller.error}", "setup_ms": None}
        await asyncio.sleep(self.settings.media_s)
        got_media = bool(caller.audio.received.arrivals)
        bye_error = await hang_up(caller)
        failure = None if got_media else "no RTP back from the gateway"
        failure = failure or bye_error
        return {"ok": failure is None, "failure": failure,
                "setup_ms": caller.setup_s * 1000 if caller.setup_s is not None else None}

    async def close(self) -> None:
        await self.pool.close()


def callers_for(protocol: str, rig: Rig, settings: Settings) -> Callers:
    """The callers of ``protocol`` against ``rig`` (which must listen for H.323 for "h323")."""
    if protocol == "sip":
        return SipCallers(rig, settings)
    if protocol == "h323":
        if rig.h323_port is None:
            raise ValueError("the rig has no H.323 listener (start_rig(h323=True))")
        return h323_cycle.H323Callers(rig.h323_port, media_s=settings.media_s,
                                      setup_timeout=settings.setup_timeout)
    raise ValueError(f"protocol {protocol!r}: one of {', '.join(PROTOCOLS)}")


async def run_rate(rig: Rig, callers: Callers, rate: float, settings: Settings,
                   meeting_base: int) -> dict[str, Any]:
    """Start ``rate`` cycles per second for ``settings.duration`` seconds; wait for all of them."""
    loop = asyncio.get_running_loop()
    pids = rig.pids
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    own0 = time.process_time()
    t0 = loop.time()
    count = max(1, round(rate * settings.duration))
    tasks: list[asyncio.Task[dict[str, Any]]] = []
    for i in range(count):
        await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
        tasks.append(loop.create_task(callers.cycle(str(meeting_base + i))))
    offered_s = loop.time() - t0
    results = await asyncio.gather(*tasks)
    elapsed = loop.time() - t0
    cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
    own = time.process_time() - own0
    failures = Counter(r["failure"] for r in results if not r["ok"])
    setups = [r["setup_ms"] for r in results if r["setup_ms"] is not None]
    ok = sum(1 for r in results if r["ok"])
    step = {
        "protocol": callers.protocol,
        "offered_cps": rate, "cycles": count, "ok": ok, "failed": count - ok,
        "failure_pct": round(100 * (count - ok) / count, 3),
        "failures": dict(failures.most_common(5)),
        "achieved_start_cps": round(count / offered_s, 2) if offered_s > 0 else None,
        "completed_cps": round(ok / elapsed, 2),
        "setup_ms_p50": percentile(setups, 50), "setup_ms_p99": percentile(setups, 99),
        "cpu_ms_per_cycle": {k: round(1000 * (cpu1[k] - cpu0[k]) / count, 1) for k in pids},
        "callers_cpu_ms_per_cycle": round(1000 * own / count, 1),
        "passed": (count - ok) / count < settings.failure_bound,
    }
    if callers.start_lags_ms:  # H.323 cycles wait for a worker thread: how late they started
        step["start_lag_ms_p99"] = percentile(callers.start_lags_ms, 99)
    return step


async def ramp_protocol(rig: Rig, protocol: str, settings: Settings,
                        log: Callable[[str], None]) -> dict[str, Any]:
    """One protocol's ramp: offered rates up from ``start_rate`` until one fails."""
    rep: dict[str, Any] = {"protocol": protocol, "rates": [], "max_cps": 0.0, "at_ceiling": False}
    rate, meeting_base = settings.start_rate, MEETING_BASE[protocol]
    while True:
        callers = callers_for(protocol, rig, settings)
        try:
            step = await run_rate(rig, callers, rate, settings, meeting_base)
        finally:
            await callers.close()
        meeting_base += 10000
        rep["rates"].append(step)
        log(f"  {protocol} {rate:g} cycles/s offered: {step['ok']}/{step['cycles']} ok, setup p50/p99 "
            f"{_ms(step['setup_ms_p50'])}/{_ms(step['setup_ms_p99'])} ms, callers "
            f"{step['callers_cpu_ms_per_cycle']} ms CPU/cycle"
            + ("" if step["passed"] else f" FAILED: {step['failures']}"))
        if not step["passed"] or not rig.alive():
            break
        rep["max_cps"] = rate
        if rate * settings.factor > settings.max_rate:
            rep["at_ceiling"] = True
            break
        rate *= settings.factor
        await asyncio.sleep(settings.settle_s)
    return rep


async def ramp(rig: Rig, settings: Settings, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """One repetition: each protocol's ramp in turn on the same gateway, one rep each."""
    reps = []
    for i, protocol in enumerate(settings.protocols):
        if i:
            await asyncio.sleep(settings.settle_s)
        reps.append(await ramp_protocol(rig, protocol, settings, log))
        if not rig.alive():
            break
    return reps


def aggregate_protocol(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """Median [min-max] of one protocol's highest passing rate and of the figures at it."""
    at_max = [next((s for s in r["rates"] if s["offered_cps"] == r["max_cps"]), None) for r in reps]
    found = [s for s in at_max if s is not None]
    return {
        "max_cps": spread([r["max_cps"] for r in reps]),
        "at_ceiling": any(r["at_ceiling"] for r in reps),
        "setup_ms_p50": spread([s["setup_ms_p50"] for s in found if s["setup_ms_p50"] is not None]),
        "setup_ms_p99": spread([s["setup_ms_p99"] for s in found if s["setup_ms_p99"] is not None]),
        "cpu_ms_per_cycle_gateway": spread([s["cpu_ms_per_cycle"]["gateway"] for s in found]),
        "cpu_ms_per_cycle_core": spread([s["cpu_ms_per_cycle"]["core"] for s in found]),
        "callers_cpu_ms_per_cycle": spread([s["callers_cpu_ms_per_cycle"] for s in found]),
    }


def aggregate(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`aggregate_protocol` for each protocol the repetitions measured, under ``protocols``."""
    measured = [p for p in PROTOCOLS if any(r["protocol"] == p for r in reps)]
    return {"protocols": {p: aggregate_protocol([r for r in reps if r["protocol"] == p]) for p in measured}}


def run(settings: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """``settings.repeat`` repetitions, each on a fresh core and gateway."""
    from bench.media import machine

    result: dict[str, Any] = {"benchmark": "call-setup", "machine": machine(),
                              "settings": asdict(settings), "reps": []}
    return run_repetitions(result, settings, ramp, aggregate, log, label="call setup",
                           h323="h323" in settings.protocols)


def _ms(v: float | None) -> str:
    return "-" if v is None else str(round(v))


def table(result: dict[str, Any]) -> str:
    """The figures as a Markdown table (one row per protocol), then every offered rate of every run."""
    s = result["settings"]
    rows = [
        (f"| protocol | cycle | max cycles/s, <{100 * s['failure_bound']:g}% failed (answered within "
         f"{s['setup_timeout']:g} s) | setup ms p50 / p99 | CPU ms per cycle: gateway / core / callers |"),
        "| --- | --- | --- | --- | --- |",
    ]
    for protocol, agg in result["protocols"].items():
        best = cell(agg["max_cps"], 1)
        if agg["at_ceiling"]:
            best = ">= " + best + " (ramp ceiling)"
        rows.append(
            f"| {protocol} | {CYCLES[protocol].format(media_s=s['media_s'])} | {best} "
            f"| {cell(agg['setup_ms_p50'], 0)} / {cell(agg['setup_ms_p99'], 0)} "
            f"| {cell(agg['cpu_ms_per_cycle_gateway'], 0)} / {cell(agg['cpu_ms_per_cycle_core'], 0)} "
            f"/ {cell(agg['callers_cpu_ms_per_cycle'], 0)} |")
    rows += [
        "",
        ("| protocol | run | offered cycles/s | ok / cycles | completed cycles/s | setup ms p50 / p99 "
         "| CPU ms per cycle: gateway / core / callers | failures |"),
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rep in result["reps"]:
        for st in rep["rates"]:
            why = "; ".join(f"{n} x {k}" for k, n in st["failures"].items()) or "-"
            cpu = st["cpu_ms_per_cycle"]
            rows.append(f"| {rep['protocol']} | {rep['run']} | {st['offered_cps']:g} | {st['ok']} / {st['cycles']} "
                        f"| {st['completed_cps']} | {_ms(st['setup_ms_p50'])} / {_ms(st['setup_ms_p99'])} "
                        f"| {cpu['gateway']} / {cpu['core']} / {st['callers_cpu_ms_per_cycle']} | {why} |")
    m = result["machine"]
    head = (f"call setup: {s['duration']:g} s per offered rate, one meeting per cycle, core in its own "
            f"process; median [min-max] of {s['repeat']} run(s); setup = INVITE -> 200 (sip), "
            "Setup -> Connect (h323)\n" + machine_line(m))
    return head + "\n".join(rows)


def settings_from(quick: bool, repeat: int | None, duration: float | None = None,
                  max_rate: float | None = None, protocol: str | None = None) -> Settings:
    """Settings for the command line: defaults or quick, with overrides."""
    settings = Settings.quick() if quick else Settings()
    overrides: dict[str, Any] = {}
    if protocol is not None:
        if protocol not in (*PROTOCOLS, "both"):
            raise ValueError(f"protocol {protocol!r}: one of {', '.join(PROTOCOLS)} or both")
        overrides["protocol"] = protocol
    if repeat is not None:
        overrides["repeat"] = repeat
    if duration is not None:
        overrides["duration"] = duration
    if max_rate is not None:
        overrides["max_rate"] = max_rate
    return replace(settings, **overrides)
