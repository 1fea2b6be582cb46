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


#: Under ``make test`` (pytest-xdist, ``-n 2 --dist loadgroup``) tests marked ``slow`` -- long
#: real-time calls that mostly wait, such as the 200 s session-timer call -- run on the second
#: worker while every other test runs on the first, one at a time as without xdist. Running the
#: rest in parallel too would put timing-sensitive media tests (latency, jitter, flood) on a
#: shared 2-core machine against each other; a mostly idle call beside them costs little.
SLOW_GROUP, SERIAL_GROUP = "slow-alone", "serial"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every test its xdist group (a no-op without xdist: the mark is then never read)."""
    for item in items:
        group = SLOW_GROUP if item.get_closest_marker("slow") is not None else SERIAL_GROUP
        item.add_marker(pytest.mark.xdist_group(group))
