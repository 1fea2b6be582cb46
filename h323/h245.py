"""H.245 control messages (MultimediaSystemControlMessage, H.245 annex A), aligned PER.

H.245 PDUs reach the gateway three ways (H.323 section 8.2): on a separate TCP connection in
TPKT packets, tunnelled in ``h245Control`` of H.225.0 messages, and as Fast Start proposals
(encoded ``OpenLogicalChannel`` values in ``fastStart``, H.323 section 8.1.7).  One TPKT
payload or ``h245Control`` element may hold several PDUs back to back: :func:`decode_all`.

:func:`decode` returns an :class:`H245Message` (``kind`` is request/response/command/
indication, ``name`` the ASN.1 alternative, ``value`` pycrate's value) and :meth:`H245Message.typed`
turns the ones the gateway acts on into frozen dataclasses: :class:`TerminalCapabilitySet`
(+Ack), :class:`MasterSlaveDetermination` (+Ack), :class:`OpenLogicalChannel` (+Ack),
:class:`EndSessionCommand`, :class:`UserInputIndication`, :class:`VideoFastUpdatePicture`.
Each of those has ``to_message()`` to build one.  No procedures (H.245 section 8) here yet.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from h323 import asn1
from h323.errors import H245Error

#: H.245 version 7 (``itu-t recommendation h 245 0 7``).
PROTOCOL_IDENTIFIER: tuple[int, ...] = (0, 0, 8, 245, 0, 7)
#: The H.264 capability identifier (H.241 section 8.3.1, ``itu-t rec h 241 h264``).
H264_OID: tuple[int, ...] = (0, 0, 8, 241, 0, 0, 1)

__all__ = [
    "Capability",
    "CloseLogicalChannel",
    "EndSessionCommand",
    "FlowControlCommand",
    "H245Error",
    "H245Message",
    "H264Capability",
    "LogicalChannelParameters",
    "MasterSlaveDetermination",
    "MasterSlaveDeterminationAck",
    "MediaType",
    "OpenLogicalChannel",
    "OpenLogicalChannelAck",
    "TerminalCapabilitySet",
    "TerminalCapabilitySetAck",
    "UnicastAddress",
    "UserInputIndication",
    "VideoFastUpdatePicture",
    "decode",
    "decode_all",
    "decode_olc",
    "encode",
    "encode_olc",
]

KINDS = ("request", "response", "command", "indication")


@dataclass(frozen=True)
class H245Message:
    """One MultimediaSystemControlMessage: ``kind`` ("request", ...), ``name`` (the chosen
    alternative, e.g. "terminalCapabilitySet") and pycrate's ``value`` of it."""

    kind: str
    name: str
    value: Any

    def typed(self) -> Any:
        """The typed view of this message, or ``self`` when none is modelled."""
        conv = _TYPED.get((self.kind, self.name))
        if conv is None:
            return self
        try:
            return conv(self.value)
        except (KeyError, TypeError, ValueError) as exc:
            raise H245Error(f"unusable {self.name}: {exc!r}") from None

    def encode(self) -> bytes:
        return encode(self)


def decode_all(data: bytes) -> list[H245Message]:
    """Every PDU in ``data`` (PDUs are octet-aligned and may be concatenated)."""
    out = []
    rest = bytes(data)
    if not rest:
        raise H245Error("empty H.245 payload")
    while rest:
        value, rest = asn1.decode_prefix("MultimediaSystemControlMessage", rest, H245Error)
        out.append(_wrap(value))
    return out


def decode(data: bytes) -> H245Message:
    """Exactly one PDU.  Raises :class:`H245Error`."""
    return _wrap(asn1.decode("MultimediaSystemControlMessage", data, H245Error))


def _wrap(value: Any) -> H245Message:
    try:
        kind, (name, inner) = value
    except (TypeError, ValueError):  # e.g. an unknown extension alternative
        raise H245Error("MultimediaSystemControlMessage of an unknown kind") from None
    return H245Message(kind, name, inner)


