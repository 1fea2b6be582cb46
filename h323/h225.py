"""H.225.0 call signalling: the H323-UserInformation carried in Q.931's User-user element.

H.225.0 section 7.6 / annex 7A (module H323-MESSAGES) defines ``H323-UserInformation`` with one
``h323-message-body`` per Q.931 message (``setup``, ``callProceeding``, ``alerting``,
``connect``, ``releaseComplete``, ``facility``, ``progress``, ``empty``, ...), and the
``h245Tunnelling`` flag and ``h245Control`` octet strings used for tunnelled H.245 (H.323
section 8.2.1).  It is encoded in aligned PER (H.225.0 section 7.6.1).

:func:`decode` returns a :class:`UserInformation` whose ``body`` is one of the frozen
dataclasses below (fields the gateway needs; pycrate's full value stays in ``raw``);
:func:`encode` builds the PER octets from such a value, filling in the components H.225.0
version 4 and later make mandatory (callIdentifier, multipleCalls, maintainConnection, ...).
Fast Start proposals (``fastStart``) and ``h245Control`` stay as encoded H.245 PDUs: decode
them with :mod:`h323.h245`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from h323 import asn1
from h323.errors import H225Error

#: H.225.0 version 4 (``itu-t recommendation h 2250 0 4``, H.225.0 section 7.6).
PROTOCOL_IDENTIFIER: tuple[int, ...] = (0, 0, 8, 2250, 0, 4)

__all__ = [
    "PROTOCOL_IDENTIFIER",
    "Alerting",
    "Alias",
    "Body",
    "CallProceeding",
    "Connect",
    "Empty",
    "Facility",
    "H225Error",
    "Information",
    "Notify",
    "OtherBody",
    "Progress",
    "ReleaseComplete",
    "Setup",
    "Status",
    "StatusInquiry",
    "TransportAddress",
    "UserInformation",
    "VendorInfo",
    "decode",
    "encode",
]


@dataclass(frozen=True)
class TransportAddress:
    """An IPv4 or IPv6 ``TransportAddress`` (H.225.0 section 7.6, ``ipAddress``/``ip6Address``)."""

    host: str
    port: int

    def to_asn1(self) -> tuple[str, dict[str, Any]]:
        ip = ipaddress.ip_address(self.host)
        if not 0 <= self.port <= 0xFFFF:
            raise H225Error(f"port {self.port} out of range")
        kind = "ipAddress" if ip.version == 4 else "ip6Address"
        return (kind, {"ip": ip.packed, "port": self.port})

    @classmethod
    def from_asn1(cls, value: Any) -> TransportAddress | None:
        """The address, or None for the kinds the gateway cannot use (IPX, NSAP, ...)."""
        kind, inner = value
        if kind in ("ipAddress", "ip6Address"):
            return cls(str(ipaddress.ip_address(inner["ip"])), inner["port"])
        return None


@dataclass(frozen=True)
class Alias:
    """An ``AliasAddress`` (H.225.0 section 7.6): ``kind`` is the ASN.1 alternative
    (``h323-ID``, ``dialledDigits``, ``url-ID``, ``email-ID``, ``transportID``,
    ``partyNumber``, ...); ``value`` is text for the textual kinds, a
    :class:`TransportAddress` for ``transportID``, pycrate's value otherwise."""

    kind: str
    value: Any

    TEXT_KINDS = ("h323-ID", "dialledDigits", "url-ID", "email-ID")

    def to_asn1(self) -> tuple[str, Any]:
        if self.kind == "transportID" and isinstance(self.value, TransportAddress):
            return (self.kind, self.value.to_asn1())
        return (self.kind, self.value)

    @classmethod
    def from_asn1(cls, value: Any) -> Alias:
        kind, inner = value
        if kind == "transportID":
            addr = TransportAddress.from_asn1(inner)
            return cls(kind, addr if addr is not None else inner)
        return cls(kind, inner)


@dataclass(frozen=True)
class VendorInfo:
    """What ``EndpointType.vendor`` says (H.225.0 ``VendorIdentifier``, H.221 T.35 codes).
    Product and version strings are octets and may end in NUL (H323Plus does)."""

    product_id: bytes | None = None
    version_id: bytes | None = None
    t35_country_code: int = 181  # United States (T.35 annex A)
    t35_extension: int = 0
    manufacturer_code: int = 0


