"""PNG charts of the calls and call-setup benchmarks (matplotlib, like bench/chart.py for media)."""

from __future__ import annotations

from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_calls(result: dict[str, Any], path: str) -> None:
    """Loss and latency (p50, p99, added p99) against concurrent calls, one line per run."""
    plt = _pyplot()
    fig, (ax_loss, ax_lat) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, rep in enumerate(result["reps"]):
        steps = rep["steps"]
        if not steps:
            continue
        n = [s["calls"] for s in steps]
        ax_loss.plot(n, [max(s["loss_pct"], s["burst_miss_pct"]) for s in steps], marker="o",
                     label=f"run {i + 1}")
        ax_lat.plot(n, [s["latency_p99_ms"] or 0 for s in steps], marker="o", label=f"run {i + 1} p99")
        ax_lat.plot(n, [s["added_p99_ms"] or 0 for s in steps], marker="x", linestyle=":",
                    label=f"run {i + 1} added p99")
    bound = result["settings"]
    ax_loss.axhline(100 * bound["loss_bound"], color="grey", linestyle="--", linewidth=0.8)
    ax_loss.set_yscale("symlog", linthresh=0.01)
    ax_loss.set(xlabel="concurrent calls", ylabel="packets lost or bursts unheard (%)",
                title="loss (dashed: the bound)")
    ax_lat.axhline(bound["added_p99_bound_ms"], color="grey", linestyle="--", linewidth=0.8)
    ax_lat.set(xlabel="concurrent calls", ylabel="ms", title="mouth-to-ear latency p99 and added p99")
    ax_loss.legend(fontsize=8)
    ax_lat.legend(fontsize=7)
    m = result["machine"]
    fig.suptitle(f"roomgate calls: two-way G.711, two per meeting; {m['nproc']} x {m['cpu_model']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_setup(result: dict[str, Any], path: str) -> None:
    """Failed cycles and setup time p99 against the offered rate, one line per protocol and run."""
    plt = _pyplot()
    fig, (ax_fail, ax_setup) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, rep in enumerate(result["reps"]):
        rates = [s["offered_cps"] for s in rep["rates"]]
        label = f"{rep.get('protocol', 'sip')} run {rep.get('run', i + 1)}"
        ax_fail.plot(rates, [s["failure_pct"] for s in rep["rates"]], marker="o", label=label)
        ax_setup.plot(rates, [s["setup_ms_p99"] or 0 for s in rep["rates"]], marker="o", label=label)
    ax_fail.axhline(100 * result["settings"]["failure_bound"], color="grey", linestyle="--", linewidth=0.8)
    ax_fail.set_yscale("symlog", linthresh=0.1)
    ax_fail.set(xlabel="offered cycles/s", ylabel="failed cycles (%)", title="failures (dashed: the bound)")
    ax_setup.set(xlabel="offered cycles/s", ylabel="INVITE -> 200 / Setup -> Connect p99 (ms)", title="setup time p99")
    ax_fail.legend(fontsize=8)
    m = result["machine"]
    fig.suptitle(f"roomgate call setup with the WebRTC leg joined; {m['nproc']} x {m['cpu_model']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