def encode(msg: Any) -> bytes:
    """Encode an :class:`H245Message` or a typed message (anything with ``to_message()``)."""
    if not isinstance(msg, H245Message):
        msg = msg.to_message()
    return asn1.encode("MultimediaSystemControlMessage", (msg.kind, (msg.name, msg.value)),
                       H245Error)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class UnicastAddress:
    """``UnicastAddress.iPAddress``/``iP6Address`` (H.245 annex A): RTP or RTCP address."""

    host: str
    port: int

    def to_asn1(self) -> Any:
        ip = ipaddress.ip_address(self.host)
        kind = "iPAddress" if ip.version == 4 else "iP6Address"
        return ("unicastAddress", (kind, {"network": ip.packed, "tsapIdentifier": self.port}))

    @classmethod
    def from_asn1(cls, value: Any) -> UnicastAddress | None:
        if value is None or value[0] != "unicastAddress":
            return None
        kind, inner = value[1]
        if kind not in ("iPAddress", "iP6Address"):
            return None
        return cls(str(ipaddress.ip_address(inner["network"])), inner["tsapIdentifier"])


@dataclass(frozen=True)
class MediaType:
    """A ``DataType`` (H.245 annex A): ``kind`` is "audioData", "videoData", "nullData", ...;
    ``codec`` the capability alternative ("g711Alaw64k", "g711Ulaw64k", "g722-64k",
    "h263VideoCapability", ...; generic capabilities with the H.264 OID become "h264");
    ``param`` the frames-per-packet for the G.711/G.722 family, pycrate's value otherwise."""

    kind: str
    codec: str = ""
    param: Any = None

    def to_asn1(self) -> Any:
        if self.kind == "nullData":
            return ("nullData", 0)
        if self.codec == "h264":
            return (self.kind, ("genericVideoCapability", self.param))
        return (self.kind, (self.codec, self.param))

    @classmethod
    def from_asn1(cls, value: Any) -> MediaType:
        kind, inner = value
        if kind in ("audioData", "videoData") and isinstance(inner, tuple):
            codec, param = inner
            if codec.startswith("generic") and _is_h264(param):
                codec = "h264"
            return cls(kind, codec, param)
        if kind == "nullData":
            return cls(kind)
        return cls(kind, "", inner)


def _is_h264(param: Any) -> bool:
    try:
        ident = param["capabilityIdentifier"]
        return bool(ident[0] == "standard" and tuple(ident[1]) == H264_OID)
    except (KeyError, TypeError, IndexError, ValueError):
        return False


#: H.241 section 8.3.2 (table 8-4): H.264 generic capability parameter identifiers.
H241_PROFILE, H241_LEVEL = 41, 42
#: H.241 table 8-5: the ``booleanArray`` bit of the Baseline profile (Main 32, Extended 16, High 8).
H241_BASELINE = 64
#: H.241 table 8-6: the ``unsignedMin`` value of each H.264 level (``15 + 7 * n``, 1b at 19).
H241_LEVELS = {"1": 15, "1b": 19, "1.1": 22, "1.2": 29, "1.3": 36, "2": 43, "2.1": 50, "2.2": 57,
               "3": 64, "3.1": 71, "3.2": 78, "4": 85, "4.1": 92, "4.2": 99, "5": 106, "5.1": 113}