def _endpoint_type(vendor: VendorInfo | None, role: str) -> dict[str, Any]:
    """An ``EndpointType`` (H.225.0 section 7.6) for a terminal or a gateway."""
    ept: dict[str, Any] = {}
    if vendor is not None:
        v: dict[str, Any] = {"vendor": {"t35CountryCode": vendor.t35_country_code,
                                        "t35Extension": vendor.t35_extension,
                                        "manufacturerCode": vendor.manufacturer_code}}
        if vendor.product_id is not None:
            v["productId"] = vendor.product_id
        if vendor.version_id is not None:
            v["versionId"] = vendor.version_id
        ept["vendor"] = v
    if role == "gateway":
        ept["gateway"] = {}
    else:
        ept["terminal"] = {}
    ept["mc"] = False
    ept["undefinedNode"] = False
    return ept


def _vendor_of(ept: Any) -> VendorInfo | None:
    if not isinstance(ept, dict) or "vendor" not in ept:
        return None
    v = ept["vendor"]
    h221 = v["vendor"]
    return VendorInfo(v.get("productId"), v.get("versionId"), h221["t35CountryCode"],
                      h221["t35Extension"], h221["manufacturerCode"])


def _guid(value: bytes | None) -> dict[str, Any]:
    return {"callIdentifier": {"guid": value}} if value is not None else {}


def _check_guid(name: str, value: bytes | None) -> None:
    if value is not None and len(value) != 16:
        raise H225Error(f"{name} must be 16 octets")


# --------------------------------------------------------------------------- bodies


@dataclass(frozen=True)
class Setup:
    """``Setup-UUIE`` (H.225.0 section 7.3.1 / 7.6): the caller's aliases and addresses,
    the conference and call identifiers, Fast Start proposals (H.323 section 8.1.7:
    encoded OpenLogicalChannel PDUs) and the H.245 address for an early separate H.245."""

    conference_id: bytes
    call_identifier: bytes
    destination_address: tuple[Alias, ...] = ()
    source_address: tuple[Alias, ...] = ()
    dest_call_signal_address: TransportAddress | None = None
    source_call_signal_address: TransportAddress | None = None
    h245_address: TransportAddress | None = None
    fast_start: tuple[bytes, ...] | None = None
    vendor: VendorInfo | None = None
    endpoint_identifier: str | None = None
    conference_goal: str = "create"
    media_wait_for_connect: bool = False
    can_overlap_send: bool = False
    protocol_identifier: tuple[int, ...] = PROTOCOL_IDENTIFIER

    name = "setup"

    def to_asn1(self, role: str) -> dict[str, Any]:
        _check_guid("conference_id", self.conference_id)
        _check_guid("call_identifier", self.call_identifier)
        v: dict[str, Any] = {"protocolIdentifier": self.protocol_identifier}
        if self.h245_address is not None:
            v["h245Address"] = self.h245_address.to_asn1()
        if self.source_address:
            v["sourceAddress"] = [a.to_asn1() for a in self.source_address]
        v["sourceInfo"] = _endpoint_type(self.vendor, role)
        if self.destination_address:
            v["destinationAddress"] = [a.to_asn1() for a in self.destination_address]
        if self.dest_call_signal_address is not None:
            v["destCallSignalAddress"] = self.dest_call_signal_address.to_asn1()
        v.update({"activeMC": False, "conferenceID": self.conference_id,
                  "conferenceGoal": (self.conference_goal, 0), "callType": ("pointToPoint", 0)})
        if self.source_call_signal_address is not None:
            v["sourceCallSignalAddress"] = self.source_call_signal_address.to_asn1()
        v.update(_guid(self.call_identifier))
        if self.fast_start is not None:
            v["fastStart"] = list(self.fast_start)
        v["mediaWaitForConnect"] = self.media_wait_for_connect
        v["canOverlapSend"] = self.can_overlap_send
        if self.endpoint_identifier is not None:
            v["endpointIdentifier"] = self.endpoint_identifier
        v["multipleCalls"] = False
        v["maintainConnection"] = False
        return v

    @classmethod
    def from_asn1(cls, v: dict[str, Any]) -> Setup:
        return cls(
            conference_id=v["conferenceID"],
            call_identifier=v.get("callIdentifier", {}).get("guid", b""),
            destination_address=tuple(Alias.from_asn1(a) for a in v.get("destinationAddress", ())),
            source_address=tuple(Alias.from_asn1(a) for a in v.get("sourceAddress", ())),
            dest_call_signal_address=_addr(v.get("destCallSignalAddress")),
            source_call_signal_address=_addr(v.get("sourceCallSignalAddress")),
            h245_address=_addr(v.get("h245Address")),
            fast_start=tuple(v["fastStart"]) if "fastStart" in v else None,
            vendor=_vendor_of(v.get("sourceInfo")),
            endpoint_identifier=v.get("endpointIdentifier"),
            conference_goal=v["conferenceGoal"][0],
            media_wait_for_connect=v.get("mediaWaitForConnect", False),
            can_overlap_send=v.get("canOverlapSend", False),
            protocol_identifier=tuple(v["protocolIdentifier"]),
        )


