"""``python -m bench [media|micro|calls|setup|video] [--quick] [--repeat N] [--json FILE] [--chart FILE.png] ...``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys

from bench import media


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="roomgate benchmarks (issue 6)")
    parser.add_argument("which", nargs="?", default="media", choices=("media", "micro", "calls", "setup", "video"),
                        help="media: the media fast path against rtpengine (default); "
                             "micro: each step of the per-packet Python path timed alone; "
                             "calls: concurrent two-way SIP calls through gateway and core; "
                             "setup: call setups per second (SIP and H.323), WebRTC leg included; "
                             "video: concurrent H.264 video calls (room systems) through gateway and core")
    parser.add_argument("--quick", action="store_true", help="a few seconds at a tiny load (smoke test)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    parser.add_argument("--chart", metavar="FILE.png", help="PNG of loss and latency against load (matplotlib)")
    parser.add_argument("--systems", default=",".join(media.DEFAULT_SYSTEMS),
                        help="comma-separated, from: " + ", ".join(media.SYSTEMS))
    parser.add_argument("--passthrough", action="store_true",
                        help="media: only " + ", ".join(media.PASSTHROUGH_SYSTEMS) + " (today's receive "
                             "path vs the G.711 fast path, one run); micro: CPU per packet and per call "
                             "of the transcoding path vs the fast path; calls, video: the gateway with media.passthrough: auto")
    parser.add_argument("--event-loop", choices=("auto", "uvloop", "asyncio"),
                        help="calls, setup, video: the gateway's and the core process's runtime.event_loop "
                             "(default auto: uvloop when installed)")
    parser.add_argument("--hold", type=float, help="calls, video: seconds each step is held (default 60)")
    parser.add_argument("--max-calls", type=int, help="calls, video: the ramp's ceiling (default 480; video 120)")
    parser.add_argument("--start-calls", type=int, help="calls, video: the ramp's first step (default 10; video 4)")
    parser.add_argument("--duration", type=float, help="setup: seconds per offered rate (default 20)")
    parser.add_argument("--max-rate", type=float, help="setup: the ramp's ceiling in cycles/s (default 64)")
    parser.add_argument("--protocol", choices=("sip", "h323", "both"),
                        help="setup: SIP (INVITE-200-ACK-media-BYE), H.323 (Setup with Fast Start-Connect-"
                             "media-ReleaseComplete) or both, one ramp each on the same gateway (default both)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: children stop
    if args.event_loop:  # read by bench.callrig.start_rig, under every benchmark that starts a rig
        os.environ["ROOMGATE_BENCH_EVENT_LOOP"] = args.event_loop
    if args.which == "micro":
        from bench import micro

        if args.passthrough:
            figures = micro.measure_paths(500 if args.quick else 5_000)
            print(micro.table(figures))
            print(micro.path_summary(figures))
        else:
            figures = micro.measure(2_000 if args.quick else 20_000)
            print(micro.table(figures))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"benchmark": "micro", "machine": media.machine(), "us_per_packet": figures}, f, indent=1)
        return 0
    if args.which in ("calls", "setup"):
        return _calls_or_setup(args)
    if args.which == "video":
        return _video(args)
    settings = media.Settings.quick() if args.quick else media.Settings()
    if args.repeat is not None:
        settings = dataclasses.replace(settings, repeat=args.repeat)
    systems = list(media.PASSTHROUGH_SYSTEMS) if args.passthrough else [s for s in args.systems.split(",") if s]
    unknown = [s for s in systems if s not in media.SYSTEMS]
    if unknown:
        parser.error(f"unknown systems: {', '.join(unknown)}")
    result = media.run(systems, settings, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(media.table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.chart:
        from bench.chart import plot

        plot(result, args.chart)
    return 0


def _video(args: argparse.Namespace) -> int:
    """The video benchmark (bench/video.py, table and chart in bench/videoreport.py)."""
    from bench import video, videoreport

    result = video.run(video.settings_from(args.quick, args.repeat, args.hold, args.max_calls,
                                           args.start_calls, passthrough=args.passthrough),
                       log=lambda line: print(line, file=sys.stderr, flush=True))
    print(videoreport.table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.chart:
        videoreport.plot(result, args.chart)
    return 0


def _calls_or_setup(args: argparse.Namespace) -> int:
    """The calls and call-setup benchmarks (bench/calls.py, bench/setup_rate.py)."""
    from bench import callchart, calls, setup_rate
    from gateway.logs import configure_logging

    configure_logging(level="warning")  # the callers' own events (h323, sip) to stderr, not the table
    log = lambda line: print(line, file=sys.stderr, flush=True)
    if args.which == "calls":
        result = calls.run(calls.settings_from(args.quick, args.repeat, args.hold, args.max_calls,
                                               args.start_calls, passthrough=args.passthrough), log=log)
        print(calls.table(result))
        plot = callchart.plot_calls
    else:
        result = setup_rate.run(setup_rate.settings_from(args.quick, args.repeat, args.duration,
                                                         args.max_rate, args.protocol), log=log)
        print(setup_rate.table(result))
        plot = callchart.plot_setup
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.chart:
        plot(result, args.chart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