@dataclass(frozen=True)
class H264Capability:
    """An H.264 ``GenericCapability`` (H.241 section 8.3): the H.264 OID, ``maxBitRate`` in
    units of 100 bit/s, and the collapsing parameters profile (a ``booleanArray`` of profile
    bits, :data:`H241_BASELINE`) and level (:data:`H241_LEVELS`).  It is both the TCS entry's
    and the video OLC's ``DataType`` value.  Parameters we do not model (max-MBPS, ...) are
    dropped when decoding: we only pass H.264 through, the core's decoder takes any."""

    max_bit_rate: int = 20_000
    profile: int = H241_BASELINE
    level: int = H241_LEVELS["3.1"]

    @property
    def max_bps(self) -> int:
        return self.max_bit_rate * 100

    def to_asn1(self) -> dict[str, Any]:
        return {"capabilityIdentifier": ("standard", H264_OID), "maxBitRate": self.max_bit_rate,
                "collapsing": [
                    {"parameterIdentifier": ("standard", H241_PROFILE),
                     "parameterValue": ("booleanArray", self.profile)},
                    {"parameterIdentifier": ("standard", H241_LEVEL),
                     "parameterValue": ("unsignedMin", self.level)}]}

    @classmethod
    def from_asn1(cls, param: Any) -> H264Capability:
        """From pycrate's ``GenericCapability`` value (raises ``KeyError``/``TypeError``/
        ``ValueError`` when it is not H.264; a missing parameter takes H.241's default)."""
        if not _is_h264(param):
            raise ValueError("not the H.264 capability identifier")
        values = {}
        try:
            for p in param.get("collapsing", ()):
                kind, ident = p["parameterIdentifier"]
                if kind == "standard":
                    values[ident] = p["parameterValue"][1]
        except IndexError as exc:
            raise ValueError(f"malformed H.241 parameter: {exc}") from None
        return cls(int(param.get("maxBitRate", 0)), int(values.get(H241_PROFILE, H241_BASELINE)),
                   int(values.get(H241_LEVEL, H241_LEVELS["1"])))

    def media_type(self) -> MediaType:
        """The ``videoData`` data type of an H.264 logical channel."""
        return MediaType("videoData", "h264", self.to_asn1())

    def table_entry(self, entry: int) -> Capability:
        """A ``receiveVideoCapability`` entry for our TerminalCapabilitySet."""
        return Capability(entry, "receiveVideoCapability", "genericVideoCapability", self.to_asn1())


@dataclass(frozen=True)
class Capability:
    """One ``CapabilityTableEntry``: number, direction/kind ("receiveAudioCapability",
    "receiveUserInputCapability", ...), capability name ("g711Alaw64k", "dtmf", ...), value.
    Kinds whose value is not a CHOICE (e.g. ``receiveRTPAudioTelephonyEventCapability``)
    have an empty ``name`` and the whole value in ``param``."""

    entry: int
    kind: str
    name: str
    param: Any = 0


@dataclass(frozen=True)
class TerminalCapabilitySet:
    """``TerminalCapabilitySet`` (H.245 section 8.2 / annex A).  Building one gives every
    capability its own alternative set inside a single descriptor, grouped by ``kind``."""

    sequence_number: int
    capabilities: tuple[Capability, ...] = ()
    protocol_identifier: tuple[int, ...] = PROTOCOL_IDENTIFIER
    descriptors: Any = field(default=None, compare=False)

    @property
    def audio(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.capabilities if "Audio" in c.kind)

    @property
    def user_input(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.capabilities if "UserInput" in c.kind)

    @property
    def h264(self) -> H264Capability | None:
        """The first H.264 video capability (H.241 generic capability) the peer can receive
        (``receiveVideoCapability`` or ``receiveAndTransmitVideoCapability``), or None."""
        for c in self.capabilities:
            if c.kind in ("receiveVideoCapability", "receiveAndTransmitVideoCapability") \
                    and c.name == "genericVideoCapability" and _is_h264(c.param):
                try:
                    return H264Capability.from_asn1(c.param)
                except (KeyError, TypeError, ValueError):
                    continue
        return None

    def to_message(self) -> H245Message:
        table = [{"capabilityTableEntryNumber": c.entry,
                  "capability": (c.kind, (c.name, c.param) if c.name else c.param)}
                 for c in self.capabilities]
        if self.descriptors is not None:
            desc = self.descriptors
        else:
            groups: dict[str, list[int]] = {}
            for c in self.capabilities:
                groups.setdefault(c.kind.replace("receiveAndTransmit", "receive"), []).append(c.entry)
            desc = [{"capabilityDescriptorNumber": 0,
                     "simultaneousCapabilities": list(groups.values())}] if groups else []
        v: dict[str, Any] = {"sequenceNumber": self.sequence_number,
                             "protocolIdentifier": self.protocol_identifier,
                             "multiplexCapability": ("h2250Capability", _H2250_CAPABILITY)}
        if table:
            v["capabilityTable"] = table
        if desc:
            v["capabilityDescriptors"] = desc
        return H245Message("request", "terminalCapabilitySet", v)

    @classmethod
    def from_asn1(cls, v: dict[str, Any]) -> TerminalCapabilitySet:
        caps = []
        for e in v.get("capabilityTable", ()):
            if "capability" not in e:
                continue
            kind, inner = e["capability"]
            name, param = inner if isinstance(inner, tuple) else ("", inner)
            caps.append(Capability(e["capabilityTableEntryNumber"], kind, name, param))
        return cls(v["sequenceNumber"], tuple(caps), tuple(v["protocolIdentifier"]),
                   v.get("capabilityDescriptors"))


