"""Twisted UDP transport for the sans-IO RAS cores (H.225.0 section 7.7: RAS on UDP, port 1719).

:class:`RasEndpoint` carries either :class:`h323.ras_client.RasClient` or
:class:`h323.gatekeeper.Gatekeeper`: datagrams in, the core's datagrams out, one
``callLater`` for the core's next timer, core events to ``on_event``.  The reactor is passed in;
nothing here imports the global reactor, and no exception from the core or the callback reaches
the reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from twisted.internet.protocol import DatagramProtocol

log = structlog.get_logger("h323.ras_transport")


class RasEndpoint(DatagramProtocol):
    """One RAS UDP socket driving one core (``receive_datagram``, ``handle_timer``,
    ``get_timer``, ``datagrams_to_send``, ``next_event``)."""

    def __init__(self, reactor: Any, core: Any, *, on_event: Callable[[Any], None] | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.reactor = reactor
        self.core = core
        self.on_event = on_event
        self.clock = clock or reactor.seconds
        self._timer: Any = None
        self.port: Any = None

    def listen(self, host: str, port: int) -> Any:
        """Bind ``host:port`` (0: any free port) and return the listening port."""
        self.port = self.reactor.listenUDP(port, self, interface=host)
        log.info("h323.ras.listening", host=host, port=self.port.getHost().port)
        return self.port

    def run(self, action: Callable[[float], None]) -> None:
        """Run a core command (``lambda now: core.admit(..., now)``) and flush its output."""
        try:
            action(self.clock())
        except Exception as exc:
            log.exception("h323.ras.core_error", error=repr(exc))
        self._flush()

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.run(lambda now: self.core.receive_datagram(datagram, (addr[0], addr[1]), now))

    def _flush(self) -> None:
        for data, to in self.core.datagrams_to_send():
            if self.transport is not None:
                try:
                    self.transport.write(data, to)  # type: ignore[call-arg,misc]
                except OSError as exc:
                    log.warning("h323.ras.send_failed", error=str(exc))
        while (event := self.core.next_event()) is not None:
            if self.on_event is not None:
                try:
                    self.on_event(event)
                except Exception as exc:
                    log.exception("h323.ras.handler_error", event=type(event).__name__, error=repr(exc))
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        when = self.core.get_timer()
        if when is not None and self.transport is not None:
            self._timer = self.reactor.callLater(max(0.0, when - self.clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.run(lambda now: self.core.handle_timer(now))

    def stop(self) -> Any:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None
