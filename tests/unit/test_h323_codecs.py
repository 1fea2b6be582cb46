"""H.225.0 UUIEs, H.245 messages and RAS through pycrate: build, encode, decode, refuse."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h323 import h225, h245, ras
from h323.errors import Asn1Error, H225Error, H245Error, RasError
from h323.h225 import Alias, TransportAddress

GUID = bytes(range(16))
CID = bytes(range(16, 32))
LOCAL = TransportAddress("192.0.2.10", 1720)


def fast_start_proposals() -> tuple[bytes, ...]:
    rtcp = h245.UnicastAddress("192.0.2.10", 40001)
    rtp = h245.UnicastAddress("192.0.2.10", 40000)
    recv = h245.OpenLogicalChannel(
        1, h245.LogicalChannelParameters(h245.MediaType("nullData"), 0),
        h245.LogicalChannelParameters(h245.MediaType("audioData", "g711Ulaw64k", 20), 1, rtp, rtcp))
    send = h245.OpenLogicalChannel(
        2, h245.LogicalChannelParameters(h245.MediaType("audioData", "g711Ulaw64k", 20), 1, None, rtcp))
    return (h245.encode_olc(recv), h245.encode_olc(send))


BODIES = [
    h225.Setup(CID, GUID, destination_address=(Alias("dialledDigits", "4711"), Alias("h323-ID", "room")),
               source_address=(Alias("h323-ID", "caller"),), dest_call_signal_address=LOCAL,
               source_call_signal_address=TransportAddress("198.51.100.7", 40000),
               h245_address=TransportAddress("192.0.2.10", 40100), fast_start=fast_start_proposals(),
               vendor=h225.VendorInfo(b"roomgate", b"0.1")),
    h225.CallProceeding(GUID),
    h225.Alerting(GUID, fast_start=fast_start_proposals()),
    h225.Connect(GUID, h245_address=TransportAddress("2001:db8::1", 40100), conference_id=CID),
    h225.Connect(GUID, fast_connect_refused=True, conference_id=CID),
    h225.ReleaseComplete("calledPartyNotRegistered", GUID),
    h225.ReleaseComplete(None, None),
    h225.Facility("startH245", GUID, TransportAddress("192.0.2.10", 40100)),
    h225.Progress(GUID),
    h225.Empty(),
    h225.Information(GUID),
    h225.Status(GUID),
    h225.StatusInquiry(GUID),
    h225.Notify(GUID),
]


@pytest.mark.parametrize("body", BODIES, ids=lambda b: b.name)
@pytest.mark.parametrize("tunnelling", [False, True])
def test_uuie_round_trip(body: h225.Body, tunnelling: bool) -> None:
    control = (h245.encode(h245.MasterSlaveDetermination(60, 1234)),) if tunnelling else ()
    info = h225.UserInformation(body, tunnelling, control)
    for role in ("terminal", "gateway"):
        back = h225.decode(info.encode(role=role))
        assert back == info
        assert back.message == body.name


def test_setup_values() -> None:
    back = h225.decode(h225.UserInformation(BODIES[0]).encode()).body
    assert isinstance(back, h225.Setup)
    assert back.destination_address[0] == Alias("dialledDigits", "4711")
    olcs = [h245.decode_olc(x) for x in back.fast_start]
    assert olcs[0].reverse.data_type.codec == "g711Ulaw64k"
    assert olcs[0].reverse.media_channel == h245.UnicastAddress("192.0.2.10", 40000)
    assert back.protocol_identifier == h225.PROTOCOL_IDENTIFIER


@pytest.mark.parametrize("bad", [
    h225.Setup(b"short", GUID),
    h225.ReleaseComplete("noSuchReason", GUID),
    h225.Facility("startH245", GUID, TransportAddress("192.0.2.1", 70000)),
    h225.Status(None),
])
def test_unencodable_values_are_typed(bad: h225.Body) -> None:
    with pytest.raises(H225Error):
        h225.UserInformation(bad).encode()


def test_role_must_be_known() -> None:
    with pytest.raises(H225Error):
        h225.UserInformation(h225.Empty()).encode(role="mcu")


H245_MESSAGES = [
    h245.TerminalCapabilitySet(1, h245.audio_capabilities()),
    h245.TerminalCapabilitySet(2, h245.audio_capabilities((("g722-64k", 20),), ())),
    h245.TerminalCapabilitySetAck(1),
    h245.MasterSlaveDetermination(60, 0xABCDEF),
    h245.MasterSlaveDeterminationAck("slave"),
    h245.OpenLogicalChannel(1, h245.LogicalChannelParameters(
        h245.MediaType("audioData", "g711Alaw64k", 20), 1, None, h245.UnicastAddress("192.0.2.1", 5001))),
    h245.OpenLogicalChannelAck(1, 1, h245.UnicastAddress("192.0.2.1", 5000),
                               h245.UnicastAddress("192.0.2.1", 5001)),
    h245.EndSessionCommand(),
    h245.UserInputIndication(alphanumeric="1234#"),
    h245.UserInputIndication(signal="5", duration=120),
    h245.VideoFastUpdatePicture(3),
]


@pytest.mark.parametrize("msg", H245_MESSAGES, ids=lambda m: type(m).__name__)
def test_h245_round_trip(msg: object) -> None:
    raw = h245.encode(msg)
    assert h245.decode(raw).typed() == msg
    # several PDUs back to back in one TPKT / h245Control element
    assert [m.typed() for m in h245.decode_all(raw + raw)] == [msg, msg]


def test_tcs_groups_and_capabilities() -> None:
    tcs = h245.decode(h245.encode(H245_MESSAGES[0])).typed()
    assert tcs.audio == ("g711Ulaw64k", "g711Alaw64k")
    assert tcs.user_input == ("basicString", "dtmf")
    assert tcs.descriptors == [{"capabilityDescriptorNumber": 0,
                                "simultaneousCapabilities": [[1, 2], [3, 4]]}]


def test_h245_unmodelled_stays_generic() -> None:
    msg = h245.H245Message("command", "miscellaneousCommand",
                           {"logicalChannelNumber": 1, "type": ("videoFreezePicture", 0)})
    assert h245.decode(h245.encode(msg)).typed() == msg


def test_h245_refuses_garbage() -> None:
    with pytest.raises(H245Error):
        h245.decode_all(b"")
    with pytest.raises(H245Error):
        h245.decode(h245.encode(h245.TerminalCapabilitySetAck(1)) + b"\x00")
    with pytest.raises(H245Error):
        h245.encode(h245.UserInputIndication())
    with pytest.raises(H245Error):
        h245.decode_olc(b"\xff\xff\xff")


SEQ = 7
RAS_MESSAGES = [
    ras.gatekeeper_request(SEQ, TransportAddress("192.0.2.10", 1719), aliases=(Alias("h323-ID", "gw"),)),
    ras.gatekeeper_confirm(SEQ, TransportAddress("192.0.2.1", 1719), "gk"),
    ras.registration_request(SEQ, LOCAL, TransportAddress("192.0.2.10", 1719),
                             aliases=(Alias("dialledDigits", "4711"),), gatekeeper_identifier="gk",
                             time_to_live=300, vendor=h225.VendorInfo(b"roomgate", b"0.1")),
    ras.registration_request(SEQ, LOCAL, TransportAddress("192.0.2.10", 1719), keep_alive=True,
                             endpoint_identifier="ep-1", time_to_live=300),
    ras.registration_confirm(SEQ, LOCAL, "ep-1", gatekeeper_identifier="gk", time_to_live=300),
    ras.admission_request(SEQ, "ep-1", CID, GUID, 42, answer_call=True,
                          destination=(Alias("dialledDigits", "4711"),)),
    ras.admission_confirm(SEQ, LOCAL, routed=True),
    ras.disengage_request(SEQ, "ep-1", CID, GUID, 42, answered_call=True),
    ras.disengage_confirm(SEQ),
    ras.unregistration_request(SEQ, LOCAL, endpoint_identifier="ep-1"),
    ras.unregistration_confirm(SEQ),
    ras.location_request(SEQ, (Alias("h323-ID", "room"),), TransportAddress("192.0.2.10", 1719)),
    ras.info_request(SEQ, 0),
]


@pytest.mark.parametrize("msg", RAS_MESSAGES, ids=lambda m: m.abbreviation)
def test_ras_round_trip(msg: ras.RasMessage) -> None:
    back = ras.decode(msg.encode())
    assert back == msg
    assert back.request_seq_num == SEQ


def test_ras_accessors() -> None:
    rrq = ras.decode(RAS_MESSAGES[3].encode())
    assert rrq.keep_alive and rrq.endpoint_identifier == "ep-1" and rrq.time_to_live == 300
    assert rrq.addresses("callSignalAddress") == (LOCAL,)
    arq = ras.decode(RAS_MESSAGES[5].encode())
    assert arq.aliases("destinationInfo") == (Alias("dialledDigits", "4711"),)
    with pytest.raises(RasError):
        ras.registration_request(1, LOCAL, LOCAL, keep_alive=True)


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xff" * 8, b"d1:ad2:id20:", b"\x03\x00\x00\x04"])
def test_ras_refuses_non_ras(data: bytes) -> None:
    with pytest.raises(RasError):
        ras.decode(data)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_only_raise_typed_errors(data: bytes) -> None:
    for decode in (h225.decode, h245.decode_all, ras.decode, h245.decode_olc):
        try:
            decode(data)
        except Asn1Error:
            pass