_MEDIA_DIST = {"centralizedControl": False, "distributedControl": False,
               "centralizedAudio": False, "distributedAudio": False,
               "centralizedVideo": False, "distributedVideo": False}
_MULTIPOINT = {"multicastCapability": False, "multiUniCastConference": False,
               "mediaDistributionCapability": [_MEDIA_DIST]}
#: The H2250Capability a point-to-point endpoint announces (H.245 annex A, H.225.0 6.2.8).
_H2250_CAPABILITY = {
    "maximumAudioDelayJitter": 60,
    "receiveMultipointCapability": _MULTIPOINT,
    "transmitMultipointCapability": _MULTIPOINT,
    "receiveAndTransmitMultipointCapability": _MULTIPOINT,
    "mcCapability": {"centralizedConferenceMC": False, "decentralizedConferenceMC": False},
    "rtcpVideoControlCapability": False,
    "mediaPacketizationCapability": {"h261aVideoPacketization": False},
}


@dataclass(frozen=True)
class TerminalCapabilitySetAck:
    """``TerminalCapabilitySetAck`` (H.245 section 8.2)."""

    sequence_number: int

    def to_message(self) -> H245Message:
        return H245Message("response", "terminalCapabilitySetAck",
                           {"sequenceNumber": self.sequence_number})


@dataclass(frozen=True)
class MasterSlaveDetermination:
    """``MasterSlaveDetermination`` (H.245 section 8.1): terminal type (H.323 table 1: 50 for
    a terminal, 60 for a gateway) and a random 24-bit status determination number."""

    terminal_type: int
    status_determination_number: int

    def to_message(self) -> H245Message:
        return H245Message("request", "masterSlaveDetermination", {
            "terminalType": self.terminal_type,
            "statusDeterminationNumber": self.status_determination_number})


@dataclass(frozen=True)
class MasterSlaveDeterminationAck:
    """``MasterSlaveDeterminationAck``: the decision *for the receiver* ("master"/"slave")."""

    decision: str

    def to_message(self) -> H245Message:
        return H245Message("response", "masterSlaveDeterminationAck", {"decision": (self.decision, 0)})


