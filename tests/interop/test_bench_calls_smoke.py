"""The calls and call-setup benchmarks at a tiny load, so they never rot (issue 6).

Runs ``python -m bench calls --quick`` and ``python -m bench setup --quick`` (a real core
process and gateway process each, a few calls on loopback; setup with SIP and H.323 callers). Asserts that the tables have
their rows, that every figure is a finite number, and that audio and calls went through
at the tiny load; never how fast anything was (the figures are printed for the record).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import calls

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]


def _run(which: str, tmp: Path, *extra: str) -> tuple[dict[str, Any], str]:
    out = tmp / f"{which}.json"
    proc = subprocess.run([sys.executable, "-m", "bench", which, "--quick", "--json", str(out), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout


def _finite(*values: Any) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("passthrough", [False, True], ids=["transcode", "passthrough"])
def test_calls_benchmark_quick(tmp_path: Path, passthrough: bool) -> None:
    result, table = _run("calls", tmp_path, *(["--passthrough"] if passthrough else []))
    assert "(calibration)" in table and "--passthrough" in table  # the note says which is which
    assert result["path"] == calls.path_label(passthrough) and f"| {result['path']} |" in table
    rep = result["reps"][0]
    calib = rep["calibration"]
    # Two callers in one meeting on an idle loopback: both set up, and each heard the other.
    assert calib["setup_failures"] == 0 and calib["dropped_during_hold"] == 0
    assert calib["packets_expected"] > 0 and calib["bursts_heard"] > 0
    for step in [calib, *rep["steps"]]:
        assert _finite(step["loss_pct"], step["burst_miss_pct"], step["latency_p50_ms"],
                       step["latency_p99_ms"], step["added_p99_ms"], step["setup_ms_p50"])
        assert _finite(*step["cpu_pct_per_call"].values(), *step["rss_kib_per_call"].values())
        assert set(step["cpu_pct_per_call"]) == {"gateway", "core"}
    assert rep["steps"], "the ramp measured no step"
    assert result["machine"]["versions"]["python"]


@pytest.mark.timeout(300)
def test_setup_rate_benchmark_quick(tmp_path: Path) -> None:
    """Both protocols (the default), one ramp each on one gateway: SIP INVITE cycles and H.323
    Setup (Fast Start, tunnelling) -> Connect -> media -> ReleaseComplete cycles."""
    result, table = _run("setup", tmp_path)
    assert "| sip | INVITE -> 200 (WebRTC leg joined)" in table
    assert "| h323 | Setup (Fast Start G.711, H.245 tunnelled) -> Connect (WebRTC leg joined)" in table
    assert [rep["protocol"] for rep in result["reps"]] == ["sip", "h323"]
    assert set(result["protocols"]) == {"sip", "h323"}
    for rep in result["reps"]:
        rates = rep["rates"]
        assert rates and rates[0]["offered_cps"] == 1.0
        first = rates[0]
        assert first["ok"] > 0  # at one call per second on loopback calls go through
        for step in rates:
            assert step["protocol"] == rep["protocol"]
            assert step["ok"] + step["failed"] == step["cycles"] > 0
            assert _finite(step["failure_pct"], step["completed_cps"], step["callers_cpu_ms_per_cycle"],
                           *step["cpu_ms_per_cycle"].values())
            if step["ok"]:
                assert _finite(step["setup_ms_p50"], step["setup_ms_p99"])
        if rep["protocol"] == "h323":  # each cycle ran in a worker thread: how late it started
            assert all(_finite(step["start_lag_ms_p99"]) for step in rates)
        assert f"| {rep['protocol']} | 1 | 1 | {first['ok']} / {first['cycles']} |" in table