def _addr(value: Any) -> TransportAddress | None:
    return TransportAddress.from_asn1(value) if value is not None else None


@dataclass(frozen=True)
class _Answer:
    """Shared shape of CallProceeding, Alerting and Connect (H.225.0 sections 7.3.2-7.3.4):
    ``destinationInfo``, the H.245 address, Fast Start answers (the accepted OLCs) and
    ``fastConnectRefused``."""

    call_identifier: bytes
    h245_address: TransportAddress | None = None
    fast_start: tuple[bytes, ...] | None = None
    fast_connect_refused: bool = False
    vendor: VendorInfo | None = None
    protocol_identifier: tuple[int, ...] = PROTOCOL_IDENTIFIER

    name = ""

    def _common(self, role: str, extra: dict[str, Any]) -> dict[str, Any]:
        _check_guid("call_identifier", self.call_identifier)
        v: dict[str, Any] = {"protocolIdentifier": self.protocol_identifier}
        if self.h245_address is not None:
            v["h245Address"] = self.h245_address.to_asn1()
        v["destinationInfo"] = _endpoint_type(self.vendor, role)
        v.update(extra)
        v.update(_guid(self.call_identifier))
        if self.fast_start is not None:
            v["fastStart"] = list(self.fast_start)
        v["multipleCalls"] = False
        v["maintainConnection"] = False
        if self.fast_connect_refused:
            v["fastConnectRefused"] = 0
        return v

    def to_asn1(self, role: str) -> dict[str, Any]:
        return self._common(role, {})

    @classmethod
    def _fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        return {
            "call_identifier": v.get("callIdentifier", {}).get("guid", b""),
            "h245_address": _addr(v.get("h245Address")),
            "fast_start": tuple(v["fastStart"]) if "fastStart" in v else None,
            "fast_connect_refused": "fastConnectRefused" in v,
            "vendor": _vendor_of(v.get("destinationInfo")),
            "protocol_identifier": tuple(v["protocolIdentifier"]),
        }

    @classmethod
    def from_asn1(cls, v: dict[str, Any]) -> Any:
        return cls(**cls._fields(v))


@dataclass(frozen=True)
class CallProceeding(_Answer):
    """``CallProceeding-UUIE`` (H.225.0 section 7.3.2)."""

    name = "callProceeding"


@dataclass(frozen=True)
class Alerting(_Answer):
    """``Alerting-UUIE`` (H.225.0 section 7.3.3)."""

    name = "alerting"


@dataclass(frozen=True)
class Connect(_Answer):
    """``Connect-UUIE`` (H.225.0 section 7.3.4); ``conferenceID`` is mandatory here."""

    conference_id: bytes = b"\0" * 16

    name = "connect"

    def to_asn1(self, role: str) -> dict[str, Any]:
        _check_guid("conference_id", self.conference_id)
        return self._common(role, {"conferenceID": self.conference_id})

    @classmethod
    def from_asn1(cls, v: dict[str, Any]) -> Connect:
        return cls(**cls._fields(v), conference_id=v["conferenceID"])