@dataclass(frozen=True)
class LogicalChannelParameters:
    """Forward or reverse parameters of an OLC with H2250LogicalChannelParameters
    (H.245 annex A; H.225.0 section 6.2.8): data type, session id, RTP and RTCP addresses."""

    data_type: MediaType
    #: 0 for the ``nullData`` side of a Fast Start proposal (multiplexParameters ``none``).
    session_id: int = 1
    media_channel: UnicastAddress | None = None
    media_control_channel: UnicastAddress | None = None
    silence_suppression: bool | None = None
    #: ``dynamicRTPPayloadType`` (96-127): the RTP payload type of a codec without a static one
    #: (H.264, H.225.0 section 6.2.8); None for G.711/G.722.
    payload_type: int | None = None

    def to_asn1(self, forward: bool) -> dict[str, Any]:
        v: dict[str, Any] = {"dataType": self.data_type.to_asn1()}
        if self.data_type.kind == "nullData" and self.media_channel is None \
                and self.media_control_channel is None:
            v["multiplexParameters"] = ("none", 0)
        else:
            h: dict[str, Any] = {"sessionID": self.session_id}
            if self.media_channel is not None:
                h["mediaChannel"] = self.media_channel.to_asn1()
            if self.media_control_channel is not None:
                h["mediaControlChannel"] = self.media_control_channel.to_asn1()
            if self.silence_suppression is not None:
                h["silenceSuppression"] = self.silence_suppression
            if self.payload_type is not None:
                h["dynamicRTPPayloadType"] = self.payload_type
            v["multiplexParameters"] = ("h2250LogicalChannelParameters", h)
        if forward:
            v = {"dataType": v["dataType"], "multiplexParameters": v["multiplexParameters"]}
        return v

    @classmethod
    def from_asn1(cls, v: dict[str, Any]) -> LogicalChannelParameters:
        mtype = MediaType.from_asn1(v["dataType"])
        mux = v.get("multiplexParameters")
        if mux is None or mux[0] != "h2250LogicalChannelParameters":
            return cls(mtype, 0)
        h = mux[1]
        return cls(mtype, h["sessionID"], UnicastAddress.from_asn1(h.get("mediaChannel")),
                   UnicastAddress.from_asn1(h.get("mediaControlChannel")),
                   h.get("silenceSuppression"), h.get("dynamicRTPPayloadType"))


@dataclass(frozen=True)
class OpenLogicalChannel:
    """``OpenLogicalChannel`` (H.245 section 8.4; Fast Start proposals, H.323 8.1.7.1, are
    these with a ``nullData`` forward or reverse side)."""

    forward_logical_channel_number: int
    forward: LogicalChannelParameters
    reverse: LogicalChannelParameters | None = None

    def to_asn1(self) -> dict[str, Any]:
        v: dict[str, Any] = {"forwardLogicalChannelNumber": self.forward_logical_channel_number,
                             "forwardLogicalChannelParameters": self.forward.to_asn1(True)}
        if self.reverse is not None:
            v["reverseLogicalChannelParameters"] = self.reverse.to_asn1(False)
        return v

    def to_message(self) -> H245Message:
        return H245Message("request", "openLogicalChannel", self.to_asn1())

    @classmethod
    def from_asn1(cls, v: dict[str, Any]) -> OpenLogicalChannel:
        rev = v.get("reverseLogicalChannelParameters")
        return cls(v["forwardLogicalChannelNumber"],
                   LogicalChannelParameters.from_asn1(v["forwardLogicalChannelParameters"]),
                   LogicalChannelParameters.from_asn1(rev) if rev is not None else None)


def decode_olc(data: bytes) -> OpenLogicalChannel:
    """One Fast Start element (an encoded ``OpenLogicalChannel``, H.323 section 8.1.7)."""
    value = asn1.decode("OpenLogicalChannel", data, H245Error)
    try:
        return OpenLogicalChannel.from_asn1(value)
    except (KeyError, TypeError, ValueError) as exc:
        raise H245Error(f"unusable OpenLogicalChannel: {exc!r}") from None


def encode_olc(olc: OpenLogicalChannel) -> bytes:
    """The octets of a Fast Start element."""
    return asn1.encode("OpenLogicalChannel", olc.to_asn1(), H245Error)


@dataclass(frozen=True)
class OpenLogicalChannelAck:
    """``OpenLogicalChannelAck`` (H.245 section 8.4) with the receiver's RTP/RTCP addresses."""

    forward_logical_channel_number: int
    session_id: int | None = None
    media_channel: UnicastAddress | None = None
    media_control_channel: UnicastAddress | None = None

    def to_message(self) -> H245Message:
        h: dict[str, Any] = {}
        if self.session_id is not None:
            h["sessionID"] = self.session_id
        if self.media_channel is not None:
            h["mediaChannel"] = self.media_channel.to_asn1()
        if self.media_control_channel is not None:
            h["mediaControlChannel"] = self.media_control_channel.to_asn1()
        return H245Message("response", "openLogicalChannelAck", {
            "forwardLogicalChannelNumber": self.forward_logical_channel_number,
            "forwardMultiplexAckParameters": ("h2250LogicalChannelAckParameters", h)})

    @classmethod
    def from_asn1(cls, v: dict[str, Any]) -> OpenLogicalChannelAck:
        ack = v.get("forwardMultiplexAckParameters")
        h = ack[1] if ack is not None and ack[0] == "h2250LogicalChannelAckParameters" else {}
        return cls(v["forwardLogicalChannelNumber"], h.get("sessionID"),
                   UnicastAddress.from_asn1(h.get("mediaChannel")),
                   UnicastAddress.from_asn1(h.get("mediaControlChannel")))


