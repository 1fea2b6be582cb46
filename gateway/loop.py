"""One event loop for Twisted signalling and aiortc media.

Twisted must run on the asyncio loop that aiortc uses, and the asyncio reactor
must be installed before anything imports ``twisted.internet.reactor`` (the
import installs the default epoll reactor as a side effect).  Every entry point
calls :func:`install_reactor` first and hands the returned reactor down; no
module below ``gateway`` imports the global reactor.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any


def install_reactor() -> Any:
    """Create the asyncio loop, install Twisted's asyncio reactor on it, return the reactor.

    Idempotent: a second call returns the reactor already installed (which must be
    the asyncio one, or the process was wired wrongly and we say so).
    """
    if "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor
        from twisted.internet.asyncioreactor import AsyncioSelectorReactor

        if not isinstance(reactor, AsyncioSelectorReactor):
            raise RuntimeError(
                "a non-asyncio Twisted reactor was installed before gateway.loop.install_reactor()"
            )
        return reactor
    from twisted.internet import asyncioreactor

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
    from twisted.internet import reactor

    return reactor