@dataclass(frozen=True)
class Progress(_Answer):
    """``Progress-UUIE`` (H.225.0 section 7.3.7); callIdentifier is a root component here."""

    name = "progress"

    def to_asn1(self, role: str) -> dict[str, Any]:
        _check_guid("call_identifier", self.call_identifier)
        v: dict[str, Any] = {"protocolIdentifier": self.protocol_identifier,
                             "destinationInfo": _endpoint_type(self.vendor, role)}
        if self.h245_address is not None:
            v["h245Address"] = self.h245_address.to_asn1()
        v["callIdentifier"] = {"guid": self.call_identifier}
        if self.fast_start is not None:
            v["fastStart"] = list(self.fast_start)
        v["multipleCalls"] = False
        v["maintainConnection"] = False
        if self.fast_connect_refused:
            v["fastConnectRefused"] = 0
        return v


@dataclass(frozen=True)
class ReleaseComplete:
    """``ReleaseComplete-UUIE`` (H.225.0 section 7.3.9) with its ``ReleaseCompleteReason``
    (e.g. ``calledPartyNotRegistered``, ``securityDenied``, ``undefinedReason``; table 5
    maps them to Q.931 causes)."""

    reason: str | None = None
    call_identifier: bytes | None = None
    protocol_identifier: tuple[int, ...] = PROTOCOL_IDENTIFIER

    name = "releaseComplete"

    def to_asn1(self, role: str) -> dict[str, Any]:
        _check_guid("call_identifier", self.call_identifier)
        v: dict[str, Any] = {"protocolIdentifier": self.protocol_identifier}
        if self.reason is not None:
            v["reason"] = (self.reason, 0)
        v.update(_guid(self.call_identifier))
        return v

    @classmethod
    def from_asn1(cls, v: dict[str, Any]) -> ReleaseComplete:
        reason = v.get("reason")
        return cls(reason[0] if reason else None, v.get("callIdentifier", {}).get("guid"),
                   tuple(v["protocolIdentifier"]))


@dataclass(frozen=True)
class Facility:
    """``Facility-UUIE`` (H.225.0 section 7.4.1): ``reason`` (``startH245`` with an
    ``h245Address`` asks the peer to open a separate H.245 connection, H.323 section 8.2.3),
    optional conference id and Fast Start elements."""

    reason: str = "undefinedReason"
    call_identifier: bytes | None = None
    h245_address: TransportAddress | None = None
    conference_id: bytes | None = None
    fast_start: tuple[bytes, ...] | None = None
    protocol_identifier: tuple[int, ...] = PROTOCOL_IDENTIFIER

    name = "facility"

    def to_asn1(self, role: str) -> dict[str, Any]:
        _check_guid("call_identifier", self.call_identifier)
        _check_guid("conference_id", self.conference_id)
        v: dict[str, Any] = {"protocolIdentifier": self.protocol_identifier}
        if self.conference_id is not None:
            v["conferenceID"] = self.conference_id
        v["reason"] = (self.reason, 0)
        v.update(_guid(self.call_identifier))
        if self.h245_address is not None:
            v["h245Address"] = self.h245_address.to_asn1()
        if self.fast_start is not None:
            v["fastStart"] = list(self.fast_start)
        v["multipleCalls"] = False
        v["maintainConnection"] = False
        return v

    @classmethod
    def from_asn1(cls, v: dict[str, Any]) -> Facility:
        return cls(v["reason"][0], v.get("callIdentifier", {}).get("guid"),
                   _addr(v.get("h245Address")), v.get("conferenceID"),
                   tuple(v["fastStart"]) if "fastStart" in v else None,
                   tuple(v["protocolIdentifier"]))


@dataclass(frozen=True)
class Empty:
    """The ``empty`` body (H.225.0 section 7.6): a Facility that only carries tunnelled
    H.245 (``h245Control``)."""

    name = "empty"

    def to_asn1(self, role: str) -> Any:
        return 0

    @classmethod
    def from_asn1(cls, v: Any) -> Empty:
        return cls()


