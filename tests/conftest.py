"""Shared fixtures. ``gateway_factory`` runs the real gateway (tests/support/gateway_process.py)."""

import asyncio
import sys
from collections.abc import Iterator

import pytest

from tests.support.gateway_process import gateway_factory  # noqa: F401 - registers the fixture


@pytest.fixture(autouse=True)
def _shared_loop_stays_current() -> Iterator[None]:
    """Keep the process's shared loop (gateway.loop: Twisted's reactor on asyncio) current.

    A test that uses ``asyncio.run`` leaves *no* current loop behind when it ends, and a later
    test that relies on the shared loop (tests/support/core_server.run) would then fail with
    "no current event loop" -- a failure that depends on test order, not on the code. After each
    test, the shared loop (if one was installed) becomes the current loop again.
    """
    yield
    if "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import reactor

    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is not None and not loop.is_closed():
        asyncio.set_event_loop(loop)

