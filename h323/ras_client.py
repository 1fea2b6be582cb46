"""The gateway as a RAS endpoint of an external gatekeeper (H.225.0 section 7.7, H.323 section 7.2).

Sans-IO, in the style of :class:`h323.call.H323Call`: the owner feeds datagrams
(:meth:`RasClient.receive_datagram`) and timer ticks (:meth:`RasClient.handle_timer`) with an
injected monotonic ``now``, sends what :meth:`RasClient.datagrams_to_send` returns and reads
:meth:`RasClient.next_event`.

- **Discovery and registration** (H.323 7.2.1, 7.2.2; H.225.0 7.7.1-7.7.5): with ``discover``
  a GRQ goes first (the GCF names the gatekeeper's RAS address and identifier); then a full RRQ
  with our call-signalling and RAS addresses, the meeting aliases (``terminalAlias``) and
  prefixes (``supportedPrefixes`` of ``terminalType.gateway``) and the ``timeToLive`` we would
  like.  The RCF gives the endpoint identifier and the gatekeeper's ``timeToLive``.
- **Keep-alive** (H.225.0 7.9.1, lightweight RRQ): ``keepAlive`` TRUE with the endpoint
  identifier, sent at :data:`KEEPALIVE_FRACTION` of the granted ``timeToLive``.  An RRJ to a
  keep-alive (``fullRegistrationRequired``) or a keep-alive that is never answered falls back
  to a full registration; repeated failures back off up to :data:`MAX_BACKOFF`.
- **Admission** per call (H.225.0 7.7.8-7.7.9, H.323 8.1.1): ARQ with ``answerCall`` TRUE for
  each incoming call -> :class:`Admitted` or :class:`AdmissionRejected` (the ARJ's reason, or
  ``"timeout"``); **DRQ** at call end (7.7.14) -> :class:`Disengaged`.  A DRQ *from* the
  gatekeeper is confirmed and reported as :class:`DisengageOrdered`.
- **Status** (H.225.0 7.7.18-7.7.19, H.323 7.2.5): an IRQ from the gatekeeper is answered with
  an IRR (same ``requestSeqNum``, to the IRQ's ``replyAddress``) listing the admitted calls it
  asks about -- all of them for call reference 0 -- with call reference, conference and call
  identifiers and call-signalling addresses; an IRQ for a call we do not have gets an IRR with
  ``irrStatus`` ``invalidCall``.  When an ACF sets ``irrFrequency`` (or, for ACFs without it, the
  RCF's ``preGrantedARQ.irrFrequencyInCall``), an unsolicited IRR for that call goes every that
  many seconds until the call is disengaged.
- **Unregistration** (7.7.6-7.7.7): :meth:`RasClient.unregister` at shutdown (URQ -> UCF or its
  timeout -> :class:`Unregistered`).  A URQ from the gatekeeper is confirmed and a full
  registration starts again.
- **Timers and retries** (H.225.0 section 7.9, recommended RAS timers and retry counts): every
  request is resent with the same ``requestSeqNum`` after :data:`RAS_TIMEOUT` (5 s for GRQ and
  ARQ, 3 s otherwise) up to :data:`RAS_RETRIES` times; a RequestInProgress (RIP) postpones the
  retry by its ``delay``.

Only datagrams from the gatekeeper's address are considered; anything else, undecodable
datagrams and replies to requests we did not make are dropped with a log line.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import structlog

from h323 import ras
from h323.errors import RasError
from h323.h225 import Alias, TransportAddress

log = structlog.get_logger("h323.ras_client")

#: H.225.0 section 7.9: seconds before a request is resent, per request.
RAS_TIMEOUT: dict[str, float] = {"gatekeeperRequest": 5.0, "registrationRequest": 3.0,
                                 "admissionRequest": 5.0, "disengageRequest": 3.0,
                                 "unregistrationRequest": 3.0}
#: H.225.0 section 7.9: retries after the first attempt (URQ: 1).
RAS_RETRIES: dict[str, int] = {"gatekeeperRequest": 2, "registrationRequest": 2, "admissionRequest": 2,
                               "disengageRequest": 2, "unregistrationRequest": 1}
#: Keep-alive RRQs go at this fraction of the granted timeToLive.
KEEPALIVE_FRACTION = 0.75
#: Seconds before a failed discovery/registration is tried again; doubles up to MAX_BACKOFF.
FIRST_BACKOFF = 5.0
MAX_BACKOFF = 120.0


class RasClientError(ValueError):
    """A command that the client's state does not allow (e.g. ARQ before registering)."""


