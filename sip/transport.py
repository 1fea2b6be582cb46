"""Thin Twisted transports (UDP, TCP, TLS) around the sans-IO :class:`sip.endpoint.SipEndpoint`.

These classes only move bytes, arm one ``callLater`` for the core's next
timer and hand core events to the application's :class:`sip.calls.CallHandler`.
The reactor is passed in (``gateway.loop.install_reactor()`` made it); this
module never imports ``twisted.internet.reactor``.  Every exception from the
core, the socket or the handler is caught and logged here: one bad peer or one
application bug must not stop the loop.

TLS (RFC 3261 26.2, RFC 5630) is TCP framing over Twisted's TLS: :func:`tls_context_factory`
builds the server context from PEM files (TLS 1.2 or newer, optional client certificates
checked against a CA for mutual TLS); :meth:`SipService.listen_tls` listens with it, and calls
that arrive there have ``transport == "tls"``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol

from sip.calls import CallHandler
from sip.endpoint import SipEndpoint
from sip.events import CallDtmf, CallEnded, CallKeyframeRequested, CallOffered
from sip.ratelimit import SipLimits
from sip.timers import TimerValues

log = structlog.get_logger("sip")


class SipDatagramProtocol(DatagramProtocol):
    """UDP: one datagram in, one core call."""

    def __init__(self, service: SipService) -> None:
        self._service = service

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self._service._datagram_received(datagram, addr)


class TlsConfigError(ValueError):
    """The TLS certificate, key or CA file cannot be used (unreadable, not PEM, mismatched)."""


def tls_context_factory(
    cert_file: str | Path,
    key_file: str | Path,
    *,
    ca_file: str | Path | None = None,
    verify_client: bool = False,
) -> Any:
    """A Twisted TLS server context (``twisted.internet.ssl.CertificateOptions``) for SIP over TLS.

    ``cert_file`` may hold the certificate followed by its chain; ``key_file`` its private key.
    TLS 1.2 is the floor (RFC 8996 retired 1.0/1.1; many room systems and PJSIP builds with
    OpenSSL 1.0.2 stop at 1.2, so 1.3 is not required).  With ``verify_client`` a client must
    present a certificate issued by ``ca_file`` (mutual TLS, RFC 5630 3.1); raises
    :class:`TlsConfigError` with the file at fault.
    """
    from OpenSSL import crypto
    from twisted.internet import ssl

    def read(path: str | Path, what: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise TlsConfigError(f"cannot read TLS {what} {path}: {exc.strerror or exc}") from None

    cert_pem, key_pem = read(cert_file, "certificate"), read(key_file, "key")
    try:
        certs = ssl.Certificate.loadPEM(cert_pem)
        key = ssl.KeyPair.load(key_pem, crypto.FILETYPE_PEM)
        chain = [ssl.Certificate.loadPEM(c).original
                 for c in _pem_blocks(cert_pem)[1:]]
    except Exception as exc:  # noqa: BLE001 - pyOpenSSL raises several types for bad PEM
        raise TlsConfigError(f"TLS certificate {cert_file} or key {key_file} is not usable PEM: {exc}") \
            from None
    ca_certs: list[Any] = []
    if ca_file is not None:
        try:
            ca_certs = [ssl.Certificate.loadPEM(c).original for c in _pem_blocks(read(ca_file, "CA file"))]
        except Exception as exc:  # noqa: BLE001
            raise TlsConfigError(f"TLS CA file {ca_file} is not usable PEM: {exc}") from None
        if not ca_certs:
            raise TlsConfigError(f"TLS CA file {ca_file} holds no certificate")
    if verify_client and not ca_certs:
        raise TlsConfigError("verifying client certificates needs a CA file (sip.tls_ca)")
    try:
        options = ssl.CertificateOptions(
            privateKey=key.original, certificate=certs.original, extraCertChain=chain or None,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            verify=verify_client, caCerts=ca_certs if verify_client else None,
            requireCertificate=verify_client,
        )
        options.getContext()  # builds the OpenSSL context now: checks the key matches the certificate
    except Exception as exc:  # noqa: BLE001 - e.g. key does not match the certificate
        raise TlsConfigError(f"TLS certificate {cert_file} and key {key_file} do not fit together: "
                             f"{exc}") from None
    return options


def _pem_blocks(data: bytes) -> list[bytes]:
    marker = b"-----BEGIN CERTIFICATE-----"
    return [marker + part for part in data.split(marker)[1:]]


class SipStreamProtocol(Protocol):
    """TCP or TLS: bytes of one connection in; the core frames them."""

    def __init__(self, service: SipService, connection_id: int, transport: str = "tcp") -> None:
        self._service = service
        self.connection_id = connection_id
        self.transport_name = transport
        self.peer: tuple[str, int] = ("", 0)

    def connectionMade(self) -> None:
        transport: Any = self.transport
        peer = transport.getPeer()
        self.peer = (peer.host, peer.port)
        self._service._connections[self.connection_id] = self

    def dataReceived(self, data: bytes) -> None:
        self._service._stream_received(self.connection_id, data, self.peer, self.transport_name)

    def connectionLost(self, reason: Any = None) -> None:
        self._service._connection_lost(self.connection_id)


class SipStreamFactory(Factory):
    """Makes one :class:`SipStreamProtocol` per accepted TCP (or TLS) connection."""

    def __init__(self, service: SipService, transport: str = "tcp") -> None:
        self._service = service
        self._transport = transport

    def buildProtocol(self, addr: Any) -> SipStreamProtocol:
        return SipStreamProtocol(self._service, next(self._service._connection_ids), self._transport)


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
        limits: SipLimits | None = None,
    ) -> None:
        self._reactor = reactor
        self._handler = handler
        self._clock: Callable[[], float] = clock or reactor.seconds
        self.endpoint = SipEndpoint(clock=self._clock, timer_values=timer_values,
                                    advertised_host=advertised_host)
        self.endpoint.on_output = self._flush
        if limits is not None:  # sip.limits in gateway.yaml; without it the endpoint's defaults
            self.endpoint.apply_limits(limits)
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

    def listen_tls(self, host: str, port: int, context_factory: Any) -> Any:
        """Listen for SIP over TLS (RFC 3261 26.2; 5061 by convention) with ``context_factory``
        (see :func:`tls_context_factory`); returns the listening port."""
        lp = self._reactor.listenSSL(port, SipStreamFactory(self, "tls"), context_factory, interface=host)
        self._ports.append(lp)
        self.endpoint.add_listener("tls", host, lp.getHost().port)
        log.info("sip.listening", transport="tls", port=lp.getHost().port)
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

    def _stream_received(self, connection_id: int, data: bytes, addr: tuple[str, int],
                         transport: str = "tcp") -> None:
        try:
            self.endpoint.receive_stream(connection_id, data, addr, transport, now=self._clock())
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
                elif isinstance(event, CallDtmf) and hasattr(self._handler, "dtmf"):
                    self._handler.dtmf(event.call, event.digit, event.source)
                elif isinstance(event, CallKeyframeRequested) \
                        and hasattr(self._handler, "keyframe_requested"):
                    self._handler.keyframe_requested(event.call)
            except Exception:
                log.exception("sip.handler.error", event=type(event).__name__,
                              call_id=getattr(getattr(event, "call", None), "call_id", None))

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
