"""PNG chart of the media benchmark: loss+lateness and added latency p99 against offered load."""

from __future__ import annotations

from typing import Any


def plot(result: dict[str, Any], path: str) -> None:
    """Two panels, one line per system, from every repetition's ramp steps (median per rate)."""
    import statistics

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lat) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, entry in result["systems"].items():
        steps: dict[float, list[dict[str, Any]]] = {}
        for rep in entry.get("reps", []):
            for step in rep.get("ramp", []):
                steps.setdefault(step["target_pps"], []).append(step)
        if not steps:
            continue
        rates = sorted(steps)
        loss = [statistics.median(s["loss_or_late_pct"] for s in steps[r]) for r in rates]
        p99 = [statistics.median(s["latency_p99_us"] or 0 for s in steps[r]) / 1000 for r in rates]
        ax_loss.plot(rates, loss, marker="o", label=name)
        ax_lat.plot(rates, p99, marker="o", label=name)
    ax_loss.axhline(0.1, color="grey", linestyle="--", linewidth=0.8)
    ax_loss.set_yscale("symlog", linthresh=0.01)
    ax_loss.set_ylim(bottom=0)
    ax_loss.set(xlabel="offered load (packets/s)", ylabel="lost or > 100 ms late (%)",
                title="loss + lateness (dashed: the 0.1% bound)")
    ax_lat.set(xlabel="offered load (packets/s)", ylabel="one-way latency p99 (ms)", yscale="log",
               title="latency p99 (loopback included)")
    ax_loss.legend(fontsize=8)
    m = result["machine"]
    fig.suptitle(f"roomgate media fast path: RTP -> SRTP relays, {m['nproc']} x {m['cpu_model']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
