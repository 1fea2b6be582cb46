"""Q.931 messages as H.225.0 uses them for call signalling (H.225.0 section 7.2, Q.931 section 4).

Wire layout (Q.931 section 4.1)::

    08                      protocol discriminator (Q.931 4.2)
    0L  [flag|CRV...]       call reference: length L (0..2 here; H.225.0 7.2.1 uses 2) and
                            value; the top bit of the first value octet is the flag, set in
                            messages sent by the side that did NOT allocate the reference
    MT                      message type (Q.931 4.4, table 4-2)
    IEs...                  information elements (Q.931 4.5): single-octet ones have bit 8 set;
                            others are id, length, contents; H.225.0 7.2.2.x gives User-user
                            (0x7E) a two-octet length

Known elements are parsed into small frozen dataclasses (:class:`BearerCapability`,
:class:`Cause`, :class:`CalledPartyNumber`, :class:`CallingPartyNumber`, :class:`Display`,
:class:`UserUser`); any other element is kept as :class:`RawIE`, so a message re-serialises to
what was received.  Malformed input raises :class:`~h323.errors.Q931Error` with a cause hint.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import TypeVar

from h323.errors import (
    CAUSE_INVALID_IE_CONTENTS,
    CAUSE_INVALID_MESSAGE,
    CAUSE_MESSAGE_TYPE_NONEXISTENT,
    Q931Error,
)

PROTOCOL_DISCRIMINATOR = 0x08
#: User-user protocol discriminator "X.208 and X.209 coded user information" (Q.931 4.5.30,
#: H.225.0 7.2.2.9).
UU_PROTOCOL_X208 = 0x05
MAX_CALL_REFERENCE_LEN = 2

__all__ = [
    "BearerCapability",
    "CalledPartyNumber",
    "CallingPartyNumber",
    "Cause",
    "Display",
    "IEId",
    "InformationElement",
    "MessageType",
    "Q931Error",
    "Q931Message",
    "RawIE",
    "UserUser",
    "parse",
]


class MessageType(enum.IntEnum):
    """Message types used by H.225.0 (Q.931 table 4-2, H.225.0 table 3)."""

    ALERTING = 0x01
    CALL_PROCEEDING = 0x02
    PROGRESS = 0x03
    SETUP = 0x05
    CONNECT = 0x07
    SETUP_ACKNOWLEDGE = 0x0D
    CONNECT_ACKNOWLEDGE = 0x0F
    RELEASE = 0x4D
    RELEASE_COMPLETE = 0x5A
    FACILITY = 0x62
    NOTIFY = 0x6E
    STATUS_INQUIRY = 0x75
    INFORMATION = 0x7B
    STATUS = 0x7D


class IEId(enum.IntEnum):
    """Identifiers of the variable-length elements we model (Q.931 table 4-3)."""

    BEARER_CAPABILITY = 0x04
    CAUSE = 0x08
    CALL_STATE = 0x14
    FACILITY = 0x1C
    PROGRESS_INDICATOR = 0x1E
    NOTIFICATION_INDICATOR = 0x27
    DISPLAY = 0x28
    KEYPAD_FACILITY = 0x2C
    SIGNAL = 0x34
    CALLING_PARTY_NUMBER = 0x6C
    CALLED_PARTY_NUMBER = 0x70
    USER_USER = 0x7E


@dataclass(frozen=True)
class BearerCapability:
    """Bearer capability (Q.931 4.5.5; H.225.0 7.2.2.1 mandates it in Setup).

    Defaults describe what H.323 endpoints send: CCITT coding, unrestricted digital... here
    "speech" (0), circuit mode, 64 kbit/s, layer 1 H.221/H.242 (0x05).
    """

    coding_standard: int = 0
    transfer_capability: int = 0x00
    transfer_mode: int = 0
    transfer_rate: int = 0x10
    rate_multiplier: int | None = None
    layer1_protocol: int | None = 0x05
    extra: bytes = b""
    #: Extension bit of octet 4.  Q.931 sets it; H323Plus clears it before a rate
    #: multiplier (octet 4.1).  Kept so that a parsed element re-serialises as received.
    octet4_ext: bool = True

    def contents(self) -> bytes:
        out = bytearray([0x80 | (self.coding_standard & 3) << 5 | (self.transfer_capability & 0x1F),
                         (0x80 if self.octet4_ext else 0) | (self.transfer_mode & 3) << 5
                         | (self.transfer_rate & 0x1F)])
        if self.rate_multiplier is not None:
            out.append(0x80 | (self.rate_multiplier & 0x7F))
        if self.layer1_protocol is not None:
            out.append(0x80 | 0x20 | (self.layer1_protocol & 0x1F))
        return bytes(out) + self.extra

    @classmethod
    def parse(cls, data: bytes) -> BearerCapability:
        if len(data) < 2:
            raise Q931Error("bearer capability shorter than 2 octets", cause=CAUSE_INVALID_IE_CONTENTS)
        o3, o4 = data[0], data[1]
        i = 2
        mult = None
        if o4 & 0x1F == 0x18:  # multirate: octet 4.1 carries the multiplier
            if len(data) < 3:
                raise Q931Error("bearer capability: rate multiplier missing", cause=CAUSE_INVALID_IE_CONTENTS)
            mult = data[2] & 0x7F
            i = 3
        layer1 = None
        if i < len(data) and (data[i] >> 5) & 3 == 1:  # octet 5: layer 1 identification
            layer1 = data[i] & 0x1F
            i += 1
        return cls((o3 >> 5) & 3, o3 & 0x1F, (o4 >> 5) & 3, o4 & 0x1F, mult, layer1, bytes(data[i:]),
                   bool(o4 & 0x80))


@dataclass(frozen=True)
class Cause:
    """Cause (Q.931 4.5.12, values from Q.850): location (table 4-14) and value (table 4-15)."""

    value: int
    location: int = 0  # 0 = user
    coding_standard: int = 0
    recommendation: int | None = None
    diagnostics: bytes = b""

    def contents(self) -> bytes:
        o3 = (self.coding_standard & 3) << 5 | (self.location & 0x0F)
        out = bytearray()
        if self.recommendation is None:
            out.append(0x80 | o3)
        else:
            out += bytes([o3, 0x80 | (self.recommendation & 0x7F)])
        out.append(0x80 | (self.value & 0x7F))
        return bytes(out) + self.diagnostics

    @classmethod
    def parse(cls, data: bytes) -> Cause:
        if len(data) < 2:
            raise Q931Error("cause shorter than 2 octets", cause=CAUSE_INVALID_IE_CONTENTS)
        o3 = data[0]
        i = 1
        rec = None
        if not o3 & 0x80:  # octet 3a present
            rec = data[1] & 0x7F
            i = 2
            if len(data) < 3:
                raise Q931Error("cause value missing", cause=CAUSE_INVALID_IE_CONTENTS)
        return cls(data[i] & 0x7F, o3 & 0x0F, (o3 >> 5) & 3, rec, bytes(data[i + 1:]))


def _digits(data: bytes, what: str) -> str:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise Q931Error(f"{what}: digits are not IA5", cause=CAUSE_INVALID_IE_CONTENTS) from None
    return text


@dataclass(frozen=True)
class CalledPartyNumber:
    """Called party number (Q.931 4.5.8): type of number, numbering plan, IA5 digits."""

    digits: str
    type_of_number: int = 0  # unknown
    numbering_plan: int = 1  # ISDN/telephony (E.164)

    def contents(self) -> bytes:
        return bytes([0x80 | (self.type_of_number & 7) << 4 | (self.numbering_plan & 0x0F)]) + \
            self.digits.encode("ascii")

    @classmethod
    def parse(cls, data: bytes) -> CalledPartyNumber:
        if not data:
            raise Q931Error("empty called party number", cause=CAUSE_INVALID_IE_CONTENTS)
        return cls(_digits(data[1:], "called party number"), (data[0] >> 4) & 7, data[0] & 0x0F)


@dataclass(frozen=True)
class CallingPartyNumber:
    """Calling party number (Q.931 4.5.10); octet 3a (presentation, screening) is optional."""

    digits: str
    type_of_number: int = 0
    numbering_plan: int = 1
    presentation: int | None = None
    screening: int | None = None

    def contents(self) -> bytes:
        o3 = (self.type_of_number & 7) << 4 | (self.numbering_plan & 0x0F)
        if self.presentation is None:
            head = bytes([0x80 | o3])
        else:
            head = bytes([o3, 0x80 | (self.presentation & 3) << 5 | ((self.screening or 0) & 3)])
        return head + self.digits.encode("ascii")

    @classmethod
    def parse(cls, data: bytes) -> CallingPartyNumber:
        if not data:
            raise Q931Error("empty calling party number", cause=CAUSE_INVALID_IE_CONTENTS)
        o3 = data[0]
        pres = scr = None
        i = 1
        if not o3 & 0x80:
            if len(data) < 2:
                raise Q931Error("calling party number: octet 3a missing", cause=CAUSE_INVALID_IE_CONTENTS)
            pres, scr = (data[1] >> 5) & 3, data[1] & 3
            i = 2
        return cls(_digits(data[i:], "calling party number"), (o3 >> 4) & 7, o3 & 0x0F, pres, scr)


@dataclass(frozen=True)
class Display:
    """Display (Q.931 4.5.16): IA5 text, here decoded as Latin-1 so that any octet survives."""

    text: str

    def contents(self) -> bytes:
        return self.text.encode("latin-1")

    @classmethod
    def parse(cls, data: bytes) -> Display:
        return cls(data.decode("latin-1"))


@dataclass(frozen=True)
class UserUser:
    """User-user (Q.931 4.5.30; H.225.0 7.2.2.9): protocol discriminator 5 and the PER-encoded
    H323-UserInformation.  The length field is two octets in H.225.0."""

    data: bytes
    protocol_discriminator: int = UU_PROTOCOL_X208

    def contents(self) -> bytes:
        return bytes([self.protocol_discriminator]) + self.data

    @classmethod
    def parse(cls, data: bytes) -> UserUser:
        if not data:
            raise Q931Error("empty user-user element", cause=CAUSE_INVALID_IE_CONTENTS)
        return cls(bytes(data[1:]), data[0])


@dataclass(frozen=True)
class RawIE:
    """Any other element, kept as received.  ``single`` marks a single-octet element (bit 8
    set, Q.931 4.5.1), whose whole octet is ``identifier`` and which has no contents."""

    identifier: int
    data: bytes = b""
    single: bool = False

    def contents(self) -> bytes:
        return self.data


InformationElement = (
    BearerCapability | Cause | CalledPartyNumber | CallingPartyNumber | Display | UserUser |
    RawIE
)

_PARSERS: dict[int, type] = {
    IEId.BEARER_CAPABILITY: BearerCapability,
    IEId.CAUSE: Cause,
    IEId.CALLED_PARTY_NUMBER: CalledPartyNumber,
    IEId.CALLING_PARTY_NUMBER: CallingPartyNumber,
    IEId.DISPLAY: Display,
    IEId.USER_USER: UserUser,
}
_IDS: dict[type, int] = {cls: ident for ident, cls in _PARSERS.items()}

T = TypeVar("T")


@dataclass(frozen=True)
class Q931Message:
    """One Q.931 message.  ``call_reference`` is the value without the flag; ``flag`` is the
    call reference flag (Q.931 4.3): False from the side that allocated the reference (the
    caller), True on every message of the other side (replies)."""

    message_type: MessageType
    call_reference: int
    flag: bool = False
    elements: tuple[InformationElement, ...] = field(default=())
    call_reference_length: int = 2

    def __post_init__(self) -> None:
        if not 0 <= self.call_reference_length <= MAX_CALL_REFERENCE_LEN:
            raise Q931Error("call reference length must be 0..2")
        limit = (1 << (8 * self.call_reference_length - 1)) if self.call_reference_length else 1
        if not 0 <= self.call_reference < limit:
            raise Q931Error(f"call reference {self.call_reference} does not fit")

    # --- access ---------------------------------------------------------------
    def get(self, kind: type[T]) -> T | None:
        """The first element of class ``kind`` (e.g. ``msg.get(Cause)``), or None."""
        for ie in self.elements:
            if isinstance(ie, kind):
                return ie
        return None

    @property
    def cause(self) -> Cause | None:
        return self.get(Cause)

    @property
    def called_party_number(self) -> CalledPartyNumber | None:
        return self.get(CalledPartyNumber)

    @property
    def calling_party_number(self) -> CallingPartyNumber | None:
        return self.get(CallingPartyNumber)

    @property
    def display(self) -> Display | None:
        return self.get(Display)

    @property
    def bearer_capability(self) -> BearerCapability | None:
        return self.get(BearerCapability)

    @property
    def user_user(self) -> bytes | None:
        """The H323-UserInformation octets of the User-user element (protocol 5), or None."""
        uu = self.get(UserUser)
        return uu.data if uu is not None and uu.protocol_discriminator == UU_PROTOCOL_X208 else None

    def with_user_user(self, data: bytes) -> Q931Message:
        """A copy whose User-user element carries ``data`` (replaced, or appended last)."""
        elems = [ie for ie in self.elements if not isinstance(ie, UserUser)]
        return replace(self, elements=(*elems, UserUser(data)))

    def reply(self, message_type: MessageType, *elements: InformationElement) -> Q931Message:
        """A message for the same call from the other side (the flag inverted)."""
        return Q931Message(message_type, self.call_reference, not self.flag, tuple(elements),
                           self.call_reference_length)

    # --- wire -----------------------------------------------------------------
    def encode(self) -> bytes:
        """The message octets (Q.931 4.1); elements are written in the order held."""
        n = self.call_reference_length
        out = bytearray([PROTOCOL_DISCRIMINATOR, n])
        if n:
            crv = self.call_reference | ((1 << (8 * n - 1)) if self.flag else 0)
            out += crv.to_bytes(n, "big")
        out.append(int(self.message_type))
        for ie in self.elements:
            if isinstance(ie, RawIE) and ie.single:
                out.append(ie.identifier & 0xFF)
                continue
            ident = ie.identifier if isinstance(ie, RawIE) else _IDS[type(ie)]
            body = ie.contents()
            if ident == IEId.USER_USER:
                if len(body) > 0xFFFF:
                    raise Q931Error("user-user element too long")
                out += bytes([ident]) + len(body).to_bytes(2, "big") + body
            else:
                if len(body) > 0xFF:
                    raise Q931Error(f"element 0x{ident:02x} too long")
                out += bytes([ident, len(body)]) + body
        return bytes(out)

    __bytes__ = encode


def parse(data: bytes) -> Q931Message:
    """Parse one Q.931 message (the payload of one TPKT).  Raises :class:`Q931Error`."""
    if len(data) < 3:
        raise Q931Error("message shorter than 3 octets")
    if data[0] != PROTOCOL_DISCRIMINATOR:
        raise Q931Error(f"protocol discriminator 0x{data[0]:02x} is not Q.931")
    n = data[1] & 0x0F
    if data[1] & 0xF0 or n > MAX_CALL_REFERENCE_LEN:
        raise Q931Error(f"call reference length octet 0x{data[1]:02x} not supported")
    if len(data) < 3 + n:
        raise Q931Error("message truncated in the call reference")
    flag = False
    crv = 0
    if n:
        raw = int.from_bytes(data[2:2 + n], "big")
        top = 1 << (8 * n - 1)
        flag = bool(raw & top)
        crv = raw & (top - 1)
    mt_octet = data[2 + n]
    try:
        mtype = MessageType(mt_octet)
    except ValueError:
        raise Q931Error(f"message type 0x{mt_octet:02x} not known",
                        cause=CAUSE_MESSAGE_TYPE_NONEXISTENT) from None
    elements: list[InformationElement] = []
    i = 3 + n
    while i < len(data):
        ident = data[i]
        if ident & 0x80:  # single-octet element (shift, sending complete, ...)
            elements.append(RawIE(ident, b"", True))
            i += 1
            continue
        if ident == IEId.USER_USER:
            if i + 3 > len(data):
                raise Q931Error("user-user length truncated", cause=CAUSE_INVALID_MESSAGE)
            length = int.from_bytes(data[i + 1:i + 3], "big")
            start = i + 3
        else:
            if i + 2 > len(data):
                raise Q931Error(f"element 0x{ident:02x} length truncated")
            length = data[i + 1]
            start = i + 2
        end = start + length
        if end > len(data):
            raise Q931Error(f"element 0x{ident:02x} runs past the message end")
        body = bytes(data[start:end])
        parser = _PARSERS.get(ident)
        elements.append(parser.parse(body) if parser else RawIE(ident, body))  # type: ignore[attr-defined]
        i = end
    return Q931Message(mtype, crv, flag, tuple(elements), n)
