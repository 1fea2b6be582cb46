"""Thin Twisted transports around the sans-IO :class:`h323.call.H323Call`.

- :class:`H323Service` listens for call signalling (H.225.0 section 7.1: TCP, 1720 by default)
  and builds one :class:`H323Connection` per accepted connection.
- When a call needs a separate H.245 connection (H.323 section 8.2.3), the connection listens on
  a fresh port of the same address *before* the call advertises it, accepts exactly one
  connection there, and stops listening.  When the caller names its own H.245 listener, the
  connection connects out there instead (:class:`H245ClientFactory`); whichever H.245
  connection is established first is the call's, and the listener closes.

These classes only move bytes, arm one ``callLater`` for the core's next timer and hand core
events to the application's :class:`H323CallHandler`.  The reactor is passed in; this module
never imports ``twisted.internet.reactor``.  Every exception from the core or the handler is
caught and logged: one bad peer or one application bug must not stop the loop.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol

import structlog
from twisted.internet.protocol import ClientFactory, Factory, Protocol

from h323.call import (
    CallOffered,
    CallReleased,
    ChannelClosed,
    DtmfReceived,
    FastStartOffer,
    FlowControl,
    H245ConnectNeeded,
    H245ListenerNeeded,
    H323Call,
    KeyframeRequested,
    MediaReady,
)

log = structlog.get_logger("h323.transport")

_connection_ids = itertools.count(1)
#: Seconds we try to reach the caller's H.245 listener before offering our own.
H245_CONNECT_TIMEOUT = 5


class H323CallHandler(TypingProtocol):
    """What the application implements (``gateway.h323_calls.H323CallController``)."""

    def incoming_call(self, conn: H323Connection, offer: CallOffered) -> None: ...

    def media_ready(self, conn: H323Connection, media: MediaReady) -> None: ...

    def dtmf(self, conn: H323Connection, event: DtmfReceived) -> None: ...

    def call_released(self, conn: H323Connection, event: CallReleased) -> None: ...

    # Optional (a handler without them only logs the event): ``keyframe_requested(conn,
    # KeyframeRequested)`` for H.245 videoFastUpdatePicture, ``flow_control(conn, FlowControl)``
    # for flowControlCommand and ``channel_closed(conn, ChannelClosed)`` for the caller's
    # CloseLogicalChannel.


def connection_label(peer: tuple[str, int], number: int) -> str:
    """A short log label for a connection that does not reveal the peer's address."""
    return hashlib.blake2s(f"{peer[0]}:{peer[1]}#{number}".encode(), digest_size=5).hexdigest()


