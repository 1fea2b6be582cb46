"""RAS for the gateway (``h323.ras``, ``h323.gatekeeper``): glue between the sans-IO RAS cores
and :class:`gateway.h323_calls.H323CallController`.

- ``h323.ras.gatekeeper`` set: :class:`RasRegistration` registers the gateway there
  (:class:`h323.ras_client.RasClient`), asks admission (ARQ, H.225.0 7.7.8) for every incoming
  call before it is answered (an ARJ or no answer releases the call with a ReleaseComplete
  reason, :func:`release_for_arj`), disengages (DRQ) when the call ends, releases a call the
  gatekeeper disengages, answers its IRQs with IRRs (and sends them unsolicited at the ACF's
  ``irrFrequency``), and unregisters (URQ) at shutdown.
- ``h323.gatekeeper: own``: :class:`h323.gatekeeper.Gatekeeper` answers endpoints on
  ``h323.ras.listen``; an alias is a meeting when the policy would admit an H.323 call to it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from gateway.admission import Refuse, decide
from gateway.policy import Policy
from h323.call import CallOffered
from h323.gatekeeper import Gatekeeper
from h323.h225 import Alias, TransportAddress
from h323.ras_client import (
    AdmissionRejected,
    Admitted,
    DisengageOrdered,
    RasClient,
    Unregistered,
)
from h323.ras_transport import RasEndpoint

log = structlog.get_logger("gateway.h323_ras")

#: ARJ rejectReason -> ReleaseCompleteReason (H.225.0 section 7.6) and Q.931 cause.
ARJ_RELEASE: dict[str, tuple[str, int]] = {
    "calledPartyNotRegistered": ("calledPartyNotRegistered", 1),
    "invalidPermission": ("noPermission", 21),
    "requestDenied": ("noPermission", 21),
    "securityDenial": ("securityDenied", 21),
    "resourceUnavailable": ("gatekeeperResources", 47),
    "insufficientResources": ("gatekeeperResources", 47),
    "callerNotRegistered": ("callerNotRegistered", 21),
    "timeout": ("unreachableGatekeeper", 41),
    "notRegistered": ("unreachableGatekeeper", 41),
}


def release_for_arj(reason: str) -> tuple[str, int]:
    """The ReleaseComplete reason and Q.931 cause for an ARJ (or an ARQ that got no answer)."""
    return ARJ_RELEASE.get(reason, ("gatekeeperResources", 47))


def alias_for(text: str) -> Alias:
    """``dialledDigits`` for an all-digit alias (H.225.0 7.6: 0-9 * # ,), ``h323-ID`` otherwise."""
    return Alias("dialledDigits", text) if text and all(c in "0123456789*#," for c in text) else Alias("h323-ID", text)


def meeting_test(policy: Policy) -> Any:
    """``is_meeting(alias)`` for the own gatekeeper: the policy admits an H.323 call to it."""
    from gateway.h323_calls import meeting_part

    def is_meeting(text: str) -> bool:
        meeting = meeting_part(text)
        if not meeting:
            return False
        return not isinstance(decide(policy, meeting=meeting, protocol="h323", transport="tcp",
                                     media_security="plain"), Refuse)
    return is_meeting


class RasRegistration:
    """The gateway registered to an external gatekeeper (the controller's ``ras``)."""

    def __init__(self, reactor: Any, client: RasClient, controller: Any) -> None:
        self.client = client
        self.controller = controller
        self.endpoint = RasEndpoint(reactor, client, on_event=self._on_event)
        self._waiting: dict[Any, asyncio.Future[Any]] = {}
        self._unregistered: asyncio.Future[bool] | None = None

    async def admit(self, key: Any, offer: CallOffered) -> tuple[str, int, str] | None:
        """ARQ for the call; None when admitted, else (release reason, cause, ARJ reason)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[key] = fut
        destination = offer.destination_aliases  # else the Q.931 called number, as dialledDigits
        if not destination and offer.called_number:
            destination = (alias_for(offer.called_number),)
        self.endpoint.run(lambda now: self.client.admit(
            key, now, conference_id=offer.call_identifier, call_identifier=offer.call_identifier,
            call_reference=offer.call_reference, destination=destination,
            source=offer.source_aliases,  # the caller's signalling address goes into our IRRs
            remote_signal_address=TransportAddress(*offer.source) if offer.source is not None else None))
        try:
            verdict = await fut
        finally:
            self._waiting.pop(key, None)
        if isinstance(verdict, Admitted):
            return None
        reason = verdict.reason
        release, cause = release_for_arj(reason)
        return release, cause, reason

    def disengage(self, key: Any) -> None:
        """DRQ for an admitted call that ended (nothing for calls never admitted)."""
        fut = self._waiting.pop(key, None)
        if fut is not None and not fut.done():
            fut.cancel()
        self.endpoint.run(lambda now: self.client.disengage(key, now))

    async def stop(self, wait: float = 2.5) -> None:
        """URQ (H.225.0 7.7.6), wait briefly for UCF, then close the socket."""
        self._unregistered = asyncio.get_running_loop().create_future()
        self.endpoint.run(lambda now: self.client.unregister(now))
        try:
            await asyncio.wait_for(asyncio.shield(self._unregistered), timeout=wait)
        except TimeoutError:
            log.warning("h323.ras.unregister_unconfirmed")
        result = self.endpoint.stop()
        if result is not None and hasattr(result, "asFuture"):
            await result.asFuture(asyncio.get_running_loop())

    def _on_event(self, event: Any) -> None:
        if isinstance(event, (Admitted, AdmissionRejected)):
            fut = self._waiting.get(event.key)
            if fut is not None and not fut.done():
                fut.set_result(event)
        elif isinstance(event, DisengageOrdered):
            self.controller.release_call(event.key, by="gatekeeper")
        elif isinstance(event, Unregistered) and self._unregistered is not None \
                and not self._unregistered.done():
            self._unregistered.set_result(event.confirmed)


class OwnGatekeeper:
    """``h323.gatekeeper: own``: the sans-IO gatekeeper on its UDP socket."""

    def __init__(self, reactor: Any, gatekeeper: Gatekeeper) -> None:
        self.gatekeeper = gatekeeper
        self.endpoint = RasEndpoint(reactor, gatekeeper)

    async def stop(self) -> None:
        result = self.endpoint.stop()
        if result is not None and hasattr(result, "asFuture"):
            await result.asFuture(asyncio.get_running_loop())


def start_ras(reactor: Any, h323: Any, policy: Policy, controller: Any, *,
              signal_address: TransportAddress) -> RasRegistration | OwnGatekeeper:
    """Bind ``h323.ras.listen`` and start the client or the own gatekeeper (config validated)."""
    ras_cfg = h323.ras
    if h323.gatekeeper == "own":
        gk = Gatekeeper(ras_address=TransportAddress(ras_cfg.listen.host, ras_cfg.listen.port),
                        call_signal_address=signal_address, is_meeting=meeting_test(policy),
                        gatekeeper_identifier=ras_cfg.gatekeeper_id or "roomgate",
                        time_to_live=ras_cfg.time_to_live)
        own = OwnGatekeeper(reactor, gk)
        port = own.endpoint.listen(ras_cfg.listen.host, ras_cfg.listen.port)
        gk.ras_address = TransportAddress(ras_cfg.listen.host, port.getHost().port)
        log.info("h323.gatekeeper.ready", port=port.getHost().port, gatekeeper_id=gk.gatekeeper_identifier)
        return own
    aliases = tuple(alias_for(a) for a in ras_cfg.aliases) or (Alias("h323-ID", "roomgate"),)
    client = RasClient(gatekeeper=(ras_cfg.gatekeeper.host, ras_cfg.gatekeeper.port),
                       ras_address=TransportAddress(ras_cfg.listen.host, ras_cfg.listen.port),
                       call_signal_address=signal_address, aliases=aliases,
                       prefixes=tuple(ras_cfg.prefixes), gatekeeper_identifier=ras_cfg.gatekeeper_id,
                       discover=ras_cfg.discover, time_to_live=ras_cfg.time_to_live)
    reg = RasRegistration(reactor, client, controller)
    port = reg.endpoint.listen(ras_cfg.listen.host, ras_cfg.listen.port)
    client.ras_address = TransportAddress(ras_cfg.listen.host, port.getHost().port)
    reg.endpoint.run(lambda now: client.start(now))
    log.info("h323.ras.ready", port=port.getHost().port, aliases=len(aliases), prefixes=len(ras_cfg.prefixes))
    return reg
