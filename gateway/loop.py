"""One event loop for Twisted signalling and aiortc media, and which loop that is.

Twisted must run on the asyncio loop that aiortc uses, and the asyncio reactor
must be installed before anything imports ``twisted.internet.reactor`` (the
import installs the default epoll reactor as a side effect).  Every entry point
calls :func:`install_reactor` first and hands the returned reactor down; no
module below ``gateway`` imports the global reactor.

Which asyncio loop: ``runtime.event_loop`` in the node configuration.  uvloop
(libuv) moves a relayed packet for about a third of the CPU of asyncio's default
selector loop (docs/performance.md: "the event loop is the main cost"), and
Twisted's ``AsyncioSelectorReactor`` only needs ``add_reader``/``add_writer``,
``call_later`` and ``call_soon_threadsafe``, which uvloop provides.  ``auto``
takes uvloop when it imports and falls back to asyncio's loop with a warning, so
a machine without the wheel still runs; ``uvloop`` insists (a configuration error
when it is missing rather than a silently slower gateway).

One difference code must allow for: uvloop's ``loop.time()`` has millisecond resolution and
is read once per loop iteration (libuv's ``uv_now``), so it does not advance inside a
callback.  Frame clocks and timers at 20 ms are unaffected; anything that measures
sub-millisecond intervals must use ``time.perf_counter()``/``time.monotonic()`` instead.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from typing import Any, Literal, get_args

import structlog

log = structlog.get_logger("gateway.loop")

#: What the configuration may ask for (``runtime.event_loop``).
EventLoopChoice = Literal["auto", "uvloop", "asyncio"]
#: What actually runs.
EventLoopKind = Literal["uvloop", "asyncio"]

EVENT_LOOP_CHOICES: tuple[str, ...] = get_args(EventLoopChoice)


class EventLoopUnavailable(RuntimeError):
    """``runtime.event_loop: uvloop`` was asked for but uvloop cannot be imported."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"event loop uvloop is not available ({reason}); install it "
                         "(pip install 'uvloop>=0.19') or set runtime.event_loop: auto or asyncio")


def uvloop_import_error() -> str | None:
    """Why ``import uvloop`` fails, or None when it imports (a separate function so tests can
    pretend either way)."""
    try:
        importlib.import_module("uvloop")
    except ImportError as exc:
        return str(exc) or type(exc).__name__
    return None


def resolve_event_loop(choice: EventLoopChoice) -> EventLoopKind:
    """The loop ``choice`` means on this machine.

    ``auto`` -> uvloop if it imports, else asyncio (logging ``gateway.loop.uvloop_missing``);
    ``uvloop`` without uvloop -> :class:`EventLoopUnavailable`.
    """
    if choice not in EVENT_LOOP_CHOICES:
        raise ValueError(f"unknown event loop {choice!r}; expected one of {', '.join(EVENT_LOOP_CHOICES)}")
    if choice == "asyncio":
        return "asyncio"
    missing = uvloop_import_error()
    if missing is None:
        return "uvloop"
    if choice == "uvloop":
        raise EventLoopUnavailable(missing)
    log.warning("gateway.loop.uvloop_missing", reason=missing, event_loop="asyncio",
                hint="pip install 'uvloop>=0.19' for about 3x cheaper packet relaying")
    return "asyncio"


def new_event_loop(kind: EventLoopKind) -> asyncio.AbstractEventLoop:
    """A fresh loop of ``kind`` (not installed anywhere)."""
    if kind == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


def loop_kind(loop: asyncio.AbstractEventLoop) -> EventLoopKind:
    """Which kind ``loop`` is (uvloop's class lives in the ``uvloop`` package)."""
    return "uvloop" if type(loop).__module__.split(".")[0] == "uvloop" else "asyncio"


def install_reactor(event_loop: EventLoopChoice = "asyncio") -> Any:
    """Create the loop ``event_loop`` names, install Twisted's asyncio reactor on it, return the reactor.

    The default stays asyncio's own loop for tests and tools that never read a configuration;
    ``roomgate run`` and the benchmark's core process pass ``runtime.event_loop`` (default
    ``auto``).  Logs ``gateway.loop.started`` with ``event_loop=uvloop|asyncio``.

    Idempotent: a second call returns the reactor already installed, on whatever loop it runs
    (which must be the asyncio reactor, or the process was wired wrongly and we say so).
    """
    if "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor
        from twisted.internet.asyncioreactor import AsyncioSelectorReactor

        if not isinstance(reactor, AsyncioSelectorReactor):
            raise RuntimeError(
                "a non-asyncio Twisted reactor was installed before gateway.loop.install_reactor()"
            )
        return reactor
    kind = resolve_event_loop(event_loop)
    from twisted.internet import asyncioreactor

    loop = new_event_loop(kind)
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
    from twisted.internet import reactor

    log.info("gateway.loop.started", event_loop=kind, requested=event_loop)
    return reactor