class H323Connection:
    """One call-signalling connection and its call: the handle the application drives."""

    def __init__(self, service: H323Service, transport: Any, peer: tuple[str, int]) -> None:
        self.service = service
        self.transport = transport
        self.peer = peer
        self.id = next(_connection_ids)
        self.label = connection_label(peer, self.id)
        self.core = H323Call(peer=peer, label=self.label, display=service.display)
        self._timer: Any = None
        self._dispatching = False
        self._h245_port: Any = None
        self._h245_transport: Any = None
        self._h245_connector: Any = None
        self._closed = False
        #: For the application (e.g. its per-call record).
        self.context: Any = None

    # -- application commands -----------------------------------------------------------------

    def ring(self, *, local_rtp: tuple[str, int] | None = None, fast_start: FastStartOffer | None = None,
             **video: Any) -> None:
        """Alerting; ``video``: the video keywords of :meth:`H323Call.accept`."""
        self._run(lambda now: self.core.ring(now, local_rtp=local_rtp, fast_start=fast_start, **video))

    def accept(self, *, local_rtp: tuple[str, int], fast_start: FastStartOffer | None = None,
               **video: Any) -> None:
        """Connect; ``video``: ``video=``, ``local_video=``, ``fast_start_video=`` of
        :meth:`H323Call.accept` (a call with H.264 video)."""
        self._run(lambda now: self.core.accept(now, local_rtp=local_rtp, fast_start=fast_start, **video))

    def reject(self, reason: str, *, cause: int | None = None, display: str | None = None) -> None:
        self._run(lambda now: self.core.reject(now, reason, cause=cause, display=display))

    def release(self, reason: str = "undefinedReason") -> None:
        self._run(lambda now: self.core.release(now, reason))

    def request_keyframe(self) -> bool:
        """H.245 videoFastUpdatePicture toward the caller (see :meth:`H323Call.request_keyframe`)."""
        sent: list[bool] = []
        self._run(lambda now: sent.append(self.core.request_keyframe(now)))
        return bool(sent and sent[0])

    def send_user_input(self, digit: str, duration_ms: int | None = None) -> str | None:
        """One DTMF key as userInputIndication (see :meth:`H323Call.send_user_input`)."""
        form: list[str | None] = []
        self._run(lambda now: form.append(self.core.send_user_input(now, digit, duration_ms)))
        return form[0] if form else None

    # -- plumbing ----------------------------------------------------------------------------

    def _now(self) -> float:
        return self.service.clock()

    def _run(self, action: Callable[[float], None]) -> None:
        if self._closed and self.core.closed:
            return
        try:
            action(self._now())
        except Exception as exc:
            log.exception("h323.core.error", call=self.label, error=repr(exc))
            self.core.closed = True
        self._flush()

    def data_received(self, data: bytes) -> None:
        self._run(lambda now: self.core.receive_data(data, now))

    def connection_lost(self) -> None:
        self._closed = True
        self._run(lambda now: self.core.connection_lost(now))
        self._close_h245()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.service._forget(self)

    def _flush(self) -> None:
        data = self.core.data_to_send()
        if data and not self._closed:
            self.transport.write(data)
        h245_data = self.core.h245_data_to_send()
        if h245_data and self._h245_transport is not None:
            self._h245_transport.write(h245_data)
        self._dispatch()
        if self.core.closed:
            self._close()
        else:
            self._schedule()

    def _dispatch(self) -> None:
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while (event := self.core.next_event()) is not None:
                self._handle(event)
                data = self.core.data_to_send()
                if data and not self._closed:
                    self.transport.write(data)
                h245_data = self.core.h245_data_to_send()
                if h245_data and self._h245_transport is not None:
                    self._h245_transport.write(h245_data)
        finally:
            self._dispatching = False

    def _handle(self, event: Any) -> None:
        handler = self.service.handler
        try:
            if isinstance(event, H245ListenerNeeded):
                self._listen_h245()
            elif isinstance(event, H245ConnectNeeded):
                self._connect_h245(event.host, event.port)
            elif isinstance(event, CallOffered):
                handler.incoming_call(self, event)
            elif isinstance(event, MediaReady):
                handler.media_ready(self, event)
            elif isinstance(event, DtmfReceived):
                handler.dtmf(self, event)
            elif isinstance(event, KeyframeRequested | FlowControl | ChannelClosed):
                name = {KeyframeRequested: "keyframe_requested", FlowControl: "flow_control",
                        ChannelClosed: "channel_closed"}[type(event)]
                optional = getattr(handler, name, None)
                if optional is not None:
                    optional(self, event)
                else:
                    log.info(f"h323.{name}.unhandled", call=self.label)
            elif isinstance(event, CallReleased):
                handler.call_released(self, event)
        except Exception as exc:
            log.exception("h323.handler.error", call=self.label, event=type(event).__name__, error=repr(exc))
            if not isinstance(event, CallReleased):
                self.core.release(self._now(), "undefinedReason")

    def _schedule(self) -> None:
        when = self.core.get_timer()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if when is not None:
            delay = max(0.0, when - self._now())
            self._timer = self.service.reactor.callLater(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._run(lambda now: self.core.handle_timer(now))

    def _close(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._close_h245()
        if not self._closed:
            self._closed = True
            self.transport.loseConnection()  # after the buffered ReleaseComplete is written

    # -- separate H.245 (H.323 section 8.2.3) --------------------------------------------------

    def _listen_h245(self) -> None:
        if self._h245_port is not None:
            return
        host = self.service.h245_host or self.transport.getHost().host
        try:
            self._h245_port = self.service.reactor.listenTCP(0, H245Factory(self), interface=host)
        except Exception as exc:  # noqa: BLE001 - no listener: the call simply cannot advertise one
            log.error("h323.h245.listen_failed", call=self.label, error=str(exc))
            return
        port = self._h245_port.getHost().port
        log.info("h323.h245.listening", call=self.label, port=port)
        self.core.h245_listening(host, port, self._now())

    def _connect_h245(self, host: str, port: int) -> None:
        if self._h245_connector is not None or self._closed:
            return
        log.info("h323.h245.connecting", call=self.label, port=port)
        try:
            self._h245_connector = self.service.reactor.connectTCP(
                host, port, H245ClientFactory(self), timeout=H245_CONNECT_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - e.g. a malformed address: fall back to listening
            log.warning("h323.h245.connect_failed", call=self.label, error=str(exc))
            self._run(lambda now: self.core.h245_connect_failed(now))

    def _h245_connect_failed(self, reason: str) -> None:
        log.info("h323.h245.connect_failed", call=self.label, error=reason[:200])
        self._run(lambda now: self.core.h245_connect_failed(now))

    def _h245_connected(self, transport: Any) -> bool:
        ok = self.core.h245_connection_made(self._now())
        if ok:
            self._h245_transport = transport
            self._stop_h245_listener()
        self._flush()
        return ok

    def _h245_data(self, data: bytes) -> None:
        self._run(lambda now: self.core.receive_h245_data(data, now))

    def _h245_lost(self, transport: Any) -> None:
        if transport is not self._h245_transport:
            return
        self._h245_transport = None
        self._run(lambda now: self.core.h245_connection_lost(now))

    def _stop_h245_listener(self) -> None:
        port, self._h245_port = self._h245_port, None
        if port is not None:
            port.stopListening()

    def _close_h245(self) -> None:
        self._stop_h245_listener()
        connector, self._h245_connector = self._h245_connector, None
        if connector is not None and getattr(connector, "state", "") == "connecting":
            connector.stopConnecting()
        transport, self._h245_transport = self._h245_transport, None
        if transport is not None:
            transport.loseConnection()


class H323SignallingProtocol(Protocol):
    """TCP call signalling: bytes in and out of one :class:`H323Connection`."""

    def __init__(self, service: H323Service) -> None:
        self._service = service
        self.conn: H323Connection | None = None

    def connectionMade(self) -> None:
        transport: Any = self.transport
        peer = transport.getPeer()
        self.conn = H323Connection(self._service, transport, (peer.host, peer.port))
        self._service._connections[self.conn.id] = self.conn
        log.debug("h323.connection.opened", call=self.conn.label)

    def dataReceived(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.data_received(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self.conn is not None:
            self.conn.connection_lost()


class H323SignallingFactory(Factory):
    def __init__(self, service: H323Service) -> None:
        self._service = service

    def buildProtocol(self, addr: Any) -> H323SignallingProtocol:
        return H323SignallingProtocol(self._service)


class H245Protocol(Protocol):
    """The separate H.245 connection of one call (TPKT, H.245 over TCP)."""

    def __init__(self, conn: H323Connection) -> None:
        self._conn = conn
        self._accepted = False

    def connectionMade(self) -> None:
        transport: Any = self.transport
        self._accepted = self._conn._h245_connected(transport)
        if not self._accepted:
            log.info("h323.h245.connection_refused", call=self._conn.label)
            transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._accepted:
            self._conn._h245_data(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self._accepted:
            self._conn._h245_lost(self.transport)


class H245Factory(Factory):
    def __init__(self, conn: H323Connection) -> None:
        self._conn = conn

    def buildProtocol(self, addr: Any) -> H245Protocol:
        return H245Protocol(self._conn)


class H245ClientFactory(ClientFactory):
    """Our connection to the caller's H.245 listener (one attempt; a failure falls back to ours)."""

    def __init__(self, conn: H323Connection) -> None:
        self._conn = conn

    def buildProtocol(self, addr: Any) -> H245Protocol:
        return H245Protocol(self._conn)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self._conn._h245_connect_failed(str(getattr(reason, "value", reason)))


class H323Service:
    """Call-signalling listeners and their live connections.

    ``clock`` returns monotonic seconds for the cores (default ``reactor.seconds``);
    ``h245_host`` is the address separate H.245 listeners bind to (default: the address the
    call-signalling connection arrived on, so what we advertise is reachable the same way).
    """

    def __init__(self, reactor: Any, handler: H323CallHandler, *, clock: Callable[[], float] | None = None,
                 h245_host: str | None = None, display: str | None = None) -> None:
        self.reactor = reactor
        self.handler = handler
        self.clock = clock or reactor.seconds
        self.h245_host = h245_host
        self.display = display
        self._connections: dict[int, H323Connection] = {}
        self._ports: list[Any] = []

    def listen(self, host: str, port: int) -> Any:
        """Listen for call signalling on ``host:port`` (port 0: any free port)."""
        p = self.reactor.listenTCP(port, H323SignallingFactory(self), interface=host)
        self._ports.append(p)
        log.info("h323.listening", host=host, port=p.getHost().port)
        return p

    @property
    def connections(self) -> list[H323Connection]:
        return list(self._connections.values())

    def _forget(self, conn: H323Connection) -> None:
        self._connections.pop(conn.id, None)

    def stop(self) -> None:
        """Release every call (ReleaseComplete) and close the connections."""
        for conn in list(self._connections.values()):
            conn.release("undefinedReason")
