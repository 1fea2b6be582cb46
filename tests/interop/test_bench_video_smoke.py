"""The video benchmark at a tiny load, so it never rots (issue 6 part 3).

Runs ``python -m bench video --quick`` (a real core process and gateway process, one step of two
room systems in one meeting, each replaying a small H.264 clip with G.711 audio, a few seconds on
loopback). Asserts that the table has its rows, that every figure is produced, that video flowed
both ways and a sample of it decoded; never how fast anything was (the figures are printed).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.video import NO_STAMPS, PATH

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]


def _finite(*values: Any) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


@pytest.mark.timeout(300)
def test_video_benchmark_quick(tmp_path: Path) -> None:
    out, chart = tmp_path / "video.json", tmp_path / "video.png"
    proc = subprocess.run([sys.executable, "-m", "bench", "video", "--quick", "--json", str(out),
                           "--chart", str(chart)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    table = proc.stdout
    assert f"| {PATH} |" in table and "| 1 | 2 |" in table
    assert chart.stat().st_size > 0
    (step,) = result["reps"][0]["steps"]
    assert step["calls"] == 2 and step["setup_failures"] == 0 and step["dropped_during_hold"] == 0
    # Video flowed both ways: each room system sent its clip and received the other's picture
    # (or what the core's encoder made of it), and a sample of it decoded after a keyframe request.
    assert step["video_packets_sent"] > 0 and step["video_packets_received"] > 0
    assert step["video_mbps_in_per_call_min"] > 0
    assert step["sample_calls_decoded"] >= 1 and step["sample_pictures_decoded"] > 0
    assert step["malformed_in"] == 0
    assert _finite(step["video_loss_pct"], step["video_pps_in_per_call"], step["setup_ms_p50"],
                   step["callers_cpu_pct"], step["loadavg"])
    assert _finite(*step["cpu_pct_per_call"].values(), *step["rss_kib_per_call"].values())
    assert set(step["cpu_pct_per_call"]) == {"gateway", "core"} and all(step["cpu_pct_by_thread"].values())
    audio = step["audio"]
    assert audio["packets_expected"] > 0 and audio["bursts_heard"] > 0
    assert _finite(audio["loss_pct"], audio["latency_p50_ms"], audio["added_p99_ms"])
    # Frame latency: a figure when the stamps came through, the stated reason when they did not.
    if step["frames_stamped"]:
        assert _finite(step["frame_latency_p50_ms"], step["frame_latency_p99_ms"])
    else:
        assert step["frame_latency_p99_ms"] is None and NO_STAMPS in table
    assert result["clip"]["h264_mbps"] > 0 and result["machine"]["versions"]["python"]
