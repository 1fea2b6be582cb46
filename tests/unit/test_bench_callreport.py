"""The calls and video benchmarks' shared ramp (``bench.callreport.ramp_calls``), with fake steps:
which numbers of calls it tries, and what it reports as held."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.callreport import ramp_calls


def run_ramp(holds_up_to: int, *, start: int, top: int = 120, factor: float = 2.0,
             alive: bool = True) -> tuple[list[int], dict[str, Any]]:
    """The calls each step was tried with, and the repetition's figures, when every step of
    up to ``holds_up_to`` calls passes."""
    tried: list[int] = []

    async def step(n: int, meeting_base: int) -> dict[str, Any]:
        tried.append(n)
        passed = n <= holds_up_to
        return {"calls": n, "passed": passed, "why_failed": [] if passed else ["p99 added latency"]}

    rep = asyncio.run(ramp_calls({}, start=start, factor=factor, top=top, meeting_base=0, step=step,
                                 describe=lambda result: "", log=lambda line: None,
                                 alive=lambda: alive))
    return tried, rep


def test_it_doubles_until_a_step_fails() -> None:
    tried, rep = run_ramp(50, start=10)
    assert tried == [10, 20, 40, 80]
    assert rep["max_calls"] == 40 and not rep["at_ceiling"]


def test_a_failing_first_step_steps_down_to_what_holds() -> None:
    tried, rep = run_ramp(4, start=10)
    assert tried == [10, 4]  # 10 / 2 = 5, even: 4
    assert rep["max_calls"] == 4
    assert [s["passed"] for s in rep["steps"]] == [False, True]


def test_nothing_held_ends_at_two_calls() -> None:
    tried, rep = run_ramp(0, start=16)
    assert tried == [16, 8, 4, 2]
    assert rep["max_calls"] == 0


def test_the_ceiling_is_reported() -> None:
    tried, rep = run_ramp(1000, start=4, top=16)
    assert tried == [4, 8, 16]
    assert rep["max_calls"] == 16 and rep["at_ceiling"]


def test_odd_steps_are_made_even() -> None:
    tried, _ = run_ramp(1000, start=3, top=20, factor=1.5)
    assert tried == [2, 4, 6, 8, 12, 18]


def test_processes_that_died_end_the_ramp_without_counting_the_step() -> None:
    tried, rep = run_ramp(1000, start=10, alive=False)
    assert tried == [10] and rep["max_calls"] == 0
