"""WHIP/WHEP signalling toward a conference core: POST an SDP offer, DELETE the resource to leave.

The bridge talks to the core only over HTTP, as any WHIP (RFC 9725) or WHEP
client would, so the embedded core and an external one are interchangeable.
Non-trickle: the offer is complete when posted and the 201 answer is complete.

HTTP goes through Twisted's ``Agent`` on the reactor handed in (the asyncio
reactor, so the Deferreds complete on the loop aiortc runs on); the module never
imports the global reactor.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import structlog
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer  # type: ignore[import-untyped]

log = structlog.get_logger("bridge.whip_client")

#: Seconds allowed for one request/response exchange with the core.
DEFAULT_TIMEOUT = 10.0
#: Largest response body accepted (an SDP answer is a few KiB).
MAX_BODY = 256 * 1024


class CoreError(Exception):
    """Joining or leaving the conference core failed."""


class CoreRefused(CoreError):
    """The core answered with something other than success (e.g. 404 unknown meeting, 503 full)."""

    def __init__(self, status: int, body: str, url: str = "") -> None:
        self.status = status
        self.body = body
        self.url = url
        detail = body.strip().splitlines()[0][:200] if body.strip() else "(empty body)"
        super().__init__(f"conference core refused {url or 'the request'}: HTTP {status}: {detail}")


class CoreUnreachable(CoreError):
    """No HTTP answer from the core (connection refused, timeout, broken response), or media never connected."""


class CoreProtocolError(CoreError):
    """The core answered 201 but not as WHIP/WHEP requires (no Location, no SDP answer)."""


@dataclass(frozen=True)
class WhipResource:
    """A created WHIP/WHEP session: where to DELETE it and the core's SDP answer."""

    location: str
    answer: str

    @property
    def resource_id(self) -> str:
        """The last path segment of the Location: what WHEP's ``exclude=`` names."""
        return urlsplit(self.location).path.rstrip("/").rsplit("/", 1)[-1]


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body that is already in memory (FileBodyProducer would pull in the global cooperator)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _BodyCollector(Protocol):
    """Collects a response body up to ``MAX_BODY`` (``readBody`` has no limit and warns on this transport)."""

    def __init__(self, done: Deferred[bytes]) -> None:
        self._done = done
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_BODY:
            if not self._done.called:
                self._done.errback(CoreProtocolError(f"response body larger than {MAX_BODY} bytes"))
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._done.called:
            return
        if reason is None or reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._parts))
        else:
            self._done.errback(reason)


def _read_body(response: Any) -> Deferred[bytes]:
    done: Deferred[bytes] = Deferred()
    response.deliverBody(_BodyCollector(done))
    return done


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """Connect to an IP-literal core directly; resolve names only for host names.

    Twisted's default (``HostnameEndpoint``) resolves even ``127.0.0.1`` through
    the reactor's thread pool, which only starts with ``reactor.run()``: a core
    given by address (the usual configuration, and every test) needs no resolver.
    """

    def __init__(self, reactor: Any, timeout: float) -> None:
        self._reactor = reactor
        self._timeout = timeout
        self._tls = BrowserLikePolicyForHTTPS()

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii")
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        endpoint: Any
        if literal is None:
            endpoint = HostnameEndpoint(self._reactor, uri.host, uri.port, timeout=self._timeout)
        elif literal.version == 6:
            endpoint = TCP6ClientEndpoint(self._reactor, str(literal), uri.port, timeout=self._timeout)
        else:
            endpoint = TCP4ClientEndpoint(self._reactor, str(literal), uri.port, timeout=self._timeout)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self._tls.creatorForNetloc(uri.host, uri.port), endpoint)
        return endpoint


class WhipClient:
    """Minimal WHIP/WHEP HTTP client on a Twisted reactor."""

    def __init__(self, reactor: Any, *, timeout: float = DEFAULT_TIMEOUT, user_agent: str = "roomgate") -> None:
        self._reactor = reactor
        self._agent = Agent.usingEndpointFactory(reactor, _Endpoints(reactor, timeout))
        self._timeout = timeout
        self._user_agent = user_agent.encode()

    async def _request(self, method: str, url: str, body: bytes | None = None,
                       content_type: str | None = None) -> tuple[int, Headers, bytes]:
        headers = Headers({b"User-Agent": [self._user_agent]})
        if content_type is not None:
            headers.addRawHeader(b"Content-Type", content_type.encode())
        producer = _BytesProducer(body) if body is not None else None

        async def exchange() -> tuple[int, Headers, bytes]:
            d = self._agent.request(method.encode(), url.encode(), headers, producer)
            response = await d.asFuture(asyncio.get_running_loop())
            data = await _read_body(response).asFuture(asyncio.get_running_loop())
            return int(response.code), response.headers, bytes(data)

        try:
            return await asyncio.wait_for(exchange(), self._timeout)
        except TimeoutError:
            raise CoreUnreachable(f"{method} {url}: no answer from the conference core within "
                                  f"{self._timeout:g} s") from None
        except CoreError:
            raise
        except Exception as exc:  # Twisted's ConnectError, ResponseFailed, DNSLookupError, ...
            raise CoreUnreachable(f"{method} {url}: cannot reach the conference core: "
                                  f"{type(exc).__name__}: {exc}") from exc

    async def post_offer(self, url: str, offer_sdp: str) -> WhipResource:
        """POST a complete SDP offer; return the created resource. CoreRefused/CoreUnreachable otherwise."""
        status, headers, body = await self._request("POST", url, offer_sdp.encode(), "application/sdp")
        text = body.decode("utf-8", "replace")
        if status != 201:
            raise CoreRefused(status, text, url)
        locations = headers.getRawHeaders(b"location") or []
        if not locations:
            raise CoreProtocolError(f"POST {url}: 201 without a Location header")
        if not text.startswith("v=0"):
            raise CoreProtocolError(f"POST {url}: 201 without an SDP answer in the body")
        location = urljoin(url, locations[0].decode("ascii", "replace"))
        return WhipResource(location=location, answer=text)

    async def delete(self, location: str) -> int:
        """DELETE a resource (leave); returns the status. Raises CoreUnreachable like any request."""
        status, _, _ = await self._request("DELETE", location)
        return status