@dataclass(frozen=True)
class Registered:
    endpoint_identifier: str
    gatekeeper_identifier: str | None
    time_to_live: int | None
    keep_alive: bool


@dataclass(frozen=True)
class RegistrationFailed:
    reason: str  # the GRJ/RRJ rejectReason, or "timeout"


@dataclass(frozen=True)
class Admitted:
    key: Any
    dest_call_signal_address: TransportAddress | None
    bandwidth: int | None


@dataclass(frozen=True)
class AdmissionRejected:
    key: Any
    reason: str  # ARJ rejectReason, "timeout" or "notRegistered"


@dataclass(frozen=True)
class Disengaged:
    key: Any
    confirmed: bool


@dataclass(frozen=True)
class DisengageOrdered:
    """The gatekeeper sent a DRQ for one of our calls: the call must be released."""

    key: Any
    reason: str | None


@dataclass(frozen=True)
class Unregistered:
    confirmed: bool


Event = Registered | RegistrationFailed | Admitted | AdmissionRejected | Disengaged | DisengageOrdered | Unregistered


@dataclass
class _Pending:
    msg: ras.RasMessage
    sent_at: float
    tries: int = 1
    delay_until: float | None = None
    key: Any = None
    what: str = ""  # "grq", "rrq", "keepalive", "arq", "drq", "urq"

    @property
    def deadline(self) -> float:
        if self.delay_until is not None:
            return self.delay_until
        return self.sent_at + RAS_TIMEOUT[self.msg.name]


@dataclass
class CallAdmission:
    """What the client keeps about one admitted call (for its DRQ)."""

    conference_id: bytes
    call_identifier: bytes
    call_reference: int
    admitted: bool = False
    abandoned: bool = False  # the call ended while its ARQ was out: DRQ once the ACF comes
    #: The caller's call-signalling address, for the IRR (None: not named).
    remote_signal_address: TransportAddress | None = None
    bandwidth: int = 1280
    #: The ACF's ``irrFrequency`` (seconds) and when the next unsolicited IRR is due.
    irr_every: float | None = None
    irr_at: float | None = None

    def per_call_info(self, local: TransportAddress) -> ras.PerCallInfo:
        return ras.PerCallInfo(self.call_reference, self.conference_id, self.call_identifier, local,
                               self.remote_signal_address, self.bandwidth)


