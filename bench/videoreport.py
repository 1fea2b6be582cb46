"""The video benchmark's table (Markdown) and PNG chart (bench/video.py's result in, text or file out)."""

from __future__ import annotations

from typing import Any

from bench.callchart import _pyplot
from bench.callreport import cell, machine_line
from bench.video import NO_STAMPS


def _v(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _frame_cell(step: dict[str, Any]) -> str:
    if not step["frames_stamped"]:
        return NO_STAMPS
    return f"{_v(step['frame_latency_p50_ms'], 1)} / {_v(step['frame_latency_p99_ms'], 1)}"


def _figures_row(label: str, held: str, f: dict[str, Any], latency: str) -> str:
    """One summary row: the median [min-max] figures of :func:`bench.video.aggregate`."""
    return (f"| {label} | {held} | {cell(f['video_mbps_in_per_call'], 2)} "
            f"| {cell(f['gateway_drop_pct'], 3)} | {cell(f['video_loss_pct'], 3)} | {latency} "
            f"| {cell(f['audio_loss_pct'], 3)} / {cell(f['audio_added_p99_ms'])} "
            f"| {cell(f['cpu_pct_per_call_gateway'], 1)} / {cell(f['cpu_pct_per_call_core'], 1)} "
            f"| {cell(f['rss_mib_per_call_gateway'], 2)} / {cell(f['rss_mib_per_call_core'], 2)} |")


def table(result: dict[str, Any]) -> str:
    """The figures at the largest N held, then every step of every run, then what limited each."""
    s = result["settings"]
    clip = result["clip"]
    held = cell(result["max_calls"], 0)
    if result.get("at_ceiling"):
        held = ">= " + held + " (ramp ceiling)"
    latency = cell(result["frame_latency_p99_ms"]) if result["stamps_survive"] else NO_STAMPS
    first = result["first_step"]
    head = (f"video: H.264 {clip['width']}x{clip['height']} {clip['fps']} fps at {clip['h264_mbps']:.2f} "
            f"Mbit/s each way plus G.711 audio, two room systems per meeting, core in its own process; "
            f"median [min-max] of {s['repeat']} run(s)\n" + machine_line(result["machine"]))
    rows = [
        (f"| path | max video calls held {s['hold']:g} s (<{100 * s['loss_bound']:g}% loss, p99 added < "
         f"{s['added_p99_bound_ms']:g} ms) | video in Mbit/s per call | dropped at the gateway's sockets % | video loss back % "
         "| frame latency p99 ms "
         "| audio loss % / p99 added ms | CPU % of a core per call: gateway / core "
         "| RSS MiB per call: gateway / core |"),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        _figures_row(result["path"], held, result, latency),
        _figures_row(f"(first step: {cell(first['calls'], 0)} calls, passed in {first['passed']} of "
                     f"{len(result['reps'])} runs)", "", first, latency),
        "",
        ("| run | calls | video in Mbit/s/call median (min) | pps/call | video loss back % | frame latency "
         "p50 / p99 ms | sample decoded (pictures / units) | keyframe requests | UDP drops gw / callers | audio loss % | audio added "
         "p99 ms | CPU %/call gw / core | callers CPU % | load | result |"),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, rep in enumerate(result["reps"]):
        for st in rep["steps"]:
            rows.append(
                f"| {i + 1} | {st['calls']} | {st['video_mbps_in_per_call_median']:.2f} "
                f"({st['video_mbps_in_per_call_min']:.2f}) | {st['video_pps_in_per_call']} "
                f"| {st['video_loss_pct']} | {_frame_cell(st)} "
                f"| {st['sample_pictures_decoded']} / {st['sample_units']} | {st['keyframe_requests_in']} "
                f"| {st['gateway_udp_drops']} / {st['callers_udp_drops']} "
                f"| {st['audio']['loss_pct']} | {_v(st['audio']['added_p99_ms'])} "
                f"| {st['cpu_pct_per_call']['gateway']} / {st['cpu_pct_per_call']['core']} "
                f"| {st['callers_cpu_pct']} | {st['loadavg']:.1f} | {'ok' if st['passed'] else 'failed'} |")
    notes = []
    for i, rep in enumerate(result["reps"]):
        failed = next((st for st in rep["steps"] if not st["passed"]), None)
        if failed:
            notes.append(f"- run {i + 1}: {failed['calls']} calls failed: {'; '.join(failed['why_failed'])}")
        elif rep["at_ceiling"]:
            notes.append(f"- run {i + 1}: stopped at the ramp ceiling ({s['max_calls']} calls or the media range)")
        last = rep["steps"][-1] if rep["steps"] else None
        if last is not None:
            threads = "; ".join(f"{proc}: " + ", ".join(f"{name} {pct}%" for name, pct in split.items())
                                for proc, split in last["cpu_pct_by_thread"].items())
            notes.append(f"- run {i + 1}, {last['calls']} calls, busiest threads (% of a core): {threads}")
    return head + "\n".join(rows) + "\n" + "\n".join(notes)


def plot(result: dict[str, Any], path: str) -> None:
    """Loss, latency and video received per call against concurrent video calls, one line per run."""
    plt = _pyplot()
    fig, (ax_loss, ax_lat, ax_rate) = plt.subplots(1, 3, figsize=(15, 4.5))
    for i, rep in enumerate(result["reps"]):
        steps = rep["steps"]
        if not steps:
            continue
        n = [s["calls"] for s in steps]
        ax_loss.plot(n, [s["video_loss_pct"] for s in steps], marker="o", label=f"run {i + 1} video back")
        ax_loss.plot(n, [100 * s["gateway_udp_drops"] / max(1, s["packets_to_gateway"]) for s in steps],
                     marker="s", linestyle="--", label=f"run {i + 1} dropped at the gateway's sockets")
        ax_loss.plot(n, [max(s["audio"]["loss_pct"], s["audio"]["burst_miss_pct"]) for s in steps],
                     marker="x", linestyle=":", label=f"run {i + 1} audio")
        ax_lat.plot(n, [s["audio"]["added_p99_ms"] or 0 for s in steps], marker="x", linestyle=":",
                    label=f"run {i + 1} audio added p99")
        if any(s["frames_stamped"] for s in steps):
            ax_lat.plot(n, [s["frame_added_p99_ms"] or 0 for s in steps], marker="o",
                        label=f"run {i + 1} video frame added p99")
        ax_rate.plot(n, [s["video_mbps_in_per_call_median"] for s in steps], marker="o",
                     label=f"run {i + 1} median")
        ax_rate.plot(n, [s["video_mbps_in_per_call_min"] for s in steps], marker="v", linestyle=":",
                     label=f"run {i + 1} lowest call")
    bound = result["settings"]
    ax_loss.axhline(100 * bound["loss_bound"], color="grey", linestyle="--", linewidth=0.8)
    ax_loss.set_yscale("symlog", linthresh=0.01)
    ax_loss.set_ylim(0, 100)
    ax_loss.set(xlabel="concurrent video calls", ylabel="packets lost (%)", title="loss (dashed: the bound)")
    ax_lat.axhline(bound["added_p99_bound_ms"], color="grey", linestyle="--", linewidth=0.8)
    ax_lat.set(xlabel="concurrent video calls", ylabel="ms",
               title="p99 added latency" + ("" if result["stamps_survive"] else f" (video: {NO_STAMPS})"))
    ax_rate.axhline(result["clip"]["h264_mbps"], color="grey", linestyle="--", linewidth=0.8)
    ax_rate.set(xlabel="concurrent video calls", ylabel="Mbit/s (RTP payload)",
                title="video received per call (dashed: sent)")
    for ax in (ax_loss, ax_lat, ax_rate):
        ax.legend(fontsize=7)
    m = result["machine"]
    fig.suptitle(f"roomgate video: H.264 {result['clip']['width']}x{result['clip']['height']} at "
                 f"{result['clip']['h264_mbps']:.2f} Mbit/s each way, two per meeting; "
                 f"{m['nproc']} x {m['cpu_model']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