@dataclass(frozen=True)
class _CallIdOnly:
    call_identifier: bytes | None = None
    protocol_identifier: tuple[int, ...] = PROTOCOL_IDENTIFIER

    name = ""
    _mandatory_call_id = False

    def to_asn1(self, role: str) -> dict[str, Any]:
        _check_guid("call_identifier", self.call_identifier)
        if self._mandatory_call_id and self.call_identifier is None:
            raise H225Error(f"{self.name} needs a call identifier")
        return {"protocolIdentifier": self.protocol_identifier, **_guid(self.call_identifier)}

    @classmethod
    def from_asn1(cls, v: dict[str, Any]) -> Any:
        return cls(v.get("callIdentifier", {}).get("guid"), tuple(v["protocolIdentifier"]))


@dataclass(frozen=True)
class Information(_CallIdOnly):
    """``Information-UUIE`` (H.225.0 section 7.3.6)."""

    name = "information"


@dataclass(frozen=True)
class Status(_CallIdOnly):
    """``Status-UUIE`` (H.225.0 section 7.3.10)."""

    name = "status"
    _mandatory_call_id = True


@dataclass(frozen=True)
class StatusInquiry(_CallIdOnly):
    """``StatusInquiry-UUIE`` (H.225.0 section 7.3.11)."""

    name = "statusInquiry"
    _mandatory_call_id = True


@dataclass(frozen=True)
class Notify(_CallIdOnly):
    """``Notify-UUIE`` (H.225.0 section 7.3.13)."""

    name = "notify"
    _mandatory_call_id = True


@dataclass(frozen=True)
class OtherBody:
    """A body this layer does not model (e.g. ``setupAcknowledge``): name and pycrate value."""

    name: str
    value: Any = None

    def to_asn1(self, role: str) -> Any:
        return self.value


Body = (
    Setup | CallProceeding | Alerting | Connect | ReleaseComplete | Facility | Progress |
    Empty | Information | Status | StatusInquiry | Notify | OtherBody
)

_BODIES: dict[str, Any] = {cls.name: cls for cls in (
    Setup, CallProceeding, Alerting, Connect, ReleaseComplete, Facility, Progress, Empty,
    Information, Status, StatusInquiry, Notify)}


@dataclass(frozen=True)
class UserInformation:
    """``H323-UserInformation`` (H.225.0 section 7.6): a body, the tunnelling flag and the
    tunnelled H.245 PDUs (H.323 section 8.2.1; one element per encoded PDU)."""

    body: Body
    h245_tunnelling: bool = False
    h245_control: tuple[bytes, ...] = ()
    raw: Any = field(default=None, compare=False, repr=False)

    @property
    def message(self) -> str:
        """The ASN.1 name of the body (``"setup"``, ``"empty"``, ...)."""
        return self.body.name

    def encode(self, *, role: str = "terminal") -> bytes:
        """Aligned-PER octets; ``role`` ("terminal" or "gateway") fills ``EndpointType``."""
        return encode(self, role=role)


def decode(data: bytes) -> UserInformation:
    """Decode the User-user contents of a Q.931 message.  Raises :class:`H225Error`."""
    raw = asn1.decode("UserInformation", data, H225Error)
    try:
        pdu = raw["h323-uu-pdu"]
        name, value = pdu["h323-message-body"]
        cls = _BODIES.get(name)
        body = cls.from_asn1(value) if cls is not None else OtherBody(name, value)
        return UserInformation(body, bool(pdu.get("h245Tunnelling", False)),
                               tuple(pdu.get("h245Control", ())), raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise H225Error(f"unusable H323-UserInformation: {exc!r}") from None


def encode(info: UserInformation, *, role: str = "terminal") -> bytes:
    """Encode ``info`` in aligned PER (H.225.0 section 7.6.1).  Raises :class:`H225Error`."""
    if role not in ("terminal", "gateway"):
        raise H225Error(f"unknown endpoint role {role!r}")
    pdu: dict[str, Any] = {"h323-message-body": (info.body.name, info.body.to_asn1(role))}
    pdu["h245Tunnelling"] = info.h245_tunnelling
    if info.h245_control:
        pdu["h245Control"] = list(info.h245_control)
    return asn1.encode("UserInformation", {"h323-uu-pdu": pdu}, H225Error)
