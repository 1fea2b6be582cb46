"""The ``own`` gatekeeper (``h323.gatekeeper: own``): endpoints use the gateway as their gatekeeper.

Sans-IO: :meth:`Gatekeeper.receive_datagram` with the source address and an injected
``now`` queues the answers (:meth:`Gatekeeper.datagrams_to_send`); :meth:`Gatekeeper.handle_timer`
expires registrations whose ``timeToLive`` ran out.  What it answers (H.225.0 section 7.7,
H.323 section 7.2 and 8.1):

- **GRQ** (7.7.1) -> **GCF** with our identifier and RAS address, or GRJ ``terminalExcluded``
  when the GRQ names another gatekeeper.
- **RRQ** (7.7.4) -> **RCF** (7.7.5) with a fresh ``endpointIdentifier`` and ``timeToLive``;
  the endpoint is registered under its ``terminalAlias`` list.  A lightweight keep-alive RRQ
  (7.9.1) refreshes the registration; one for an unknown identifier gets RRJ
  ``fullRegistrationRequired``.  An alias held by another endpoint gets RRJ ``duplicateAlias``
  (a registered alias is then found before a meeting of the same name); an RRQ with no usable call-signalling address, RRJ ``invalidCallSignalAddress``.
- **ARQ** (7.7.8) from a registered endpoint -> **ACF** (7.7.9, direct call model): for a call to
  a meeting alias, pointing at the gateway's call-signalling address; for a registered endpoint's
  alias, at that endpoint; for ``answerCall``, at the endpoint itself.  Otherwise ARJ
  (``callerNotRegistered``, ``calledPartyNotRegistered``).
- **DRQ** (7.7.14) -> DCF (DRJ ``notRegistered`` from an unknown endpoint); **URQ** (7.7.6) ->
  UCF (URJ ``notCurrentlyRegistered``).
- **LRQ** (7.7.10) -> **LCF** (7.7.11) with the gateway's call-signalling address for a meeting
  alias (or a registered endpoint's address for its alias), LRJ ``requestDenied`` otherwise.
- **IRR** (7.7.19) is accepted and logged (``h323.gatekeeper.irr``), with an IACK when it sets
  ``needResponse``; we send no IRQ.
- A registration not refreshed within ``timeToLive`` (plus :data:`TTL_GRACE`) is dropped.

``is_meeting(alias_text)`` is the application's test for "this alias names a meeting we admit"
(the gateway passes its policy).  Undecodable datagrams and messages the gatekeeper does not
handle are dropped with a log line (H.225.0 XRS is not sent to unknown parties).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from h323 import ras
from h323.errors import RasError
from h323.h225 import Alias, TransportAddress

log = structlog.get_logger("h323.gatekeeper")

#: Seconds after timeToLive before an endpoint that sent no keep-alive is dropped.
TTL_GRACE = 10.0
DEFAULT_TTL = 300


@dataclass
class Registration:
    """One registered endpoint."""

    endpoint_identifier: str
    aliases: tuple[Alias, ...]
    call_signal_address: TransportAddress
    ras_address: TransportAddress
    expires_at: float
    calls: set[bytes] = field(default_factory=set)  # callIdentifier guids admitted


def alias_text(alias: Alias) -> str:
    """The textual value of an alias (``h323-ID``, ``dialledDigits``, ``url-ID``...), else ``""``."""
    return alias.value if isinstance(alias.value, str) else ""


class Gatekeeper:
    """The gateway's own gatekeeper (see the module docstring)."""

    def __init__(self, *, ras_address: TransportAddress, call_signal_address: TransportAddress,
                 is_meeting: Callable[[str], bool], gatekeeper_identifier: str = "roomgate",
                 time_to_live: int = DEFAULT_TTL) -> None:
        self.ras_address = ras_address
        self.call_signal_address = call_signal_address
        self.is_meeting = is_meeting
        self.gatekeeper_identifier = gatekeeper_identifier
        self.time_to_live = time_to_live
        self.registrations: dict[str, Registration] = {}
        self._ids = itertools.count(1)
        self._out: list[tuple[bytes, tuple[str, int]]] = []
        self.answered: list[str] = []  # abbreviations sent, in order (tests, logs)

    # -- surface --------------------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, tuple[str, int]]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> None:
        return None

    def get_timer(self) -> float | None:
        times = [r.expires_at + TTL_GRACE for r in self.registrations.values()]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for eid, reg in list(self.registrations.items()):
            if now >= reg.expires_at + TTL_GRACE:
                del self.registrations[eid]
                log.info("h323.gatekeeper.expired", endpoint=eid, aliases=len(reg.aliases))

    def by_alias(self, text: str) -> Registration | None:
        for reg in self.registrations.values():
            if any(alias_text(a) == text for a in reg.aliases):
                return reg
        return None

    def receive_datagram(self, data: bytes, source: tuple[str, int], now: float) -> None:
        try:
            msg = ras.decode(data)
        except RasError as exc:
            log.warning("h323.ras.invalid", error=str(exc), size=len(data))
            return
        handler = getattr(self, f"_on_{msg.name}", None)
        if handler is None:
            log.info("h323.gatekeeper.ignored", message=msg.abbreviation)
            return
        try:
            handler(msg, source, now)
        except (RasError, KeyError, TypeError, ValueError) as exc:  # a well-formed but unusable request
            log.warning("h323.gatekeeper.unusable", message=msg.abbreviation, error=str(exc))

    # -- requests -------------------------------------------------------------------------------

    def _on_gatekeeperRequest(self, msg: ras.RasMessage, source: tuple[str, int], now: float) -> None:
        reply_to = _first(msg.addresses("rasAddress")) or source
        seq = msg.request_seq_num or 0
        wanted = msg.gatekeeper_identifier
        if wanted and wanted != self.gatekeeper_identifier:
            self._reply(ras.reject(msg.name, seq, "terminalExcluded"), reply_to)
            return
        self._reply(ras.gatekeeper_confirm(seq, self.ras_address, self.gatekeeper_identifier), reply_to)

    def _on_registrationRequest(self, msg: ras.RasMessage, source: tuple[str, int], now: float) -> None:
        seq = msg.request_seq_num or 0
        reply_to = _first(msg.addresses("rasAddress")) or source
        ttl = min(self.time_to_live, msg.time_to_live or self.time_to_live)
        if msg.keep_alive:
            reg = self.registrations.get(msg.endpoint_identifier or "")
            if reg is None:
                self._reply(ras.reject(msg.name, seq, "fullRegistrationRequired"), reply_to)
                return
            reg.expires_at = now + ttl
            log.info("h323.gatekeeper.keepalive", endpoint=reg.endpoint_identifier)
            self._reply(ras.registration_confirm(seq, reg.call_signal_address, reg.endpoint_identifier,
                                                 gatekeeper_identifier=self.gatekeeper_identifier,
                                                 time_to_live=ttl), reply_to)
            return
        signal = msg.addresses("callSignalAddress")
        rasaddr = msg.addresses("rasAddress")
        if not signal or not rasaddr:
            self._reply(ras.reject(msg.name, seq, "invalidCallSignalAddress"), reply_to)
            return
        aliases = msg.aliases("terminalAlias")
        for alias in aliases:
            text = alias_text(alias)
            holder = self.by_alias(text) if text else None
            if holder is not None and holder.call_signal_address != signal[0]:
                self._reply(ras.reject(msg.name, seq, "duplicateAlias", [alias.to_asn1()]), reply_to)
                log.info("h323.gatekeeper.rejected", message="RRQ", reason="duplicateAlias")
                return
        # the same endpoint registering again replaces its old registration
        for eid, reg in list(self.registrations.items()):
            if reg.call_signal_address == signal[0]:
                del self.registrations[eid]
        eid = f"rg{next(self._ids):06d}"
        self.registrations[eid] = Registration(eid, aliases, signal[0], rasaddr[0], now + ttl)
        log.info("h323.gatekeeper.registered", endpoint=eid, aliases=len(aliases), time_to_live=ttl)
        self._reply(ras.registration_confirm(seq, signal[0], eid, gatekeeper_identifier=self.gatekeeper_identifier,
                                             time_to_live=ttl, aliases=aliases), reply_to)

    def _on_unregistrationRequest(self, msg: ras.RasMessage, source: tuple[str, int], now: float) -> None:
        seq = msg.request_seq_num or 0
        reg = self.registrations.pop(msg.endpoint_identifier or "", None)
        if reg is None:
            signal = msg.addresses("callSignalAddress")
            for eid, r in list(self.registrations.items()):
                if signal and r.call_signal_address == signal[0]:
                    reg = self.registrations.pop(eid)
        if reg is None:
            self._reply(ras.reject(msg.name, seq, "notCurrentlyRegistered"), source)
            return
        log.info("h323.gatekeeper.unregistered", endpoint=reg.endpoint_identifier)
        self._reply(ras.unregistration_confirm(seq), _ras_of(reg, source))

    def _on_admissionRequest(self, msg: ras.RasMessage, source: tuple[str, int], now: float) -> None:
        seq = msg.request_seq_num or 0
        reg = self.registrations.get(msg.endpoint_identifier or "")
        if reg is None:
            self._reply(ras.reject(msg.name, seq, "callerNotRegistered"), source)
            log.info("h323.gatekeeper.rejected", message="ARQ", reason="callerNotRegistered")
            return
        reply_to = _ras_of(reg, source)
        bandwidth = min(int(msg.value.get("bandWidth", 1280)), 1280 * 8)
        guid = (msg.value.get("callIdentifier") or {}).get("guid", b"")
        dest: TransportAddress | None = None
        if msg.value.get("answerCall"):
            dest = reg.call_signal_address
        else:
            for alias in msg.aliases("destinationInfo"):
                text = alias_text(alias)
                other = self.by_alias(text) if text else None
                if other is not None:
                    dest = other.call_signal_address
                    break
                if text and self.is_meeting(text):
                    dest = self.call_signal_address
                    break
            if dest is None:
                given = _first_addr(msg.addresses("destCallSignalAddress"))
                if given is not None and given == self.call_signal_address:
                    dest = given
        if dest is None:
            self._reply(ras.reject(msg.name, seq, "calledPartyNotRegistered"), reply_to)
            log.info("h323.gatekeeper.rejected", message="ARQ", reason="calledPartyNotRegistered")
            return
        reg.calls.add(guid)
        log.info("h323.gatekeeper.admitted", endpoint=reg.endpoint_identifier,
                 answer=bool(msg.value.get("answerCall")), to_gateway=dest == self.call_signal_address)
        self._reply(ras.admission_confirm(seq, dest, bandwidth=bandwidth), reply_to)

    def _on_disengageRequest(self, msg: ras.RasMessage, source: tuple[str, int], now: float) -> None:
        seq = msg.request_seq_num or 0
        reg = self.registrations.get(msg.endpoint_identifier or "")
        if reg is None:
            self._reply(ras.reject(msg.name, seq, "notRegistered"), source)
            return
        reg.calls.discard((msg.value.get("callIdentifier") or {}).get("guid", b""))
        log.info("h323.gatekeeper.disengaged", endpoint=reg.endpoint_identifier)
        self._reply(ras.disengage_confirm(seq), _ras_of(reg, source))

    def _on_locationRequest(self, msg: ras.RasMessage, source: tuple[str, int], now: float) -> None:
        seq = msg.request_seq_num or 0
        reply_to = _first(msg.addresses("replyAddress")) or source
        for alias in msg.aliases("destinationInfo"):
            text = alias_text(alias)
            other = self.by_alias(text) if text else None
            if other is not None:
                self._reply(ras.location_confirm(seq, other.call_signal_address, other.ras_address), reply_to)
                return
            if text and self.is_meeting(text):
                self._reply(ras.location_confirm(seq, self.call_signal_address, self.ras_address), reply_to)
                return
        self._reply(ras.reject(msg.name, seq, "requestDenied"), reply_to)

    def _on_infoRequestResponse(self, msg: ras.RasMessage, source: tuple[str, int], now: float) -> None:
        """IRR (H.225.0 7.7.19), solicited or not: we never ask (no IRQ), so it is only noted;
        an IACK goes back when the endpoint sets ``needResponse``."""
        reg = self.registrations.get(msg.endpoint_identifier or "")
        log.info("h323.gatekeeper.irr", endpoint=reg.endpoint_identifier if reg is not None else None,
                 calls=len(msg.value.get("perCallInfo", ())), unsolicited=msg.value.get("unsolicited"))
        if msg.value.get("needResponse"):
            self._reply(ras.RasMessage("infoRequestAck", {"requestSeqNum": msg.request_seq_num or 0}),
                        _ras_of(reg, source) if reg is not None else source)

    # -- output ---------------------------------------------------------------------------------

    def _reply(self, msg: ras.RasMessage, to: tuple[str, int]) -> None:
        self._out.append((msg.encode(), to))
        self.answered.append(msg.abbreviation)
        log.debug("h323.gatekeeper.sent", message=msg.abbreviation, seq=msg.request_seq_num)


def _first(addrs: tuple[TransportAddress, ...]) -> tuple[str, int] | None:
    return (addrs[0].host, addrs[0].port) if addrs else None


def _first_addr(addrs: tuple[TransportAddress, ...]) -> TransportAddress | None:
    return addrs[0] if addrs else None


def _ras_of(reg: Registration, source: tuple[str, int]) -> tuple[str, int]:
    return (reg.ras_address.host, reg.ras_address.port) if reg.ras_address else source

