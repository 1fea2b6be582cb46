"""The conference core alone in a process, for the calls benchmarks: ``python -m bench.core_process``.

The gateway embeds the core (gateway/app.py serves it on its HTTP listener), but its
CPU and memory per call must be told apart from the gateway's, so the benchmarks run
the core here, on its own asyncio reactor, and point the gateway at it with
``core.url``. It is the same ``ConferenceCore`` and HTTP resource the gateway embeds,
started the way the tests start it (tests/support/core_server.py). It prints
``READY <base url>`` on stdout once it listens, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.core_process")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP and ICE address (default 127.0.0.1)")
    parser.add_argument("--log-level", default="info", help="as the gateway's log.level (default info)")
    args = parser.parse_args(argv)

    from gateway.logs import configure_logging
    from tests.support.core_server import loop_and_reactor, start_core_server

    configure_logging("json", args.log_level)  # on stderr: stdout carries only the READY line

    loop, _ = loop_and_reactor()
    server = loop.run_until_complete(start_core_server(host=args.host))
    print(f"READY {server.base_url}", flush=True)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    try:
        loop.run_forever()
    finally:
        loop.run_until_complete(server.stop())
    return 0


if __name__ == "__main__":
    sys.exit(main())
