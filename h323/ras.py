"""RAS: registration, admission and status on UDP 1719 (H.225.0 section 7.7 and annex 7A).

A RAS datagram is exactly one aligned-PER ``RasMessage``.  :func:`decode` returns a
:class:`RasMessage` (the ASN.1 alternative ``name``, ``request_seq_num`` and pycrate's value
with accessors for what a gateway or gatekeeper looks at); anything else (trailing octets,
an unknown alternative, a datagram of another protocol on port 1719) raises
:class:`~h323.errors.RasError`.  The builders below make the messages the gateway sends as an
endpoint (GRQ, RRQ and the lightweight keep-alive RRQ of H.225.0 7.9.1, ARQ, DRQ, URQ, and the
IRR that answers an IRQ or goes unsolicited, 7.7.19) and as a gatekeeper (GCF, RCF, ACF, DCF, UCF, LRQ).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from h323 import asn1
from h323.errors import RasError
from h323.h225 import (
    PROTOCOL_IDENTIFIER,
    Alias,
    TransportAddress,
    VendorInfo,
    _endpoint_type,
)

__all__ = [
    "ABBREVIATIONS",
    "PerCallInfo",
    "RasError",
    "RasMessage",
    "admission_confirm",
    "admission_request",
    "decode",
    "disengage_confirm",
    "disengage_request",
    "encode",
    "gatekeeper_confirm",
    "gatekeeper_request",
    "info_request",
    "info_request_response",
    "location_request",
    "registration_confirm",
    "registration_request",
    "unregistration_confirm",
    "unregistration_request",
]

#: The usual abbreviations (H.225.0 section 7.7) of the RasMessage alternatives.
ABBREVIATIONS: dict[str, str] = {
    "gatekeeperRequest": "GRQ", "gatekeeperConfirm": "GCF", "gatekeeperReject": "GRJ",
    "registrationRequest": "RRQ", "registrationConfirm": "RCF", "registrationReject": "RRJ",
    "unregistrationRequest": "URQ", "unregistrationConfirm": "UCF",
    "unregistrationReject": "URJ", "admissionRequest": "ARQ", "admissionConfirm": "ACF",
    "admissionReject": "ARJ", "bandwidthRequest": "BRQ", "bandwidthConfirm": "BCF",
    "bandwidthReject": "BRJ", "disengageRequest": "DRQ", "disengageConfirm": "DCF",
    "disengageReject": "DRJ", "locationRequest": "LRQ", "locationConfirm": "LCF",
    "locationReject": "LRJ", "infoRequest": "IRQ", "infoRequestResponse": "IRR",
    "infoRequestAck": "IACK", "infoRequestNak": "INAK", "requestInProgress": "RIP",
    "unknownMessageResponse": "XRS",
}


@dataclass(frozen=True)
class RasMessage:
    """One RAS message: ``name`` ("registrationRequest", ...) and its pycrate ``value``."""

    name: str
    value: Any = field(default_factory=dict)

    @property
    def abbreviation(self) -> str:
        """"RRQ", "ACF", ... (the name itself for the rare ones)."""
        return ABBREVIATIONS.get(self.name, self.name)

    @property
    def request_seq_num(self) -> int | None:
        return self.value.get("requestSeqNum") if isinstance(self.value, dict) else None

    def _get(self, key: str, default: Any = None) -> Any:
        return self.value.get(key, default) if isinstance(self.value, dict) else default

    @property
    def keep_alive(self) -> bool:
        """An RRQ with ``keepAlive`` TRUE is a lightweight re-registration (H.225.0 7.9.1)."""
        return bool(self._get("keepAlive", False))

    @property
    def endpoint_identifier(self) -> str | None:
        return self._get("endpointIdentifier")

    @property
    def gatekeeper_identifier(self) -> str | None:
        return self._get("gatekeeperIdentifier")

    @property
    def time_to_live(self) -> int | None:
        return self._get("timeToLive")

    def addresses(self, key: str) -> tuple[TransportAddress, ...]:
        """IP transport addresses of a component (``callSignalAddress``, ``rasAddress``,
        ``destCallSignalAddress``, ``replyAddress``...), one or a SEQUENCE OF."""
        v = self._get(key)
        if v is None:
            return ()
        items = v if isinstance(v, list) else [v]
        out = (TransportAddress.from_asn1(a) for a in items)
        return tuple(a for a in out if a is not None)

    def aliases(self, key: str) -> tuple[Alias, ...]:
        """Aliases of a component (``terminalAlias``, ``endpointAlias``, ``destinationInfo``,
        ``srcInfo``...)."""
        return tuple(Alias.from_asn1(a) for a in self._get(key, ()))

    def encode(self) -> bytes:
        return encode(self)


def decode(data: bytes) -> RasMessage:
    """Decode one RAS datagram.  Raises :class:`RasError` for anything that is not RAS."""
    value = asn1.decode("RasMessage", data, RasError)
    try:
        name, inner = value
    except (TypeError, ValueError):
        raise RasError("unusable RasMessage") from None
    return RasMessage(name, inner)


def encode(msg: RasMessage) -> bytes:
    """The datagram octets of ``msg`` (aligned PER).  Raises :class:`RasError`."""
    return asn1.encode("RasMessage", (msg.name, msg.value), RasError)


# --------------------------------------------------------------------------- builders


def _aliases(aliases: tuple[Alias, ...]) -> list[Any]:
    return [a.to_asn1() for a in aliases]


def gatekeeper_request(seq: int, ras_address: TransportAddress, *, aliases: tuple[Alias, ...] = (),
                       gatekeeper_identifier: str | None = None, role: str = "gateway",
                       vendor: VendorInfo | None = None) -> RasMessage:
    """GRQ (H.225.0 7.7.1 / H.323 7.2.1 gatekeeper discovery)."""
    v: dict[str, Any] = {"requestSeqNum": seq, "protocolIdentifier": PROTOCOL_IDENTIFIER,
                         "rasAddress": ras_address.to_asn1(),
                         "endpointType": _endpoint_type(vendor, role)}
    if gatekeeper_identifier is not None:
        v["gatekeeperIdentifier"] = gatekeeper_identifier
    if aliases:
        v["endpointAlias"] = _aliases(aliases)
    return RasMessage("gatekeeperRequest", v)


def gatekeeper_confirm(seq: int, ras_address: TransportAddress, gatekeeper_identifier: str) -> RasMessage:
    """GCF (H.225.0 7.7.2)."""
    return RasMessage("gatekeeperConfirm", {
        "requestSeqNum": seq, "protocolIdentifier": PROTOCOL_IDENTIFIER,
        "gatekeeperIdentifier": gatekeeper_identifier, "rasAddress": ras_address.to_asn1()})


def registration_request(seq: int, call_signal_address: TransportAddress,
                         ras_address: TransportAddress, *, aliases: tuple[Alias, ...] = (),
                         gatekeeper_identifier: str | None = None, time_to_live: int | None = None,
                         keep_alive: bool = False, endpoint_identifier: str | None = None,
                         role: str = "gateway", vendor: VendorInfo | None = None) -> RasMessage:
    """RRQ (H.225.0 7.7.4); with ``keep_alive`` the lightweight RRQ of H.225.0 7.9.1, which
    carries ``endpointIdentifier`` and ``keepAlive`` TRUE."""
    if keep_alive and endpoint_identifier is None:
        raise RasError("a keep-alive RRQ needs the endpoint identifier")
    v: dict[str, Any] = {
        "requestSeqNum": seq, "protocolIdentifier": PROTOCOL_IDENTIFIER,
        "discoveryComplete": gatekeeper_identifier is not None,
        "callSignalAddress": [call_signal_address.to_asn1()],
        "rasAddress": [ras_address.to_asn1()],
        "terminalType": _endpoint_type(vendor, role),
        "endpointVendor": _endpoint_type(vendor or VendorInfo(), role)["vendor"],
    }
    if aliases:
        v["terminalAlias"] = _aliases(aliases)
    if gatekeeper_identifier is not None:
        v["gatekeeperIdentifier"] = gatekeeper_identifier
    if time_to_live is not None:
        v["timeToLive"] = time_to_live
    v["keepAlive"] = keep_alive
    if endpoint_identifier is not None:
        v["endpointIdentifier"] = endpoint_identifier
    v["willSupplyUUIEs"] = False
    v["maintainConnection"] = False
    return RasMessage("registrationRequest", v)


def registration_confirm(seq: int, call_signal_address: TransportAddress, endpoint_identifier: str,
                         *, gatekeeper_identifier: str | None = None,
                         time_to_live: int | None = None,
                         aliases: tuple[Alias, ...] = ()) -> RasMessage:
    """RCF (H.225.0 7.7.5)."""
    v: dict[str, Any] = {"requestSeqNum": seq, "protocolIdentifier": PROTOCOL_IDENTIFIER,
                         "callSignalAddress": [call_signal_address.to_asn1()]}
    if aliases:
        v["terminalAlias"] = _aliases(aliases)
    if gatekeeper_identifier is not None:
        v["gatekeeperIdentifier"] = gatekeeper_identifier
    v["endpointIdentifier"] = endpoint_identifier
    if time_to_live is not None:
        v["timeToLive"] = time_to_live
    v["willRespondToIRR"] = False
    v["maintainConnection"] = False
    return RasMessage("registrationConfirm", v)


def admission_request(seq: int, endpoint_identifier: str, conference_id: bytes, call_identifier: bytes,
                      call_reference: int, *, answer_call: bool,
                      source: tuple[Alias, ...] = (), destination: tuple[Alias, ...] = (),
                      dest_call_signal_address: TransportAddress | None = None,
                      bandwidth: int = 1280, gatekeeper_identifier: str | None = None) -> RasMessage:
    """ARQ (H.225.0 7.7.8); ``bandwidth`` in units of 100 bit/s (both directions)."""
    v: dict[str, Any] = {"requestSeqNum": seq, "callType": ("pointToPoint", 0),
                         "endpointIdentifier": endpoint_identifier}
    if destination:
        v["destinationInfo"] = _aliases(destination)
    if dest_call_signal_address is not None:
        v["destCallSignalAddress"] = dest_call_signal_address.to_asn1()
    v.update({"srcInfo": _aliases(source) or [("h323-ID", "roomgate")], "bandWidth": bandwidth,
              "callReferenceValue": call_reference, "conferenceID": conference_id,
              "activeMC": False, "answerCall": answer_call, "canMapAlias": False,
              "callIdentifier": {"guid": call_identifier}})
    if gatekeeper_identifier is not None:
        v["gatekeeperIdentifier"] = gatekeeper_identifier
    v["willSupplyUUIEs"] = False
    return RasMessage("admissionRequest", v)


def admission_confirm(seq: int, dest_call_signal_address: TransportAddress, *, bandwidth: int = 1280,
                      routed: bool = False, irr_frequency: int | None = None) -> RasMessage:
    """ACF (H.225.0 7.7.9): ``callModel`` direct or gatekeeperRouted; ``irr_frequency`` (seconds)
    asks the endpoint for an unsolicited IRR that often while the call lasts."""
    v: dict[str, Any] = {"requestSeqNum": seq, "bandWidth": bandwidth,
                         "callModel": ("gatekeeperRouted" if routed else "direct", 0),
                         "destCallSignalAddress": dest_call_signal_address.to_asn1()}
    if irr_frequency is not None:
        v["irrFrequency"] = irr_frequency
    v["willRespondToIRR"] = False
    return RasMessage("admissionConfirm", v)


def disengage_request(seq: int, endpoint_identifier: str, conference_id: bytes, call_identifier: bytes,
                      call_reference: int, *, reason: str = "normalDrop",
                      answered_call: bool = False,
                      gatekeeper_identifier: str | None = None) -> RasMessage:
    """DRQ (H.225.0 7.7.14)."""
    v: dict[str, Any] = {"requestSeqNum": seq, "endpointIdentifier": endpoint_identifier,
                         "conferenceID": conference_id, "callReferenceValue": call_reference,
                         "disengageReason": (reason, 0), "callIdentifier": {"guid": call_identifier}}
    if gatekeeper_identifier is not None:
        v["gatekeeperIdentifier"] = gatekeeper_identifier
    v["answeredCall"] = answered_call
    return RasMessage("disengageRequest", v)


def disengage_confirm(seq: int) -> RasMessage:
    """DCF (H.225.0 7.7.15)."""
    return RasMessage("disengageConfirm", {"requestSeqNum": seq})


def unregistration_request(seq: int, call_signal_address: TransportAddress, *,
                           endpoint_identifier: str | None = None,
                           gatekeeper_identifier: str | None = None,
                           aliases: tuple[Alias, ...] = ()) -> RasMessage:
    """URQ (H.225.0 7.7.6), sent at shutdown."""
    v: dict[str, Any] = {"requestSeqNum": seq, "callSignalAddress": [call_signal_address.to_asn1()]}
    if aliases:
        v["endpointAlias"] = _aliases(aliases)
    if endpoint_identifier is not None:
        v["endpointIdentifier"] = endpoint_identifier
    if gatekeeper_identifier is not None:
        v["gatekeeperIdentifier"] = gatekeeper_identifier
    return RasMessage("unregistrationRequest", v)


def unregistration_confirm(seq: int) -> RasMessage:
    """UCF (H.225.0 7.7.7)."""
    return RasMessage("unregistrationConfirm", {"requestSeqNum": seq})


def location_request(seq: int, destination: tuple[Alias, ...], reply_address: TransportAddress, *,
                     endpoint_identifier: str | None = None) -> RasMessage:
    """LRQ (H.225.0 7.7.10)."""
    v: dict[str, Any] = {"requestSeqNum": seq}
    if endpoint_identifier is not None:
        v["endpointIdentifier"] = endpoint_identifier
    v["destinationInfo"] = _aliases(destination)
    v["replyAddress"] = reply_address.to_asn1()
    return RasMessage("locationRequest", v)


def info_request(seq: int, call_reference: int, call_identifier: bytes | None = None) -> RasMessage:
    """IRQ (H.225.0 7.7.18); call reference 0 asks about every call."""
    v: dict[str, Any] = {"requestSeqNum": seq, "callReferenceValue": call_reference}
    if call_identifier is not None:
        v["callIdentifier"] = {"guid": call_identifier}
    return RasMessage("infoRequest", v)


@dataclass(frozen=True)
class PerCallInfo:
    """One call in an IRR (H.225.0 7.7.19 ``perCallInfo``): Q.931 call reference, conference and
    call identifiers, and where its call signalling runs (our end, the peer's if known)."""

    call_reference: int
    conference_id: bytes
    call_identifier: bytes
    local_signal_address: TransportAddress | None = None
    remote_signal_address: TransportAddress | None = None
    bandwidth: int = 1280
    answered_call: bool = True

    def to_asn1(self) -> dict[str, Any]:
        signalling: dict[str, Any] = {}
        if self.remote_signal_address is not None:
            signalling["sendAddress"] = self.remote_signal_address.to_asn1()
        if self.local_signal_address is not None:
            signalling["recvAddress"] = self.local_signal_address.to_asn1()
        return {"callReferenceValue": self.call_reference & 0x7FFF, "conferenceID": self.conference_id,
                "originator": not self.answered_call, "h245": {}, "callSignalling": signalling,
                "callType": ("pointToPoint", 0), "bandWidth": self.bandwidth, "callModel": ("direct", 0),
                "callIdentifier": {"guid": self.call_identifier}, "substituteConfIDs": []}


def info_request_response(seq: int, endpoint_identifier: str, ras_address: TransportAddress,
                          call_signal_address: TransportAddress, calls: tuple[PerCallInfo, ...], *,
                          unsolicited: bool = False, status: str | None = None,
                          aliases: tuple[Alias, ...] = (), role: str = "gateway",
                          vendor: VendorInfo | None = None) -> RasMessage:
    """IRR (H.225.0 7.7.19): our endpoint, addresses and ``calls``.  Answering an IRQ it carries
    the IRQ's ``requestSeqNum``; ``unsolicited`` ones (at the ACF's ``irrFrequency``) a fresh one.
    ``status`` is the ``irrStatus`` ("complete", or "invalidCall" when the IRQ named a call we
    do not have).  We never ask for an IACK (``needResponse`` FALSE)."""
    v: dict[str, Any] = {"requestSeqNum": seq, "endpointType": _endpoint_type(vendor, role),
                         "endpointIdentifier": endpoint_identifier, "rasAddress": ras_address.to_asn1(),
                         "callSignalAddress": [call_signal_address.to_asn1()]}
    if aliases:
        v["endpointAlias"] = _aliases(aliases)
    if calls:
        v["perCallInfo"] = [c.to_asn1() for c in calls]
    v["needResponse"] = False
    if status is not None:
        v["irrStatus"] = (status, 0)
    v["unsolicited"] = unsolicited
    return RasMessage("infoRequestResponse", v)


# --------------------------------------------------------------------------- replies and rejects
# (added for the RAS client and the ``own`` gatekeeper: h323/ras_client.py, h323/gatekeeper.py)

#: The reject message of each request (H.225.0 sections 7.7.3, 7.7.5, 7.7.7, 7.7.10, 7.7.13, 7.7.15).
REJECTS: dict[str, str] = {
    "gatekeeperRequest": "gatekeeperReject", "registrationRequest": "registrationReject",
    "unregistrationRequest": "unregistrationReject", "admissionRequest": "admissionReject",
    "disengageRequest": "disengageReject", "locationRequest": "locationReject",
}


def reject(request: str, seq: int, reason: str, detail: Any = 0) -> RasMessage:
    """The reject (GRJ, RRJ, URJ, ARJ, DRJ, LRJ) answering ``request`` with ``reason`` (the
    ``rejectReason`` alternative, e.g. ``"calledPartyNotRegistered"``); ``detail`` is the
    alternative's value where it is not NULL (``duplicateAlias``: the aliases)."""
    name = REJECTS.get(request)
    if name is None:
        raise RasError(f"no reject for {request}")
    v: dict[str, Any] = {"requestSeqNum": seq}
    if name in ("gatekeeperReject", "registrationReject"):
        v["protocolIdentifier"] = PROTOCOL_IDENTIFIER
    v["rejectReason"] = (reason, detail)
    return RasMessage(name, v)


def reject_reason(msg: RasMessage) -> str | None:
    """The ``rejectReason`` alternative of a GRJ/RRJ/URJ/ARJ/DRJ/LRJ (``disengageReason`` of a DRQ)."""
    reason = msg._get("rejectReason") or msg._get("disengageReason")
    if isinstance(reason, tuple) and reason:
        return str(reason[0])
    return None


def location_confirm(seq: int, call_signal_address: TransportAddress,
                     ras_address: TransportAddress) -> RasMessage:
    """LCF (H.225.0 7.7.11): where the alias of the LRQ is reached."""
    return RasMessage("locationConfirm", {"requestSeqNum": seq,
                                          "callSignalAddress": call_signal_address.to_asn1(),
                                          "rasAddress": ras_address.to_asn1()})


def request_in_progress(seq: int, delay_ms: int) -> RasMessage:
    """RIP (H.225.0 ``RequestInProgress``, section 7.9): the answer will take ``delay_ms``."""
    return RasMessage("requestInProgress", {"requestSeqNum": seq, "delay": max(1, min(65535, delay_ms))})


def unregistration_request_from_gatekeeper(seq: int, call_signal_address: TransportAddress,
                                           endpoint_identifier: str, *, reason: str = "ttlExpired",
                                           gatekeeper_identifier: str | None = None) -> RasMessage:
    """URQ sent by a gatekeeper to force an endpoint out (H.225.0 7.7.6, ``reason``)."""
    msg = unregistration_request(seq, call_signal_address, endpoint_identifier=endpoint_identifier,
                                 gatekeeper_identifier=gatekeeper_identifier)
    msg.value["reason"] = (reason, 0)
    return msg


def with_prefixes(msg: RasMessage, prefixes: tuple[str, ...]) -> RasMessage:
    """An RRQ whose ``terminalType.gateway`` announces ``supportedPrefixes`` (H.225.0 7.6
    ``GatewayInfo``/``VoiceCaps``): the gatekeeper routes numbers starting so to us."""
    if not prefixes or msg.name != "registrationRequest":
        return msg
    ept = msg.value["terminalType"]
    ept["gateway"] = {"protocol": [("voice", {"supportedPrefixes": [
        {"prefix": ("dialledDigits", p)} for p in prefixes]})]}
    return msg
