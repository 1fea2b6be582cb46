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
from gateway.loop import EventLoopUnavailable, install_reactor, loop_kind

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
        self.h323_calls: Any = None
        self.h323_port: int | None = None
        self.h323_ras: Any = None
        self.roster: Any = None
        self.metrics: Any = None
        self.control_port: int | None = None
        self.metrics_port: int | None = None
        self._sip_up = False
        self.policy_reloader: Any = None

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

        from gateway.metrics import Metrics
        from gateway.roster import Roster

        self.roster = Roster()
        self.metrics = Metrics(roster=self.roster, per_meeting=bool(cfg.metrics and cfg.metrics.per_meeting))
        self.calls = CallController(
            roster=self.roster,
            metrics=self.metrics,
            reactor=self.reactor,
            policy=policy,
            core_url=core_url.rstrip("/"),
            media_address=cfg.media.advertised_address,  # SDP c=; the ports bind media.address
            ports=PortAllocator(cfg.media.ports.low, cfg.media.ports.high, address=cfg.media.address),
            # max_participants counts the embedded core's publishers (browsers and legacy legs).
            participant_count=None if cfg.core.url else (
                lambda m: sum(1 for p in self.core.roster(m) if p.kind == "whip")),
        )
        self.calls.passthrough = cfg.media.passthrough
        self.sip = SipService(self.reactor, self.calls, limits=cfg.sip.limits.to_sip())
        if cfg.sip.udp is not None:
            p = self.sip.listen_udp(cfg.sip.udp.host, cfg.sip.udp.port)
            self._listening.append(p)
            self.sip_ports["udp"] = p.getHost().port
        if cfg.sip.tcp is not None:
            p = self.sip.listen_tcp(cfg.sip.tcp.host, cfg.sip.tcp.port)
            self._listening.append(p)
            self.sip_ports["tcp"] = p.getHost().port
        if cfg.sip.tls is not None:  # config validation guarantees tls_cert and tls_key
            from sip.transport import tls_context_factory

            assert cfg.sip.tls_cert is not None and cfg.sip.tls_key is not None
            context = tls_context_factory(cfg.sip.tls_cert, cfg.sip.tls_key, ca_file=cfg.sip.tls_ca,
                                          verify_client=cfg.sip.tls_verify_client)
            p = self.sip.listen_tls(cfg.sip.tls.host, cfg.sip.tls.port, context)
            self._listening.append(p)
            self.sip_ports["tls"] = p.getHost().port

        self._sip_up = True
        if cfg.h323 is not None:
            self._start_h323(policy, core_url)
        self._start_policy_reload(policy)
        self._start_api()

        sip_listener = cfg.sip.udp or cfg.sip.tcp or cfg.sip.tls  # config validation: at least one
        assert sip_listener is not None
        sip_host = sip_listener.host
        sip_port = self.sip_ports.get("udp") or self.sip_ports.get("tcp") or self.sip_ports.get("tls")
        page = f"http://{_url_host(http_host)}:{self.http_port}/m/1000"
        transports = " or ".join(t.upper() for t in self.sip_ports)
        dial = f"sip:1000@{_url_host(sip_host)}:{sip_port}"
        if "tls" in self.sip_ports:
            tls_host = cfg.sip.tls.host if cfg.sip.tls is not None else sip_host
            dial += f" or sips:1000@{_url_host(tls_host)}:{self.sip_ports['tls']}"
            if len(self.sip_ports) == 1:
                dial = f"sips:1000@{_url_host(tls_host)}:{self.sip_ports['tls']}"
        log.info("gateway.ready", sip=self.sip_ports, http=self.http_port, core=core_url,
                 control=self.control_port, metrics=self.metrics_port,
                 embedded_core=cfg.core.url is None, event_loop=loop_kind(asyncio.get_running_loop()))
        print(f"roomgate is up.\n"
              f"  SIP phone or room system: dial {dial} ({transports})\n"
              f"  Browser:                  open {page}\n"
              f"  Any meeting id works in place of 1000. Ctrl-C stops.", flush=True)
        if self.h323_port is not None and cfg.h323 is not None:
            print(f"  H.323 endpoint:           dial 1000 at {_url_host(cfg.h323.listen.host)}:{self.h323_port} "
                  f"(or 1000@{_url_host(cfg.h323.listen.host)})", flush=True)

    def _start_policy_reload(self, policy: Any) -> None:
        """Watch the policy file (1 s stat poll); SIGHUP and the API reload through the same path."""
        from pathlib import Path

        from gateway.policy_reload import PolicyReloader

        targets = [c for c in (self.calls, self.h323_calls) if c is not None]
        self.policy_reloader = PolicyReloader(Path(self.config.policy), targets, policy, self.metrics)
        self.policy_reloader.start_watching(self.reactor)

    def reload_policy(self, trigger: str) -> Any:
        """Reload the policy file now (SIGHUP, API); a :class:`~gateway.policy_reload.ReloadResult`,
        or None before the gateway has started."""
        if self.policy_reloader is None:
            log.warning("policy.reload.ignored", trigger=trigger, detail="the gateway is not started yet")
            return None
        return self.policy_reloader.reload(trigger)

    def _start_api(self) -> None:
        """The control API (HTTPS) and /metrics listeners, each only when its section is configured."""
        cfg = self.config
        if cfg.control is None and cfg.metrics is None:
            return
        from gateway.api.http import (
            ControlApiResource,
            MetricsResource,
            listen_control_api,
            listen_metrics,
        )
        from gateway.api.service import ControlService
        from gateway.api.tokens import TokenRecord, TokenVerifier

        if cfg.control is not None:
            c = cfg.control
            verifier = TokenVerifier([TokenRecord(t.id, t.scope, t.hash) for t in c.tokens])
            controller: Any = self.calls
            if self.h323_calls is not None:  # one roster; commands reach SIP and H.323 calls
                from gateway.h323_calls import LegacyControllers

                controller = LegacyControllers(self.calls, self.h323_calls)
            service = ControlService(controller, self.core if cfg.core.url is None else None, self._readiness,
                                     reload_policy=self.reload_policy)
            port = listen_control_api(self.reactor, c.listen.host, c.listen.port, c.tls_cert, c.tls_key,
                                      ControlApiResource(service, verifier, self.metrics))
            self._listening.append(port)
            self.control_port = port.getHost().port
            log.info("api.listening", port=self.control_port, tokens=len(c.tokens))
        if cfg.metrics is not None:
            m = cfg.metrics
            mverifier = (TokenVerifier([TokenRecord("metrics", "read", m.token_hash)])
                         if m.token_hash else None)
            port = listen_metrics(self.reactor, m.listen.host, m.listen.port,
                                  MetricsResource(self.metrics, mverifier))
            self._listening.append(port)
            self.metrics_port = port.getHost().port
            log.info("metrics.listening", port=self.metrics_port, per_meeting=m.per_meeting,
                     token=mverifier is not None)

    def _start_h323(self, policy: Any, core_url: str) -> None:
        """H.323 call signalling (``h323.listen``), sharing the SIP side's roster, metrics and ports."""
        from gateway.h323_calls import H323CallController
        from h323.transport import H323Service

        assert self.config.h323 is not None
        listen = self.config.h323.listen
        self.h323_calls = H323CallController(
            reactor=self.reactor, policy=policy, core_url=core_url.rstrip("/"),
            media_address=self.config.media.address, ports=self.calls._ports,
            roster=self.roster, metrics=self.metrics, pins=self.calls.pins,
            live=self.calls.live)
        # One meeting-wide DTMF relay (policy dtmf_relay) over SIP and H.323 participants.
        self.h323_calls.passthrough = self.config.media.passthrough
        self.calls.dtmf_relay_targets.append(self.h323_calls)
        self.h323_calls.dtmf_relay_targets.append(self.calls)
        service = H323Service(self.reactor, self.h323_calls)
        port = service.listen(listen.host, listen.port)
        self._listening.append(port)
        self.h323_port = port.getHost().port
        log.info("h323.ready", port=self.h323_port, dial=f"{_url_host(listen.host)}:{self.h323_port}")
        if self.config.h323.ras is not None:  # RAS: register to a gatekeeper, or be one (own)
            from gateway.h323_ras import RasRegistration, start_ras
            from h323.h225 import TransportAddress

            host = listen.host if listen.host not in ("0.0.0.0", "::") else self.config.media.address
            self.h323_ras = start_ras(self.reactor, self.config.h323, policy, self.h323_calls,
                                      signal_address=TransportAddress(host, self.h323_port))
            if isinstance(self.h323_ras, RasRegistration):
                self.h323_calls.ras = self.h323_ras

    def _readiness(self) -> dict[str, bool]:
        """Readiness checks by name: SIP listeners bound, embedded core accepting joins."""
        core_ok = self.core is not None and not getattr(self.core, "_closed", False)
        return {"sip": self._sip_up, "core": core_ok}

    async def stop(self) -> None:
        log.info("gateway.stopping")
        self._sip_up = False  # readiness says "not ready" while calls are being ended
        if self.policy_reloader is not None:
            self.policy_reloader.stop_watching()
        if self.calls is not None:
            await self.calls.hangup_all()
        if self.h323_calls is not None:
            await self.h323_calls.hangup_all()
        if self.h323_ras is not None:  # DRQs went with the calls; now URQ (H.225.0 7.7.6)
            await self.h323_ras.stop()
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
    configure_logging(config.log.format, config.log.level, pii=config.log.pii)
    try:  # runtime.event_loop: uvloop by default when installed (docs/performance.md)
        reactor = install_reactor(config.runtime.event_loop)
    except EventLoopUnavailable as exc:  # load_config refuses this already; a config built in code may not
        log.error("gateway.start_failed", error=str(exc))
        print(f"roomgate: could not start: {exc}", file=sys.stderr)
        return 1
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
    # SIGHUP reloads the policy (validated first; a bad file leaves the old one in force).
    reactor.callWhenRunning(lambda: signal.signal(
        signal.SIGHUP, lambda *_: reactor.callFromThread(gateway.reload_policy, "sighup")))
    reactor.run()
    return exit_code
