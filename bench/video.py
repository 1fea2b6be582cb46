"""Video benchmark (issue 6 part 3): how many concurrent H.264 video calls one gateway carries.

Each repetition starts a fresh core process and gateway (bench/callrig.py), then ramps like the
calls benchmark (bench/calls.py): N calls, two room systems per meeting so each sees the other,
from ``start_calls`` and x``factor`` per step. Every caller offers G.711 audio (bench/callmedia.py,
tone bursts) and an H.264 video line as room systems do (RTP/AVPF, PLI/FIR feedback), replays one
cached 1.5 Mbit/s clip at 30 fps with an SEI stamp in each access unit, answers keyframe requests
with the cached IDR, and counts what the gateway sends back (bench/videoload.py).

After ``warmup`` the step is held for ``hold`` seconds and measured: video packets and bit rate
received per call, the loss of the gateway's video stream (sequence gaps, RFC 3550 A.1), frame
latency from the SEI stamps when the path forwards access units untouched ("n/a" when the core
re-encodes and the stamps are gone), the audio figures of the calls benchmark, CPU and RSS of the
gateway and core from /proc, and the callers' own CPU and the load average. Half-way through the
hold each caller asks for a keyframe (PLI) and keeps ``sample`` seconds of video, decoded with PyAV
after the step. A step passes with every call set up and none dropped, under ``loss_bound`` of
the packets sent to the gateway dropped by its sockets (kernel receive drops, /proc/net/udp), of
the gateway's video packets, audio packets and tone bursts lost on the way back, and p99 added
latency (audio; video too when stamps came through) under ``added_p99_bound_ms``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from bench.callmedia import pairs_figures, percentile
from bench.callreport import (
    aggregate_at_max,
    load_figures,
    ramp_calls,
    run_repetitions,
    setup_failures,
    setup_figures,
    spread,
)
from bench.callrig import Caller, Rig, SourcePool, hang_up_all, place_call, rss_kib
from bench.rtpload import cpu_seconds
from bench.videoload import ClipSource, Counters, VideoCaller, encode_clip
from bench.videoproc import drops_between, thread_cpu, top_threads, udp_drops
from tests.support.video_room_system import video_offer_lines

TONES = (700.0, 1100.0)
PATH = ("H.264 RTP -> gateway -> core (decode, switch by active speaker, encode) -> gateway -> H.264 RTP; "
        "G.711 audio as the calls benchmark")
#: What the latency column says when no stamp came through: the core re-encoded the video.
NO_STAMPS = "n/a (core re-encodes)"


@dataclass(frozen=True)
class Settings:
    """Ramp, clip, durations and pass bounds of one video benchmark run."""

    start_calls: int = 4
    factor: float = 2.0
    max_calls: int = 120
    hold: float = 60.0
    warmup: float = 4.0
    sample: float = 2.0
    repeat: int = 3
    setup_concurrency: int = 8
    setup_timeout: float = 20.0
    loss_bound: float = 0.001
    added_p99_bound_ms: float = 20.0
    width: int = 1280
    height: int = 720
    fps: int = 30
    bitrate: int = 1_500_000
    clip_seconds: float = 3.0
    media_ports: int = 600
    #: The gateway with ``media.passthrough: auto`` (the G.711 fast path for the audio).
    passthrough: bool = False

    @classmethod
    def quick(cls) -> Settings:
        """One step of two calls for a few seconds, a small clip: the smoke test."""
        return cls(start_calls=2, max_calls=2, hold=4.0, warmup=2.0, sample=1.5, repeat=1,
                   width=640, height=360, clip_seconds=1.0, media_ports=100)


def settings_from(quick: bool, repeat: int | None, hold: float | None = None,
                  max_calls: int | None = None, start_calls: int | None = None,
                  passthrough: bool = False) -> Settings:
    """Settings for the command line: defaults or quick, with overrides."""
    settings = Settings.quick() if quick else Settings()
    overrides: dict[str, Any] = {"passthrough": passthrough}
    if repeat is not None:
        overrides["repeat"] = repeat
    if hold is not None:
        overrides["hold"] = hold
    if max_calls is not None:
        overrides["max_calls"] = max_calls
        overrides["media_ports"] = max(settings.media_ports, 4 * max_calls + 20)  # audio + video pairs
    if start_calls is not None:
        overrides["start_calls"] = start_calls
    return replace(settings, **overrides)


def ceiling(rig: Rig) -> int:
    """Calls the media range holds: an RTP/RTCP pair for audio and one for video each."""
    return (rig.media.high - rig.media.low + 1) // 4 - 2


@dataclass
class VideoCall:
    """One benchmark call: its audio caller (SIP dialog included) and its video sockets."""

    caller: Caller
    video: VideoCaller
    rtcp: tuple[str, int] | None = None


async def _place(pool: SourcePool, uri: str, tone: float, call_id: int, settings: Settings) -> VideoCall:
    """Place one call with an H.264 line; start its video once the gateway answers (INFO
    ``picture_fast_update`` in the dialog is honoured like an RTCP PLI)."""
    clip = encode_clip(settings.width, settings.height, settings.fps, settings.clip_seconds, settings.bitrate)
    holder: list[VideoCaller] = []

    async def video_line(host: str) -> str:
        video = await VideoCaller.bind_clip(host, ClipSource(clip, call_id))
        holder.append(video)
        return "\r\n".join(video_offer_lines(host, video.rtp_port)) + "\r\n"

    caller = await place_call(pool, uri, tone_hz=tone, timeout=settings.setup_timeout, more_media=video_line)
    call = VideoCall(caller, holder[0])
    if caller.call is not None:
        caller.call.on_request = call.video.on_sip_request  # INFO picture_fast_update -> IDR
        media = caller.call.answer_sdp.media
        if len(media) < 2 or media[1].port == 0:
            caller.error = "the gateway refused the video line"
        else:
            host = media[1].connection_address or "127.0.0.1"
            call.video.start((host, media[1].port))
            call.rtcp = (host, media[1].port + 1)
    return call


def _video_figures(calls: list[VideoCall], before: list[Counters], after: list[Counters],
                   window: float) -> dict[str, Any]:
    """Video received over the window, per call and in all: rate, loss, frame latency."""
    rx_bps = [(b.payload_bytes - a.payload_bytes) * 8 / window for a, b in zip(before, after, strict=True)]
    expected = sum(b.expected - a.expected for a, b in zip(before, after, strict=True))
    received = sum(b.received - a.received for a, b in zip(before, after, strict=True))
    packets = sum(b.packets - a.packets for a, b in zip(before, after, strict=True))
    sent = sum(b.packets_sent - a.packets_sent for a, b in zip(before, after, strict=True))
    return {"video_packets_sent": sent, "video_packets_received": packets,
            "video_pps_in_per_call": round(packets / window / len(calls), 1) if calls else 0.0,
            "video_mbps_in_per_call_min": round(min(rx_bps, default=0.0) / 1e6, 3),
            "video_mbps_in_per_call_median": round((percentile(rx_bps, 50) or 0.0) / 1e6, 3),
            "video_packets_expected": expected, "video_packets_lost": max(0, expected - received),
            "video_loss_pct": round(100 * max(0, expected - received) / expected, 4) if expected else 0.0}


def _frame_latency(calls: list[VideoCall], pairs: list[tuple[int, int]], window: tuple[float, float]
                   ) -> dict[str, Any]:
    """Frame latency from the SEI stamps of the peer's access units, when any came through."""
    latencies: list[float] = []
    added: list[float] = []
    foreign = 0
    for a, b in pairs:
        for rx, tx in ((a, b), (b, a)):
            mine = [x.ms for x in calls[rx].video.latencies
                    if window[0] <= x.at < window[1] and x.call_id == tx]
            foreign += sum(1 for x in calls[rx].video.latencies if x.call_id != tx)
            latencies += mine
            if mine:
                added += [x - min(mine) for x in mine]
    return {"frames_stamped": len(latencies), "frames_stamped_foreign": foreign,
            "frame_latency_p50_ms": percentile(latencies, 50),
            "frame_latency_p99_ms": percentile(latencies, 99),
            "frame_added_p99_ms": percentile(added, 99)}


