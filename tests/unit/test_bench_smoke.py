"""The media fast path benchmark at a tiny load, so it never rots (issue 6).

Runs ``python -m bench --quick`` on the Python relays only: rtpengine is a bench
package (``make bench-packages``) that ``make test`` does not install. Asserts that
the figures exist and are sane, never how fast anything is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "media", "--quick", "--systems", "py-asyncio,bridge-asyncio,bridge-fastpath-uvloop,loopback",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.parametrize("system", ["py-asyncio", "bridge-asyncio", "bridge-fastpath-uvloop"])
def test_every_packet_is_relayed_and_decrypts(quick_result: tuple[dict, str], system: str) -> None:
    result, _ = quick_result
    rep = result["systems"][system]["reps"][0]
    at = rep["at_cpu_rate"]
    assert at["sent"] > 0
    assert at["received"] == at["sent"]  # a tiny load on loopback loses nothing
    assert at["decrypt_errors"] == 0 and rep["decrypt_errors"] == 0
    assert at["duplicates"] == 0
    assert rep["cpu_us_per_packet"] is not None and rep["cpu_us_per_packet"] >= 0
    assert rep["max_rate_pps"] and rep["max_rate_pps"] > 0
    assert rep["latency_p50_us"] > 0 and rep["latency_p99_us"] >= rep["latency_p50_us"]


def test_loopback_baseline_and_report(quick_result: tuple[dict, str]) -> None:
    result, table = quick_result
    rep = result["systems"]["loopback"]["reps"][0]
    assert rep["at_cpu_rate"]["received"] == rep["at_cpu_rate"]["sent"] > 0
    assert rep["latency_p50_us"] > 0
    assert result["machine"]["nproc"] >= 1 and result["machine"]["kernel"]
    assert "| py-asyncio |" in table and "| bridge-asyncio |" in table
    assert "| bridge-fastpath-uvloop |" in table
    assert "the shipped fast path is bridge-fastpath" in table  # each system's note under the table


def test_bencode_round_trip() -> None:
    from bench import bencode

    value = {"command": "offer", "flags": ["trust-address"], "n": 3, "sdp": "v=0\r\n"}
    assert bencode.decode(bencode.encode(value)) == value
    assert bencode.encode({"b": 1, "a": "x"}) == b"d1:a1:x1:bi1ee"
