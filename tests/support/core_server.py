"""Start the embedded conference core on 127.0.0.1 (an ephemeral port) for tests.

Reusable by any test that needs a real core over HTTP (the bridge's WebRTC leg,
browser tests): it installs the asyncio reactor once, pins ICE to 127.0.0.1,
and serves ``build_core_resource`` with a twisted.web ``Site`` on the running
loop. Drive it with ``asyncio.get_event_loop().run_until_complete(...)``; the
reactor never needs ``run()`` because it is the asyncio loop.

    server = run(start_core_server())
    ...  # POST f"{server.base_url}/whip/<meeting>"
    run(server.stop())
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.loop import install_reactor

T = TypeVar("T")


def loop_and_reactor() -> tuple[asyncio.AbstractEventLoop, Any]:
    """Install (once per process) the asyncio reactor; return the shared loop and the reactor."""
    reactor = install_reactor()
    return reactor._asyncioEventloop, reactor


def run(coro: Coroutine[Any, Any, T], timeout: float | None = 60.0) -> T:
    """Run a coroutine to completion on the shared loop (the tests' bridge from sync to async)."""
    loop, _ = loop_and_reactor()
    if timeout is not None:
        coro = asyncio.wait_for(coro, timeout)  # type: ignore[assignment]
    return loop.run_until_complete(coro)


@dataclass
class CoreServer:
    """A running core: ``base_url`` like ``http://127.0.0.1:PORT`` (no trailing slash)."""

    core: Any  # gateway.core.conference.ConferenceCore
    base_url: str
    port: Any  # twisted IListeningPort

    async def stop(self) -> None:
        """Remove every participant, then stop listening."""
        await self.core.close()
        result = self.port.stopListening()
        if result is not None:
            await result.asFuture(asyncio.get_running_loop())


async def start_core_server(*, host: str = "127.0.0.1", **core_options: Any) -> CoreServer:
    """Serve a fresh ``ConferenceCore(**core_options)`` on ``host`` port 0; ICE on 127.0.0.1 only."""
    _, reactor = loop_and_reactor()
    from twisted.web.server import Site

    from bridge.ice import use_host_addresses
    from gateway.core.conference import ConferenceCore
    from gateway.core.http import build_core_resource

    use_host_addresses([host])
    core = ConferenceCore(**core_options)
    site = Site(build_core_resource(core, reactor=reactor))
    site.noisy = False
    port = reactor.listenTCP(0, site, interface=host)
    return CoreServer(core=core, base_url=f"http://{host}:{port.getHost().port}", port=port)


@asynccontextmanager
async def core_server(**options: Any) -> AsyncIterator[CoreServer]:
    """``async with core_server() as server:`` -- started, and stopped however the block ends."""
    server = await start_core_server(**options)
    try:
        yield server
    finally:
        await server.stop()


def serving_core() -> Iterator[CoreServer]:
    """The body of a module-scoped ``server`` fixture: one core on the shared loop for all of a
    module's tests (``yield from serving_core()``), stopped after the last."""
    loop_and_reactor()
    server = run(start_core_server())
    yield server
    run(server.stop())