@dataclass
class RasClient:
    """A gateway's registration with one gatekeeper (see the module docstring)."""

    gatekeeper: tuple[str, int]
    ras_address: TransportAddress
    call_signal_address: TransportAddress
    aliases: tuple[Alias, ...] = ()
    prefixes: tuple[str, ...] = ()
    gatekeeper_identifier: str | None = None
    discover: bool = False
    time_to_live: int = 300
    rng: random.Random = field(default_factory=random.Random)
    state: str = "idle"  # idle|discovering|registering|registered|unregistering|unregistered
    endpoint_identifier: str | None = None
    granted_ttl: int | None = None
    #: The RCF's ``preGrantedARQ.irrFrequencyInCall`` (seconds): the IRR interval for calls whose
    #: ACF names none.
    irr_frequency_in_call: int | None = None

    def __post_init__(self) -> None:
        self._seq = itertools.count(self.rng.randrange(1, 30000))
        self._out: list[tuple[bytes, tuple[str, int]]] = []
        self._events: deque[Event] = deque()
        self._pending: dict[int, _Pending] = {}
        self._calls: dict[Any, CallAdmission] = {}
        self._keepalive_at: float | None = None
        self._retry_at: float | None = None
        self._backoff = FIRST_BACKOFF
        self.sent: list[str] = []  # abbreviations, in order (for tests and logs)

    # -- aioquic-style surface ------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, tuple[str, int]]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        times = [p.deadline for p in self._pending.values()]
        if self._keepalive_at is not None:
            times.append(self._keepalive_at)
        if self._retry_at is not None:
            times.append(self._retry_at)
        times += [c.irr_at for c in self._calls.values() if c.irr_at is not None]
        return min(times) if times else None

    @property
    def registered(self) -> bool:
        return self.state == "registered"

    # -- commands -------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Discover (GRQ) or register (RRQ) right away."""
        if self.state not in ("idle", "unregistered"):
            return
        self._begin(now)

    def admit(self, key: Any, now: float, *, conference_id: bytes, call_identifier: bytes,
              call_reference: int, destination: tuple[Alias, ...] = (),
              source: tuple[Alias, ...] = (), bandwidth: int = 1280,
              remote_signal_address: TransportAddress | None = None) -> None:
        """ARQ for an incoming call (``answerCall`` TRUE, H.225.0 7.7.8).  The verdict comes as
        :class:`Admitted` or :class:`AdmissionRejected` with the same ``key``."""
        if not self.registered or self.endpoint_identifier is None:
            self._events.append(AdmissionRejected(key, "notRegistered"))
            return
        self._calls[key] = CallAdmission(conference_id, call_identifier, call_reference,
                                         remote_signal_address=remote_signal_address, bandwidth=bandwidth)
        msg = ras.admission_request(
            self._next_seq(), self.endpoint_identifier, conference_id, call_identifier,
            call_reference & 0x7FFF, answer_call=True, source=source, destination=destination,
            dest_call_signal_address=self.call_signal_address, bandwidth=bandwidth,
            gatekeeper_identifier=self.gatekeeper_identifier)
        self._request(msg, now, what="arq", key=key)

    def disengage(self, key: Any, now: float, *, reason: str = "normalDrop") -> None:
        """DRQ for a call that was admitted (H.225.0 7.7.14); nothing if it was not.  While its
        ARQ is still out, the DRQ follows a late ACF."""
        call = self._calls.get(key)
        if call is not None and not call.admitted and any(
                p.what == "arq" and p.key == key for p in self._pending.values()):
            call.abandoned = True
            return
        call = self._calls.pop(key, None)
        if call is None or not call.admitted or self.endpoint_identifier is None or not self.registered:
            return
        msg = ras.disengage_request(self._next_seq(), self.endpoint_identifier, call.conference_id,
                                    call.call_identifier, call.call_reference & 0x7FFF, reason=reason,
                                    answered_call=True, gatekeeper_identifier=self.gatekeeper_identifier)
        self._request(msg, now, what="drq", key=key)

    def unregister(self, now: float) -> None:
        """URQ at shutdown (H.225.0 7.7.6); :class:`Unregistered` follows (confirmed or not)."""
        self._keepalive_at = self._retry_at = None
        if self.state != "registered":
            self._pending.clear()
            self.state = "unregistered"
            self._events.append(Unregistered(False))
            return
        self._pending = {s: p for s, p in self._pending.items() if p.what == "drq"}
        self.state = "unregistering"
        msg = ras.unregistration_request(self._next_seq(), self.call_signal_address,
                                         endpoint_identifier=self.endpoint_identifier,
                                         gatekeeper_identifier=self.gatekeeper_identifier,
                                         aliases=self.aliases)
        self._request(msg, now, what="urq")

    # -- input ----------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, source: tuple[str, int], now: float) -> None:
        if source[1] != self.gatekeeper[1] or source[0] != self.gatekeeper[0]:
            log.warning("h323.ras.foreign", port=source[1])
            return
        try:
            msg = ras.decode(data)
        except RasError as exc:
            log.warning("h323.ras.invalid", error=str(exc), size=len(data))
            return
        seq = msg.request_seq_num
        if msg.name == "unregistrationRequest":
            self._on_gatekeeper_urq(msg, now)
            return
        if msg.name == "disengageRequest":
            self._on_gatekeeper_drq(msg)
            return
        if msg.name == "infoRequest":
            self._on_gatekeeper_irq(msg)
            return
        if msg.name in ("serviceControlIndication", "infoRequestAck", "infoRequestNak"):
            log.info("h323.ras.ignored", message=msg.abbreviation)
            return
        pending = self._pending.get(seq) if seq is not None else None
        if pending is None or seq is None:
            log.info("h323.ras.unexpected", message=msg.abbreviation, seq=seq)
            return
        if msg.name == "requestInProgress":
            delay = msg.value.get("delay", 1000) / 1000.0
            pending.delay_until = now + delay
            return
        del self._pending[seq]
        handler = getattr(self, f"_on_{pending.what}")
        handler(msg, pending, now)

    def handle_timer(self, now: float) -> None:
        for seq, p in list(self._pending.items()):
            if now < p.deadline:
                continue
            if p.tries <= RAS_RETRIES[p.msg.name]:
                p.tries += 1
                p.sent_at, p.delay_until = now, None
                self._emit(p.msg, resend=True)
            else:
                del self._pending[seq]
                self._timed_out(p, now)
        if self._keepalive_at is not None and now >= self._keepalive_at:
            self._keepalive_at = None
            self._send_rrq(now, keep_alive=True)
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self._begin(now)
        for call in self._calls.values():
            if call.irr_at is not None and now >= call.irr_at and call.irr_every is not None and self.registered:
                call.irr_at = now + call.irr_every
                self._send_irr(self._next_seq(), (call,), unsolicited=True)

    # -- replies --------------------------------------------------------------------------------

    def _on_grq(self, msg: ras.RasMessage, p: _Pending, now: float) -> None:
        if msg.name != "gatekeeperConfirm":
            self._failed(ras.reject_reason(msg) or msg.abbreviation, now)
            return
        addrs = msg.addresses("rasAddress")
        if addrs:
            self.gatekeeper = (addrs[0].host, addrs[0].port)
        self.gatekeeper_identifier = msg.gatekeeper_identifier or self.gatekeeper_identifier
        log.info("h323.ras.discovered", gatekeeper_id=self.gatekeeper_identifier)
        self._send_rrq(now, keep_alive=False)

    def _on_rrq(self, msg: ras.RasMessage, p: _Pending, now: float) -> None:
        self._on_registration_answer(msg, now, keep_alive=False)

    def _on_keepalive(self, msg: ras.RasMessage, p: _Pending, now: float) -> None:
        self._on_registration_answer(msg, now, keep_alive=True)

    def _on_registration_answer(self, msg: ras.RasMessage, now: float, *, keep_alive: bool) -> None:
        if msg.name == "registrationConfirm":
            self.endpoint_identifier = msg.endpoint_identifier or self.endpoint_identifier
            self.gatekeeper_identifier = msg.gatekeeper_identifier or self.gatekeeper_identifier
            self.granted_ttl = msg.time_to_live
            pregranted = msg.value.get("preGrantedARQ") or {}
            self.irr_frequency_in_call = pregranted.get("irrFrequencyInCall") or self.irr_frequency_in_call
            self.state = "registered"
            self._backoff = FIRST_BACKOFF
            if self.granted_ttl:
                self._keepalive_at = now + max(1.0, self.granted_ttl * KEEPALIVE_FRACTION)
            log.info("h323.ras.registered", keep_alive=keep_alive, time_to_live=self.granted_ttl,
                     gatekeeper_id=self.gatekeeper_identifier)
            self._events.append(Registered(self.endpoint_identifier or "", self.gatekeeper_identifier,
                                           self.granted_ttl, keep_alive))
            return
        reason = ras.reject_reason(msg) or msg.abbreviation
        if keep_alive:  # e.g. fullRegistrationRequired: register again in full
            log.info("h323.ras.keepalive_rejected", reason=reason)
            self.state = "registering"
            self._send_rrq(now, keep_alive=False)
            return
        self._failed(reason, now)

    def _on_arq(self, msg: ras.RasMessage, p: _Pending, now: float) -> None:
        call = self._calls.get(p.key)
        if msg.name == "admissionConfirm":
            if call is not None:
                call.admitted = True
                if call.abandoned:
                    self.disengage(p.key, now)
                    return
            addrs = msg.addresses("destCallSignalAddress")
            frequency = msg.value.get("irrFrequency") or self.irr_frequency_in_call
            if call is not None and frequency:
                call.irr_every = float(frequency)
                call.irr_at = now + call.irr_every
            log.info("h323.ras.admitted", seq=p.msg.request_seq_num, irr_frequency=frequency)
            self._events.append(Admitted(p.key, addrs[0] if addrs else None, msg.value.get("bandWidth")))
            return
        self._calls.pop(p.key, None)
        reason = ras.reject_reason(msg) or msg.abbreviation
        log.info("h323.ras.admission_rejected", reason=reason)
        self._events.append(AdmissionRejected(p.key, reason))
        if reason in ("callerNotRegistered", "invalidEndpointIdentifier"):
            self._lost_registration(now)

    def _on_drq(self, msg: ras.RasMessage, p: _Pending, now: float) -> None:
        self._events.append(Disengaged(p.key, msg.name == "disengageConfirm"))

    def _on_urq(self, msg: ras.RasMessage, p: _Pending, now: float) -> None:
        self.state = "unregistered"
        self.endpoint_identifier = None
        log.info("h323.ras.unregistered", confirmed=msg.name == "unregistrationConfirm")
        self._events.append(Unregistered(msg.name == "unregistrationConfirm"))

    def _on_gatekeeper_urq(self, msg: ras.RasMessage, now: float) -> None:
        """The gatekeeper unregisters us (H.225.0 7.7.6): UCF, then register again."""
        self._send(ras.unregistration_confirm(msg.request_seq_num or 0))
        log.info("h323.ras.unregistered_by_gatekeeper", reason=ras.reject_reason(msg))
        if self.state == "unregistering":
            return
        self.endpoint_identifier = None
        self._lost_registration(now)

    def _on_gatekeeper_drq(self, msg: ras.RasMessage) -> None:
        guid = (msg.value.get("callIdentifier") or {}).get("guid")
        for key, call in self._calls.items():
            if call.call_identifier == guid or call.conference_id == msg.value.get("conferenceID"):
                self._calls.pop(key)
                self._send(ras.disengage_confirm(msg.request_seq_num or 0))
                self._events.append(DisengageOrdered(key, ras.reject_reason(msg)))
                return
        self._send(ras.reject("disengageRequest", msg.request_seq_num or 0, "requestToDropOther"))

    def _on_gatekeeper_irq(self, msg: ras.RasMessage) -> None:
        """IRQ (H.225.0 7.7.18): an IRR about the call it names, or every call for reference 0."""
        if not self.registered or self.endpoint_identifier is None:
            log.info("h323.ras.irq_unregistered")
            return
        reference = msg.value.get("callReferenceValue", 0)
        guid = (msg.value.get("callIdentifier") or {}).get("guid")
        admitted = [c for c in self._calls.values() if c.admitted]
        if reference == 0 and guid in (None, bytes(16)):
            calls, status = admitted, "complete"
        else:
            calls = [c for c in admitted if (guid not in (None, bytes(16)) and c.call_identifier == guid)
                     or (reference and (c.call_reference & 0x7FFF) == reference)]
            status = "complete" if calls else "invalidCall"
        reply = msg.addresses("replyAddress")
        to = (reply[0].host, reply[0].port) if reply else self.gatekeeper
        self._send_irr(msg.request_seq_num or 0, tuple(calls), status=status, to=to)

    def _send_irr(self, seq: int, calls: tuple[CallAdmission, ...], *, unsolicited: bool = False,
                  status: str | None = None, to: tuple[str, int] | None = None) -> None:
        if self.endpoint_identifier is None:
            return
        msg = ras.info_request_response(seq, self.endpoint_identifier, self.ras_address, self.call_signal_address,
                                        tuple(c.per_call_info(self.call_signal_address) for c in calls),
                                        unsolicited=unsolicited, status=status)
        self._send(msg, to)
        log.info("h323.ras.irr_sent", seq=seq, calls=len(calls), unsolicited=unsolicited, status=status)

    # -- internals ------------------------------------------------------------------------------

    def _begin(self, now: float) -> None:
        if self.discover:
            self.state = "discovering"
            msg = ras.gatekeeper_request(self._next_seq(), self.ras_address, aliases=self.aliases,
                                         gatekeeper_identifier=self.gatekeeper_identifier)
            self._request(msg, now, what="grq")
        else:
            self._send_rrq(now, keep_alive=False)

    def _send_rrq(self, now: float, *, keep_alive: bool) -> None:
        if keep_alive and self.endpoint_identifier is None:
            keep_alive = False
        if not keep_alive:
            self.state = "registering"
        msg = ras.registration_request(
            self._next_seq(), self.call_signal_address, self.ras_address,
            aliases=() if keep_alive else self.aliases,
            gatekeeper_identifier=self.gatekeeper_identifier, time_to_live=self.time_to_live,
            keep_alive=keep_alive, endpoint_identifier=self.endpoint_identifier if keep_alive else None)
        if not keep_alive:
            msg = ras.with_prefixes(msg, self.prefixes)
        self._request(msg, now, what="keepalive" if keep_alive else "rrq")

    def _timed_out(self, p: _Pending, now: float) -> None:
        log.warning("h323.ras.timeout", request=p.msg.abbreviation, tries=p.tries)
        if p.what in ("grq", "rrq"):
            self._failed("timeout", now)
        elif p.what == "keepalive":
            self._lost_registration(now)
        elif p.what == "arq":
            self._calls.pop(p.key, None)
            self._events.append(AdmissionRejected(p.key, "timeout"))
        elif p.what == "drq":
            self._events.append(Disengaged(p.key, False))
        elif p.what == "urq":
            self.state = "unregistered"
            self._events.append(Unregistered(False))

    def _failed(self, reason: str, now: float) -> None:
        log.warning("h323.ras.registration_failed", reason=reason, retry_in=self._backoff)
        self.state = "idle"
        self._events.append(RegistrationFailed(reason))
        self._retry_at = now + self._backoff
        self._backoff = min(MAX_BACKOFF, self._backoff * 2)

    def _lost_registration(self, now: float) -> None:
        self._keepalive_at = None
        self.state = "registering"
        self._send_rrq(now, keep_alive=False)

    def _next_seq(self) -> int:
        seq = next(self._seq)
        if seq > 65535:
            self._seq = itertools.count(2)
            seq = 1
        return seq

    def _request(self, msg: ras.RasMessage, now: float, *, what: str, key: Any = None) -> None:
        seq = msg.request_seq_num
        assert seq is not None
        self._pending[seq] = _Pending(msg, now, key=key, what=what)
        self._emit(msg)

    def _emit(self, msg: ras.RasMessage, resend: bool = False) -> None:
        self._send(msg)
        log.debug("h323.ras.sent", message=msg.abbreviation, seq=msg.request_seq_num, resend=resend)

    def _send(self, msg: ras.RasMessage, to: tuple[str, int] | None = None) -> None:
        self._out.append((msg.encode(), to or self.gatekeeper))
        self.sent.append(msg.abbreviation)