async def run_step(rig: Rig, n_calls: int, meeting_base: int, settings: Settings) -> dict[str, Any]:
    """Set up ``n_calls`` video calls (two per meeting), hold them, measure, hang up."""
    loop = asyncio.get_running_loop()
    pids = rig.pids
    rss_idle = {k: rss_kib(p) for k, p in pids.items()}
    pool = SourcePool()
    gate = asyncio.Semaphore(settings.setup_concurrency)

    async def one(i: int) -> VideoCall:
        async with gate:
            return await _place(pool, rig.gateway.sip_uri(str(meeting_base + i // 2)), TONES[i % 2], i, settings)

    t_setup = loop.time()
    calls: list[VideoCall] = list(await asyncio.gather(*(one(i) for i in range(n_calls))))
    setup_elapsed = loop.time() - t_setup
    try:
        await asyncio.sleep(settings.warmup)
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        threads0 = {k: thread_cpu(p) for k, p in pids.items()}
        own0 = time.process_time()
        gw_ports = range(rig.media.low, rig.media.high + 1)
        drops0 = (udp_drops(gw_ports), udp_drops(not_host="127.0.0.1"))
        before = [c.video.counters() for c in calls]
        audio_sent0 = sum(c.caller.audio.packets_sent for c in calls)
        t0 = loop.time()
        await asyncio.sleep(settings.hold / 2)
        for c in calls:
            if c.rtcp is not None:
                c.video.start_sample(settings.sample, c.rtcp)
        await asyncio.sleep(settings.hold / 2)
        t1 = loop.time()
        after = [c.video.counters() for c in calls]
        audio_sent = sum(c.caller.audio.packets_sent for c in calls) - audio_sent0
        drops1 = (udp_drops(gw_ports), udp_drops(not_host="127.0.0.1"))
        cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
        threads1 = {k: thread_cpu(p) for k, p in pids.items()}
        own = time.process_time() - own0
        rss_hold = {k: rss_kib(p) for k, p in pids.items()}
    finally:
        dropped = sum(1 for c in calls if c.caller.call is not None and c.caller.call.ended.done())
        for c in calls:
            await c.video.stop()
        bye_errors = await hang_up_all([c.caller for c in calls], pool)
    window = t1 - t0
    pairs = [(i, i + 1) for i in range(0, n_calls - 1, 2)
             if calls[i].caller.call is not None and calls[i + 1].caller.call is not None]
    decoded = [c.video.decode_sample() for c in calls]
    step: dict[str, Any] = {
        **setup_figures([c.caller for c in calls], dropped=dropped, bye_errors=bye_errors,
                        setup_elapsed=setup_elapsed, window=window),
        **_video_figures(calls, before, after, window),
        **_frame_latency(calls, pairs, (t0, t1)),
        # Where packets were lost: a full receive buffer at the gateway's media sockets (it did
        # not read fast enough) or at the callers' (the load generator did not).
        "gateway_udp_drops": drops_between(drops0[0], drops1[0]),
        "packets_to_gateway": audio_sent + sum(b.packets_sent - a.packets_sent for a, b in zip(before, after, strict=True)),
        "callers_udp_drops": drops_between(drops0[1], drops1[1]),
        "keyframe_requests_in": sum(len(c.video.keyframe_requests) for c in calls),
        "sample_units": sum(u for u, _ in decoded), "sample_pictures_decoded": sum(d for _, d in decoded),
        "sample_calls_decoded": sum(1 for _, d in decoded if d > 0),
        "malformed_in": sum(c.video.malformed + c.video.sei_malformed for c in calls),
        "audio": pairs_figures([(calls[a].caller.audio, calls[b].caller.audio) for a, b in pairs], (t0, t1)),
        **load_figures(cpu0=cpu0, cpu1=cpu1, own_cpu_s=own, window=window, n_calls=n_calls,
                       rss_hold=rss_hold, rss_idle=rss_idle),
        "cpu_pct_by_thread": {k: top_threads(threads0[k], threads1[k], window) for k in pids},
    }
    step["why_failed"] = failures_of(step, settings)
    step["passed"] = not step["why_failed"]
    return step


def failures_of(step: dict[str, Any], settings: Settings) -> list[str]:
    """Why a step fails the bounds (empty: it passes)."""
    why = setup_failures(step)
    bound = 100 * settings.loss_bound
    audio = step["audio"]
    if not step["video_packets_received"]:
        why.append("no video received")
    if step["packets_to_gateway"] and 100 * step["gateway_udp_drops"] / step["packets_to_gateway"] >= bound:
        why.append(f"the gateway's sockets dropped {step['gateway_udp_drops']} of {step['packets_to_gateway']} "
                   "packets (receive buffer full)")
    if step["video_loss_pct"] >= bound:
        why.append(f"video packet loss {step['video_loss_pct']}%")
    if audio["loss_pct"] >= bound:
        why.append(f"audio packet loss {audio['loss_pct']}%")
    if audio["burst_miss_pct"] >= bound:
        why.append(f"{audio['burst_miss_pct']}% of tone bursts not heard")
    if audio["added_p99_ms"] is None:
        why.append("no audio latency measured")
    elif audio["added_p99_ms"] >= settings.added_p99_bound_ms:
        why.append(f"audio p99 added latency {audio['added_p99_ms']:.1f} ms")
    if step["frame_added_p99_ms"] is not None and step["frame_added_p99_ms"] >= settings.added_p99_bound_ms:
        why.append(f"video frame p99 added latency {step['frame_added_p99_ms']:.1f} ms")
    return why


def _describe(step: dict[str, Any]) -> str:
    return (f"video in {step['video_mbps_in_per_call_median']:.2f} Mbit/s/call "
            f"({step['video_pps_in_per_call']} pps), loss {step['video_loss_pct']}%, frame latency "
            f"p99 {step['frame_latency_p99_ms'] if step['frames_stamped'] else NO_STAMPS}; audio loss "
            f"{step['audio']['loss_pct']}% added p99 {step['audio']['added_p99_ms']} ms; CPU/call gw "
            f"{step['cpu_pct_per_call']['gateway']}% core {step['cpu_pct_per_call']['core']}%; callers "
            f"{step['callers_cpu_pct']}%; UDP drops gw {step['gateway_udp_drops']} callers "
            f"{step['callers_udp_drops']}; load {step['loadavg']:.1f}")


async def ramp(rig: Rig, settings: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    """One repetition: steps from ``start_calls`` until one fails or the ceiling."""
    return await ramp_calls(
        {}, start=max(2, settings.start_calls), factor=settings.factor,
        top=min(settings.max_calls, ceiling(rig)), meeting_base=300000, log=log, alive=rig.alive,
        describe=_describe, step=lambda n, base: run_step(rig, n, base, settings))


FIGURES: dict[str, Callable[[dict[str, Any]], float | None]] = {
    "video_mbps_in_per_call": lambda s: s["video_mbps_in_per_call_median"],
    "video_loss_pct": lambda s: s["video_loss_pct"],
    "gateway_drop_pct": lambda s: 100 * s["gateway_udp_drops"] / max(1, s["packets_to_gateway"]),
    "frame_latency_p99_ms": lambda s: s["frame_latency_p99_ms"],
    "audio_loss_pct": lambda s: s["audio"]["loss_pct"],
    "audio_added_p99_ms": lambda s: s["audio"]["added_p99_ms"],
    "cpu_pct_per_call_gateway": lambda s: s["cpu_pct_per_call"]["gateway"],
    "cpu_pct_per_call_core": lambda s: s["cpu_pct_per_call"]["core"],
    "rss_mib_per_call_gateway": lambda s: s["rss_kib_per_call"]["gateway"] / 1024,
    "rss_mib_per_call_core": lambda s: s["rss_kib_per_call"]["core"] / 1024,
}


def aggregate(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """Median [min-max] over repetitions of the largest N held and the figures at it."""
    agg = aggregate_at_max(reps, FIGURES)
    # The figures at each run's first step too: the one row that says something when no step passed.
    first = [r["steps"][0] for r in reps if r["steps"]]
    agg["first_step"] = {"calls": spread([s["calls"] for s in first]),
                         "passed": sum(1 for s in first if s["passed"]),
                         **{name: spread([v for v in (get(s) for s in first) if v is not None])
                            for name, get in FIGURES.items()}}
    agg["stamps_survive"] = any(s["frames_stamped"] for r in reps for s in r["steps"])
    return agg


def run(settings: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """``settings.repeat`` repetitions, each on a fresh core and gateway."""
    from bench.media import machine

    clip = encode_clip(settings.width, settings.height, settings.fps, settings.clip_seconds, settings.bitrate)
    result: dict[str, Any] = {
        "benchmark": "video", "machine": machine(), "settings": asdict(settings), "path": PATH,
        "clip": {"frames": len(clip.units), "width": clip.width, "height": clip.height, "fps": clip.fps,
                 "h264_mbps": round(clip.bitrate_bps / 1e6, 3)},
        "reps": []}
    log(f"video: clip {clip.width}x{clip.height} {clip.fps} fps, {len(clip.units)} frames, "
        f"{clip.bitrate_bps / 1e6:.2f} Mbit/s")
    return run_repetitions(result, settings, ramp, aggregate, log, label="video")