@dataclass(frozen=True)
class EndSessionCommand:
    """``endSessionCommand`` (H.245 section 8.2 end of session; H.323 8.5 call clearing)."""

    reason: str = "disconnect"

    def to_message(self) -> H245Message:
        return H245Message("command", "endSessionCommand", (self.reason, 0))


@dataclass(frozen=True)
class UserInputIndication:
    """``userInputIndication`` (H.245 annex A; H.323 section 10.5 DTMF): ``alphanumeric`` text
    or a ``signal`` (one of ``0-9*#A-D!``) with an optional duration in milliseconds."""

    alphanumeric: str | None = None
    signal: str | None = None
    duration: int | None = None

    def to_message(self) -> H245Message:
        if self.alphanumeric is not None:
            return H245Message("indication", "userInput", ("alphanumeric", self.alphanumeric))
        if self.signal is None:
            raise H245Error("userInputIndication needs alphanumeric or signal")
        sig: dict[str, Any] = {"signalType": self.signal}
        if self.duration is not None:
            sig["duration"] = self.duration
        return H245Message("indication", "userInput", ("signal", sig))

    @classmethod
    def from_asn1(cls, v: Any) -> Any:
        kind, inner = v
        if kind == "alphanumeric":
            return cls(alphanumeric=inner)
        if kind == "signal":
            return cls(signal=inner["signalType"], duration=inner.get("duration"))
        return H245Message("indication", "userInput", v)


@dataclass(frozen=True)
class VideoFastUpdatePicture:
    """``miscellaneousCommand`` with ``videoFastUpdatePicture`` (H.245 annex A; H.323
    section 8.7 keyframe request) for a logical channel."""

    logical_channel_number: int

    def to_message(self) -> H245Message:
        return H245Message("command", "miscellaneousCommand", {
            "logicalChannelNumber": self.logical_channel_number,
            "type": ("videoFastUpdatePicture", 0)})

    @classmethod
    def from_asn1(cls, v: dict[str, Any]) -> Any:
        if v["type"][0] == "videoFastUpdatePicture":
            return cls(v["logicalChannelNumber"])
        return H245Message("command", "miscellaneousCommand", v)


@dataclass(frozen=True)
class CloseLogicalChannel:
    """``closeLogicalChannel`` (H.245 section 8.4.1.3 / C.5): the transmitter closes its channel;
    ``source`` is "user" (the terminal decided) or "lcse"."""

    forward_logical_channel_number: int
    source: str = "user"

    def to_message(self) -> H245Message:
        return H245Message("request", "closeLogicalChannel", {
            "forwardLogicalChannelNumber": self.forward_logical_channel_number, "source": (self.source, 0)})

    @classmethod
    def from_asn1(cls, v: dict[str, Any]) -> CloseLogicalChannel:
        return cls(v["forwardLogicalChannelNumber"], v["source"][0])


#: ``FlowControlCommand.scope`` values (H.245 annex A).
FLOW_CONTROL_SCOPES = ("logicalChannelNumber", "resourceID", "wholeMultiplex")
#: The largest ``maximumBitRate`` H.245 allows (INTEGER (0..16777215), units of 100 bit/s).
MAX_FLOW_CONTROL_RATE = 16_777_215


