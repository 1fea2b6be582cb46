"""Wiring: one gateway process with its SIP listeners, media bridge and (embedded) conference core.

``run(config)`` is what ``roomgate run`` calls. It installs the asyncio reactor
first (Twisted and aiortc share one loop), then starts, in order: ICE address
policy, the conference core and HTTP listener, the port allocator, and the SIP
listeners, and prints where to point a browser and a SIP phone.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import structlog

from gateway.config import GatewayConfig
from gateway.logs import configure_logging
from gateway.loop import install_reactor

log = structlog.get_logger("gateway.app")


class Gateway:
    """A running gateway: listeners, the call controller, and the embedded core if configured."""

    def __init__(self, config: GatewayConfig, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        self._listening: list[Any] = []
        self.core: Any = None
        self.calls: Any = None
        self.sip: Any = None
        self.http_port: int | None = None
        self.sip_ports: dict[str, int] = {}

    async def start(self) -> None:
        from twisted.web.server import Site

        from bridge.ice import use_host_addresses
        from bridge.ports import PortAllocator
        from gateway.calls import CallController
        from gateway.core.conference import ConferenceCore
        from gateway.core.http import build_core_resource
        from gateway.policy import load_policy
        from sip.transport import SipService

        cfg = self.config
        policy = load_policy(cfg.policy)
        use_host_addresses(cfg.ice_addresses)

        # HTTP listener: the embedded core (when no external core is configured) and /healthz.
        self.core = ConferenceCore()
        root = build_core_resource(self.core, reactor=self.reactor)
        http_host, http_port = cfg.http.listen.host, cfg.http.listen.port
        port = self.reactor.listenTCP(http_port, Site(root), interface=http_host)
        self._listening.append(port)
        self.http_port = port.getHost().port
        core_url = cfg.core.url or f"http://{_url_host(http_host)}:{self.http_port}"

        self.calls = CallController(
            reactor=self.reactor,
            policy=policy,
            core_url=core_url.rstrip("/"),
            media_address=cfg.media.address,
            ports=PortAllocator(cfg.media.ports.low, cfg.media.ports.high, address=cfg.media.address),
        )
        self.sip = SipService(self.reactor, self.calls)
        if cfg.sip.udp is not None:
            p = self.sip.listen_udp(cfg.sip.udp.host, cfg.sip.udp.port)
            self._listening.append(p)
            self.sip_ports["udp"] = p.getHost().port
        if cfg.sip.tcp is not None:
            p = self.sip.listen_tcp(cfg.sip.tcp.host, cfg.sip.tcp.port)
            self._listening.append(p)
            self.sip_ports["tcp"] = p.getHost().port

        sip_listener = cfg.sip.udp or cfg.sip.tcp  # config validation guarantees at least one
        assert sip_listener is not None
        sip_host = sip_listener.host
        sip_port = self.sip_ports.get("udp") or self.sip_ports.get("tcp")
        page = f"http://{_url_host(http_host)}:{self.http_port}/m/1000"
        transports = " or ".join(t.upper() for t in self.sip_ports)
        dial = f"sip:1000@{_url_host(sip_host)}:{sip_port}"
        log.info("gateway.ready", sip=self.sip_ports, http=self.http_port, core=core_url,
                 embedded_core=cfg.core.url is None)
        print(f"roomgate is up.\n"
              f"  SIP phone or room system: dial {dial} ({transports})\n"
              f"  Browser:                  open {page}\n"
              f"  Any meeting id works in place of 1000. Ctrl-C stops.", flush=True)

    async def stop(self) -> None:
        log.info("gateway.stopping")
        if self.calls is not None:
            await self.calls.hangup_all()
        for port in self._listening:
            await _maybe_await(port.stopListening())
        if self.sip is not None:
            self.sip.stop()
        if self.core is not None:
            await self.core.close()
        log.info("gateway.stopped")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _maybe_await(result: Any) -> None:
    from twisted.internet.defer import Deferred

    if isinstance(result, Deferred):
        await result.asFuture(asyncio.get_event_loop())


def run(config: GatewayConfig) -> int:
    """Run the gateway until SIGINT/SIGTERM; returns the process exit code."""
    configure_logging(config.log.format, config.log.level)
    reactor = install_reactor()
    from twisted.internet.defer import Deferred

    gateway = Gateway(config, reactor)
    exit_code = 0

    def started_failed(failure: Any) -> None:
        nonlocal exit_code
        exit_code = 1
        log.error("gateway.start_failed", error=failure.getErrorMessage())
        print(f"roomgate: could not start: {failure.getErrorMessage()}", file=sys.stderr)
        reactor.stop()

    def begin() -> None:
        Deferred.fromFuture(asyncio.ensure_future(gateway.start())).addErrback(started_failed)

    def shutdown() -> Deferred:
        return Deferred.fromFuture(asyncio.ensure_future(gateway.stop()))

    reactor.callWhenRunning(begin)
    reactor.addSystemEventTrigger("before", "shutdown", shutdown)
    # SIGTERM (systemd, tests) stops as cleanly as Ctrl-C does.
    reactor.callWhenRunning(lambda: signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop)))
    reactor.run()
    return exit_code
