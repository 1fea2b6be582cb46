"""Thin Twisted transports (UDP, TCP) around the sans-IO :class:`sip.endpoint.SipEndpoint`.

These classes only move bytes, arm one ``callLater`` for the core's next
timer and hand core events to the application's :class:`sip.calls.CallHandler`.
The reactor is passed in (``gateway.loop.install_reactor()`` made it); this
module never imports ``twisted.internet.reactor``.  Every exception from the
core, the socket or the handler is caught and logged here: one bad peer or one
application bug must not stop the loop.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import structlog
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol

from sip.calls import CallHandler
from sip.endpoint import SipEndpoint
from sip.events import CallEnded, CallOffered
from sip.timers import TimerValues

log = structlog.get_logger("sip")


class SipDatagramProtocol(DatagramProtocol):
    """UDP: one datagram in, one core call."""

    def __init__(self, service: SipService) -> None:
        self._service = service

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self._service._datagram_received(datagram, addr)


class SipStreamProtocol(Protocol):
    """TCP: bytes of one connection in; the core frames them."""

    def __init__(self, service: SipService, connection_id: int) -> None:
        self._service = service
        self.connection_id = connection_id
        self.peer: tuple[str, int] = ("", 0)

    def connectionMade(self) -> None:
        transport: Any = self.transport
        peer = transport.getPeer()
        self.peer = (peer.host, peer.port)
        self._service._connections[self.connection_id] = self

    def dataReceived(self, data: bytes) -> None:
        self._service._stream_received(self.connection_id, data, self.peer)

    def connectionLost(self, reason: Any = None) -> None:
        self._service._connection_lost(self.connection_id)


class SipStreamFactory(Factory):
    """Makes one :class:`SipStreamProtocol` per accepted TCP connection."""

    def __init__(self, service: SipService) -> None:
        self._service = service

    def buildProtocol(self, addr: Any) -> SipStreamProtocol:
        return SipStreamProtocol(self._service, next(self._service._connection_ids))


class SipService:
    """The gateway's SIP node: one core, its UDP and TCP listeners, and the handler."""

    def __init__(
        self,
        reactor: Any,
        handler: CallHandler,
        *,
        clock: Callable[[], float] | None = None,
        timer_values: TimerValues | None = None,
        advertised_host: str | None = None,
    ) -> None:
        self._reactor = reactor
        self._handler = handler
        self._clock: Callable[[], float] = clock or reactor.seconds
        self.endpoint = SipEndpoint(clock=self._clock, timer_values=timer_values,
                                    advertised_host=advertised_host)
        self.endpoint.on_output = self._flush
        self._udp: SipDatagramProtocol | None = None
        self._ports: list[Any] = []
        self._connections: dict[int, SipStreamProtocol] = {}
        self._connection_ids = itertools.count(1)
        self._timer_call: Any = None
        self._timer_deadline: float | None = None
        self._flushing = False
        self._again = False

    # ------------------------------------------------------------------ listening
    def listen_udp(self, host: str, port: int) -> Any:
        """Listen for SIP over UDP; returns the listening port (``.getHost().port``)."""
        proto = SipDatagramProtocol(self)
        lp = self._reactor.listenUDP(port, proto, interface=host)
        self._udp = proto
        self._ports.append(lp)
        self.endpoint.add_listener("udp", host, lp.getHost().port)
        log.info("sip.listening", transport="udp", port=lp.getHost().port)
        return lp

    def listen_tcp(self, host: str, port: int) -> Any:
        """Listen for SIP over TCP; returns the listening port (``.getHost().port``)."""
        lp = self._reactor.listenTCP(port, SipStreamFactory(self), interface=host)
        self._ports.append(lp)
        self.endpoint.add_listener("tcp", host, lp.getHost().port)
        log.info("sip.listening", transport="tcp", port=lp.getHost().port)
        return lp

    def stop(self) -> defer.Deferred[Any]:
        """Stop listening, drop connections and the timer; fires when the ports are closed."""
        if self._timer_call is not None and self._timer_call.active():
            self._timer_call.cancel()
        self._timer_call = None
        for conn in list(self._connections.values()):
            stream: Any = conn.transport
            if stream is not None:
                stream.loseConnection()
        ports, self._ports = self._ports, []
        return defer.gatherResults(
            [defer.maybeDeferred(p.stopListening) for p in ports], consumeErrors=True
        )

    # ------------------------------------------------------------------ bytes in
    def _datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self.endpoint.receive_datagram(data, addr, "udp", now=self._clock())
        except Exception:
            log.exception("sip.message.dropped", reason="internal error")
        self._flush()

    def _stream_received(self, connection_id: int, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.endpoint.receive_stream(connection_id, data, addr, "tcp", now=self._clock())
        except Exception:
            log.exception("sip.message.dropped", reason="internal error")
        self._flush()

    def _connection_lost(self, connection_id: int) -> None:
        self._connections.pop(connection_id, None)
        try:
            self.endpoint.connection_lost(connection_id)
        except Exception:
            log.exception("sip.transport.error")

    # ------------------------------------------------------------------ bytes and events out
    def _flush(self) -> None:
        """Send what the core queued, hand events to the handler, re-arm the timer."""
        if self._flushing:
            self._again = True  # an action taken inside a handler callback
            return
        self._flushing = True
        try:
            while True:
                self._again = False
                self._send_all()
                self._dispatch_events()
                if not self._again and not self.endpoint.has_pending_output:
                    break
        finally:
            self._flushing = False
        self._schedule()

    def _send_all(self) -> None:
        for item in self.endpoint.datagrams_to_send():
            try:
                if item.transport == "udp":
                    udp: Any = self._udp.transport if self._udp is not None else None
                    if udp is None:
                        raise ConnectionError("no UDP socket")
                    if item.data:
                        udp.write(item.data, item.addr)
                else:
                    conn = self._connections.get(item.connection or -1)
                    stream: Any = conn.transport if conn is not None else None
                    if stream is None:
                        raise ConnectionError("TCP connection is gone")
                    if item.data:
                        stream.write(item.data)
                    if item.close:
                        stream.loseConnection()
            except Exception as exc:  # noqa: BLE001
                log.warning("sip.transport.error", transport=item.transport, error=str(exc))
                if not item.close:
                    self.endpoint.transport_failed(item.connection, item.addr, self._clock())

    def _dispatch_events(self) -> None:
        while (event := self.endpoint.next_event()) is not None:
            try:
                if isinstance(event, CallOffered):
                    self._handler.incoming_call(event.call)
                elif isinstance(event, CallEnded):
                    self._handler.call_ended(event.call, event.reason)
            except Exception:
                log.exception("sip.handler.error", event=type(event).__name__,
                              call_id=event.call.call_id)

    def _schedule(self) -> None:
        deadline = self.endpoint.get_timer()
        if deadline == self._timer_deadline and self._timer_call is not None \
                and self._timer_call.active():
            return
        if self._timer_call is not None and self._timer_call.active():
            self._timer_call.cancel()
        self._timer_call = None
        self._timer_deadline = deadline
        if deadline is not None:
            delay = max(0.0, deadline - self._clock())
            self._timer_call = self._reactor.callLater(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer_call = None
        self._timer_deadline = None
        try:
            self.endpoint.handle_timer(self._clock())
        except Exception:
            log.exception("sip.timer.error")
        self._flush()
