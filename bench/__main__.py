"""``python -m bench [media|micro] [--quick] [--repeat N] [--json FILE] [--chart FILE.png] [--systems a,b]``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys

from bench import media


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="roomgate benchmarks (issue 6)")
    parser.add_argument("which", nargs="?", default="media", choices=("media", "micro"),
                        help="media: the media fast path against rtpengine (default); "
                             "micro: each step of the per-packet Python path timed alone")
    parser.add_argument("--quick", action="store_true", help="a few seconds at a tiny load (smoke test)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    parser.add_argument("--chart", metavar="FILE.png", help="PNG of loss and latency against load (matplotlib)")
    parser.add_argument("--systems", default=",".join(media.DEFAULT_SYSTEMS),
                        help="comma-separated, from: " + ", ".join(media.SYSTEMS))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: children stop
    if args.which == "micro":
        from bench import micro

        figures = micro.measure(2_000 if args.quick else 20_000)
        print(micro.table(figures))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"benchmark": "micro", "machine": media.machine(), "us_per_packet": figures}, f, indent=1)
        return 0
    settings = media.Settings.quick() if args.quick else media.Settings()
    if args.repeat is not None:
        settings = dataclasses.replace(settings, repeat=args.repeat)
    systems = [s for s in args.systems.split(",") if s]
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


if __name__ == "__main__":
    sys.exit(main())
