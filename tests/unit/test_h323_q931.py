"""Q.931 messages and information elements as H.225.0 uses them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h323 import q931
from h323.errors import Q931Error
from h323.q931 import (
    BearerCapability,
    CalledPartyNumber,
    CallingPartyNumber,
    Cause,
    Display,
    MessageType,
    Q931Message,
    RawIE,
    UserUser,
)

# A Setup from the OpenH323 capture, cut after the Display element (plus a UUIE stand-in).
SETUP = bytes.fromhex("080233d80504038090a5280763616c6c657200") + b"\x7e\x00\x03\x05\xaa\xbb"


def test_parse_setup() -> None:
    m = q931.parse(SETUP)
    assert m.message_type is MessageType.SETUP
    assert m.call_reference == 0x33D8 and not m.flag and m.call_reference_length == 2
    assert m.bearer_capability == BearerCapability(0, 0, 0, 0x10, None, 5)
    assert m.display == Display("caller\x00")
    assert m.user_user == b"\xaa\xbb"
    assert m.encode() == SETUP


def test_reply_sets_the_flag() -> None:
    m = q931.parse(SETUP)
    reply = m.reply(MessageType.CALL_PROCEEDING, UserUser(b"\x01"))
    raw = reply.encode()
    assert raw[:5] == bytes([0x08, 0x02, 0xB3, 0xD8, 0x02])
    back = q931.parse(raw)
    assert back.flag and back.call_reference == 0x33D8
    assert back.reply(MessageType.STATUS).flag is False


def test_user_user_has_a_two_octet_length() -> None:
    big = bytes(300)
    m = Q931Message(MessageType.FACILITY, 7, True, (UserUser(big),))
    raw = m.encode()
    assert raw[5:8] == b"\x7e\x01\x2d"  # 301 = discriminator + 300
    assert q931.parse(raw).user_user == big


ELEMENTS = [
    BearerCapability(),
    BearerCapability(0, 8, 0, 0x18, 12, 5, b"", False),  # H323Plus callgen: multirate x12
    Cause(16),
    Cause(31, location=2, recommendation=0, diagnostics=b"\x01"),
    CalledPartyNumber("1234#99", 4, 1),
    CallingPartyNumber("555", 0, 1),
    CallingPartyNumber("555", 2, 9, presentation=1, screening=3),
    Display("Room 1"),
    RawIE(0x1E, b"\x80\x88"),  # progress indicator
    RawIE(0xA1, b"", True),     # sending complete (single octet)
    UserUser(b"\x20\x00"),
]


@pytest.mark.parametrize("mtype", list(MessageType))
def test_round_trip_every_message_type(mtype: MessageType) -> None:
    m = Q931Message(mtype, 0x1234, True, tuple(ELEMENTS))
    assert q931.parse(m.encode()) == m


def test_accessors_and_user_user_replacement() -> None:
    m = Q931Message(MessageType.RELEASE_COMPLETE, 1, elements=(Cause(17, location=1),))
    assert m.cause.value == 17 and m.cause.location == 1
    assert m.user_user is None and m.called_party_number is None
    m2 = m.with_user_user(b"x").with_user_user(b"y")
    assert m2.user_user == b"y" and sum(isinstance(e, UserUser) for e in m2.elements) == 1
    assert Cause.parse(Cause(16).contents()) == Cause(16)
    assert m.get(Cause) is m.cause


def test_zero_length_call_reference() -> None:
    m = Q931Message(MessageType.STATUS, 0, False, (), 0)
    assert m.encode() == b"\x08\x00\x7d"
    assert q931.parse(b"\x08\x00\x7d") == m


@pytest.mark.parametrize("data,cause", [
    (b"", 95), (b"\x08\x02", 95),
    (b"\x09\x02\x00\x01\x05", 95),          # not Q.931
    (b"\x08\x03\x00\x00\x01\x05", 95),      # call reference too long
    (b"\x08\x02\x00\x01\x99", 97),          # unknown message type
    (b"\x08\x02\x00\x01\x05\x28\x05ab", 95),  # element runs past the end
    (b"\x08\x02\x00\x01\x05\x7e\x00", 95),  # user-user length truncated
    (b"\x08\x02\x00\x01\x05\x08\x01\x80", 100),  # cause without a value
    (b"\x08\x02\x00\x01\x05\x70\x00", 100),  # empty called party number
    (b"\x08\x02\x00\x01\x05\x70\x02\x81\xff", 100),  # digits not IA5
])
def test_malformed_messages(data: bytes, cause: int) -> None:
    with pytest.raises(Q931Error) as info:
        q931.parse(data)
    assert info.value.cause == cause


def test_call_reference_must_fit() -> None:
    with pytest.raises(Q931Error):
        Q931Message(MessageType.SETUP, 0x8000)
    with pytest.raises(Q931Error):
        Q931Message(MessageType.SETUP, 1, call_reference_length=3)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_only_raise_the_typed_error(data: bytes) -> None:
    try:
        m = q931.parse(b"\x08\x02" + data)
    except Q931Error:
        return
    assert q931.parse(m.encode()) == m


digits = st.text(alphabet="0123456789*#", max_size=20)
element = st.one_of(
    st.builds(Cause, st.integers(0, 127), st.integers(0, 15)),
    st.builds(CalledPartyNumber, digits, st.integers(0, 7), st.integers(0, 15)),
    st.builds(CallingPartyNumber, digits, st.integers(0, 7), st.integers(0, 15)),
    st.builds(Display, st.text(alphabet=st.characters(max_codepoint=255), max_size=40)),
    st.builds(UserUser, st.binary(max_size=500)),
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(MessageType)), st.integers(0, 0x7FFF), st.booleans(),
       st.lists(element, max_size=6))
def test_built_messages_round_trip(mtype: MessageType, crv: int, flag: bool, elems: list) -> None:
    m = Q931Message(mtype, crv, flag, tuple(elems))
    assert q931.parse(m.encode()) == m