@dataclass(frozen=True)
class FlowControlCommand:
    """``flowControlCommand`` (H.245 section 8.11 / annex A): the receiver limits what we send.

    ``scope`` is "logicalChannelNumber" (``target`` is the channel), "resourceID" (``target`` is
    the resource, H.245 13.x) or "wholeMultiplex" (``target`` None); ``maximum_bit_rate`` is in
    units of 100 bit/s, None for ``noRestriction``.  A command: nothing answers it.
    """

    scope: str
    target: int | None = None
    maximum_bit_rate: int | None = None

    def __post_init__(self) -> None:
        if self.scope not in FLOW_CONTROL_SCOPES:
            raise H245Error(f"unknown flowControlCommand scope {self.scope!r}")
        if (self.target is None) != (self.scope == "wholeMultiplex"):
            raise H245Error(f"flowControlCommand scope {self.scope} with target {self.target!r}")
        if self.maximum_bit_rate is not None and not 0 <= self.maximum_bit_rate <= MAX_FLOW_CONTROL_RATE:
            raise H245Error(f"maximumBitRate {self.maximum_bit_rate} out of range")

    @property
    def maximum_bps(self) -> int | None:
        """The limit in bit/s (None: no restriction)."""
        return None if self.maximum_bit_rate is None else self.maximum_bit_rate * 100

    def to_message(self) -> H245Message:
        scope = ("wholeMultiplex", 0) if self.target is None else (self.scope, self.target)
        restriction = ("noRestriction", 0) if self.maximum_bit_rate is None \
            else ("maximumBitRate", self.maximum_bit_rate)
        return H245Message("command", "flowControlCommand", {"scope": scope, "restriction": restriction})

    @classmethod
    def from_asn1(cls, v: dict[str, Any]) -> FlowControlCommand:
        scope, target = v["scope"]
        kind, rate = v["restriction"]
        return cls(scope, None if scope == "wholeMultiplex" else int(target),
                   int(rate) if kind == "maximumBitRate" else None)


TypedMessage = (
    TerminalCapabilitySet | TerminalCapabilitySetAck | MasterSlaveDetermination |
    MasterSlaveDeterminationAck | OpenLogicalChannel | OpenLogicalChannelAck |
    EndSessionCommand | UserInputIndication | VideoFastUpdatePicture | FlowControlCommand |
    CloseLogicalChannel | H245Message
)

_TYPED: dict[tuple[str, str], Any] = {
    ("request", "terminalCapabilitySet"): TerminalCapabilitySet.from_asn1,
    ("response", "terminalCapabilitySetAck"): lambda v: TerminalCapabilitySetAck(v["sequenceNumber"]),
    ("request", "masterSlaveDetermination"): lambda v: MasterSlaveDetermination(
        v["terminalType"], v["statusDeterminationNumber"]),
    ("response", "masterSlaveDeterminationAck"): lambda v: MasterSlaveDeterminationAck(v["decision"][0]),
    ("request", "openLogicalChannel"): OpenLogicalChannel.from_asn1,
    ("response", "openLogicalChannelAck"): OpenLogicalChannelAck.from_asn1,
    ("command", "endSessionCommand"): lambda v: EndSessionCommand(v[0]),
    ("indication", "userInput"): UserInputIndication.from_asn1,
    ("command", "miscellaneousCommand"): VideoFastUpdatePicture.from_asn1,
    ("command", "flowControlCommand"): FlowControlCommand.from_asn1,
    ("request", "closeLogicalChannel"): CloseLogicalChannel.from_asn1,
}


def audio_capabilities(codecs: tuple[tuple[str, int], ...] = (("g711Ulaw64k", 20), ("g711Alaw64k", 20)),
                       user_input: tuple[str, ...] = ("basicString", "dtmf"),
                       first_entry: int = 1) -> tuple[Capability, ...]:
    """Capability entries for audio receive capabilities and user input (DTMF)."""
    caps = [Capability(first_entry + i, "receiveAudioCapability", name, frames)
            for i, (name, frames) in enumerate(codecs)]
    n = first_entry + len(caps)
    caps += [Capability(n + i, "receiveAndTransmitUserInputCapability", name, 0)
             for i, name in enumerate(user_input)]
    return tuple(caps)
