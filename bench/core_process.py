"""The conference core alone in a process, for the calls benchmarks: ``python -m bench.core_process``.

The gateway embeds the core (gateway/app.py serves it on its HTTP listener), but its
CPU and memory per call must be told apart from the gateway's, so the benchmarks run
the core here, on its own asyncio reactor, and point the gateway at it with
``core.url``. ``--event-loop`` is the gateway's ``runtime.event_loop`` (uvloop by default
when installed, as the embedded core gets from sharing the gateway's loop). It is the same ``ConferenceCore`` and HTTP resource the gateway embeds,
started the way the tests start it (tests/support/core_server.py). It prints
``READY <base url>`` on stdout once it listens, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.core_process")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP and ICE address (default 127.0.0.1)")
    parser.add_argument("--log-level", default="info", help="as the gateway's log.level (default info)")
    parser.add_argument("--event-loop", default="auto", choices=("auto", "uvloop", "asyncio"),
                        help="as the gateway's runtime.event_loop (default auto: uvloop when installed)")
    args = parser.parse_args(argv)

    from gateway.logs import configure_logging
    from gateway.loop import EventLoopUnavailable, install_reactor
    from tests.support.core_server import loop_and_reactor, start_core_server

    configure_logging("json", args.log_level)  # on stderr: stdout carries only the READY line

    try:  # first: loop_and_reactor() below then finds this reactor installed
        install_reactor(args.event_loop)
    except EventLoopUnavailable as exc:
        print(f"python -m bench.core_process: {exc}", file=sys.stderr)
        return 2
    loop, _ = loop_and_reactor()

    async def serve() -> None:
        server = await start_core_server(host=args.host)
        stopping = asyncio.Event()
        # Inside the running loop and before READY: uvloop drops a signal that arrives while its
        # loop is not running (its wakeup fd is set up by run_forever), so handlers added before
        # run_forever() let a SIGTERM sent right after READY go unseen and the process hang.
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
        loop.add_signal_handler(signal.SIGINT, stopping.set)
        print(f"READY {server.base_url}", flush=True)
        try:
            await stopping.wait()
        finally:
            await server.stop()

    loop.run_until_complete(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
