"""The sans-IO H.225.0 callee (h323/call.py) with a fake clock: no sockets, no reactor.

The caller side here is built directly with the codec layer (TPKT, Q.931, H.225.0, H.245).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from h323 import h225, h245, q931, tpkt
from h323.call import (
    CallOffered,
    CallReleased,
    CallState,
    H245ListenerNeeded,
    H323Call,
    MediaReady,
    choose_fast_start,
    fast_start_offers,
)
from h323.h225 import Alias
from h323.h245_session import DtmfReceived
from h323.q931 import CalledPartyNumber, Cause, MessageType, Q931Message, RawIE

CRV = 0x1234
CALL_ID = bytes(range(16))
CONF_ID = bytes(range(16, 32))
CALLER_RTP = ("127.0.0.1", 40000)
LOCAL_RTP = ("127.0.0.1", 30000)


def proposals(*codecs: str) -> tuple[bytes, ...]:
    """H.323 8.1.7.1 proposals per codec: receive (nullData forward) then transmit."""
    out = []
    for n, cap in enumerate(codecs):
        rtp = h245.UnicastAddress(*CALLER_RTP)
        rtcp = h245.UnicastAddress(CALLER_RTP[0], CALLER_RTP[1] + 1)
        media = h245.MediaType("audioData", cap, 20)
        out.append(h245.encode_olc(h245.OpenLogicalChannel(
            2 * n + 2, h245.LogicalChannelParameters(h245.MediaType("nullData"), 0),
            h245.LogicalChannelParameters(media, 1, rtp, rtcp))))
        out.append(h245.encode_olc(h245.OpenLogicalChannel(
            2 * n + 1, h245.LogicalChannelParameters(media, 1, None, rtcp))))
    return tuple(out)


def message(mtype: MessageType, body: object, *ies: object, tunnelling: bool = True,
            control: tuple[bytes, ...] = (), crv: int = CRV, flag: bool = False) -> bytes:
    info = h225.UserInformation(body, h245_tunnelling=tunnelling, h245_control=control)  # type: ignore[arg-type]
    msg = Q931Message(mtype, crv, flag, tuple(ies)).with_user_user(info.encode(role="terminal"))  # type: ignore[arg-type]
    return tpkt.encode(msg.encode())


def setup(meeting: str = "1000", *, fast_start: tuple[bytes, ...] | None = None, tunnelling: bool = True,
          control: tuple[bytes, ...] = ()) -> bytes:
    body = h225.Setup(CONF_ID, CALL_ID, destination_address=(Alias("dialledDigits", meeting + "#99"),),
                      source_address=(Alias("h323-ID", "tester"),), fast_start=fast_start)
    return message(MessageType.SETUP, body, CalledPartyNumber(meeting), tunnelling=tunnelling, control=control)


def read(data: bytes) -> list[tuple[Q931Message, h225.UserInformation]]:
    out = []
    for payload in tpkt.TpktFramer().feed(data):
        msg = q931.parse(payload)
        assert msg.user_user is not None
        out.append((msg, h225.decode(msg.user_user)))
    return out


def events(call: H323Call) -> list[object]:
    out = []
    while (ev := call.next_event()) is not None:
        out.append(ev)
    return out


def h245_names(pdus: tuple[bytes, ...] | list[bytes]) -> list[str]:
    return [m.name for pdu in pdus for m in h245.decode_all(pdu)]


def offered(call: H323Call, data: bytes, now: float = 0.0) -> tuple[CallOffered, list[object]]:
    call.receive_data(data, now)
    evs = events(call)
    offer = next(e for e in evs if isinstance(e, CallOffered))
    return offer, evs


# --------------------------------------------------------------------------- Fast Start


def test_fast_start_offers_group_by_codec_in_callers_order() -> None:
    offers = fast_start_offers(proposals("g711Alaw64k", "g711Ulaw64k") + (b"\xff\x00",))
    assert [o.codec for o in offers] == ["PCMA", "PCMU"]
    assert offers[0].transmit_number == 1 and offers[0].receive_number == 2
    assert offers[0].remote_rtp == CALLER_RTP and offers[0].remote_rtcp == ("127.0.0.1", 40001)
    assert choose_fast_start(offers).codec == "PCMA"  # type: ignore[union-attr]
    assert choose_fast_start(offers, ("PCMU",)).codec == "PCMU"  # type: ignore[union-attr]
    assert choose_fast_start(fast_start_offers(proposals("g722-64k")), ("PCMU", "PCMA")) is None


def test_setup_with_fast_start_and_tunnelling_to_connect() -> None:
    call = H323Call(rng=random.Random(1), label="t")
    offer, evs = offered(call, setup(fast_start=proposals("g711Ulaw64k")))
    assert not any(isinstance(e, H245ListenerNeeded) for e in evs)
    assert offer.called_number == "1000" and offer.dialled_digits == ("1000#99",) and offer.tunnelling
    assert [o.codec for o in offer.fast_start] == ["PCMU"]
    sent = read(call.data_to_send())
    assert [(m.message_type, m.flag, i.message) for m, i in sent] == [
        (MessageType.CALL_PROCEEDING, True, "callProceeding")]
    assert sent[0][1].h245_tunnelling and sent[0][0].call_reference == CRV

    call.ring(1.0)
    call.accept(2.0, local_rtp=LOCAL_RTP, fast_start=offer.fast_start[0])
    sent = read(call.data_to_send())
    assert [m.message_type for m, _ in sent] == [MessageType.ALERTING, MessageType.CONNECT]
    connect = sent[1][1]
    assert isinstance(connect.body, h225.Connect) and connect.body.conference_id == CONF_ID
    answers = [h245.decode_olc(e) for e in connect.body.fast_start or ()]
    ours = next(o for o in answers if o.reverse is not None)
    theirs = next(o for o in answers if o.reverse is None)
    assert theirs.forward_logical_channel_number == 1
    assert theirs.forward.media_channel == h245.UnicastAddress(*LOCAL_RTP)
    assert ours.reverse is not None and ours.reverse.media_control_channel == h245.UnicastAddress("127.0.0.1", 30001)
    assert ours.reverse.data_type.codec == "g711Ulaw64k"
    # our TCS and MSD travel tunnelled in the Connect itself
    assert h245_names(connect.h245_control) == ["terminalCapabilitySet", "masterSlaveDetermination"]
    ready = [e for e in events(call) if isinstance(e, MediaReady)]
    assert ready == [MediaReady("PCMU", CALLER_RTP, ("127.0.0.1", 40001), 101, via="fast-start")]
    assert call.state is CallState.CONNECTED and call.get_timer() is not None  # T101/T106 armed


def test_tunnelled_h245_in_facility_several_pdus_and_dtmf() -> None:
    call = H323Call(rng=random.Random(2))
    offer, _ = offered(call, setup(fast_start=proposals("g711Alaw64k")))
    call.accept(1.0, local_rtp=LOCAL_RTP, fast_start=offer.fast_start[0])
    call.data_to_send()
    events(call)
    pdus = (h245.encode(h245.TerminalCapabilitySet(7, h245.audio_capabilities())) +
            h245.encode(h245.MasterSlaveDetermination(50, 1)),
            h245.encode(h245.UserInputIndication(signal="5", duration=100)))
    call.receive_data(message(MessageType.FACILITY, h225.Empty(), control=pdus), 1.5)
    sent = read(call.data_to_send())
    assert [(m.message_type, i.message) for m, i in sent] == [(MessageType.FACILITY, "empty")]
    assert h245_names(sent[0][1].h245_control) == ["terminalCapabilitySetAck", "masterSlaveDeterminationAck"]
    assert DtmfReceived("5", 100) in events(call)


def test_no_usable_fast_start_means_fast_connect_refused_and_slow_start() -> None:
    call = H323Call(rng=random.Random(3))
    offer, _ = offered(call, setup(fast_start=proposals("g722-64k")))
    assert offer.fast_start_proposed and choose_fast_start(offer.fast_start) is None
    call.data_to_send()
    call.accept(0.5, local_rtp=LOCAL_RTP)
    connect = read(call.data_to_send())[-1][1]
    assert isinstance(connect.body, h225.Connect) and connect.body.fast_connect_refused
    assert connect.body.fast_start is None


# --------------------------------------------------------------------------- separate H.245


def _h245_packets(data: bytes) -> list[str]:
    return [m.name for p in tpkt.TpktFramer().feed(data) for m in h245.decode_all(p)]


def test_separate_h245_slow_start_to_media_ready() -> None:
    call = H323Call(rng=random.Random(4))
    _, evs = offered(call, setup(tunnelling=False))
    assert any(isinstance(e, H245ListenerNeeded) for e in evs)
    call.h245_listening("127.0.0.1", 47000, 0.2)
    call.data_to_send()
    call.accept(1.0, local_rtp=LOCAL_RTP)
    connect = read(call.data_to_send())[-1][1]
    assert isinstance(connect.body, h225.Connect)
    assert connect.body.h245_address == h225.TransportAddress("127.0.0.1", 47000)
    assert not connect.h245_tunnelling and not connect.h245_control
    assert call.h245_connection_made(1.1) and not call.h245_connection_made(1.2)  # one per call
    assert _h245_packets(call.h245_data_to_send()) == ["terminalCapabilitySet", "masterSlaveDetermination"]
    tcs = h245.encode(h245.TerminalCapabilitySet(1, h245.audio_capabilities((("g711Alaw64k", 20),))))
    call.receive_h245_data(tpkt.encode(tcs) + tpkt.encode(h245.encode(h245.MasterSlaveDetermination(50, 9))), 1.2)
    call.receive_h245_data(tpkt.encode(h245.encode(h245.TerminalCapabilitySetAck(1))), 1.3)
    assert _h245_packets(call.h245_data_to_send()) == ["terminalCapabilitySetAck", "masterSlaveDeterminationAck"]
    call.receive_h245_data(tpkt.encode(h245.encode(h245.MasterSlaveDeterminationAck("master"))), 1.4)
    olc = h245.OpenLogicalChannel(1, h245.LogicalChannelParameters(
        h245.MediaType("audioData", "g711Alaw64k", 20), 1, None, h245.UnicastAddress("127.0.0.1", 40001)))
    call.receive_h245_data(tpkt.encode(h245.encode(olc)), 1.5)
    out = [m.typed() for p in tpkt.TpktFramer().feed(call.h245_data_to_send()) for m in h245.decode_all(p)]
    ack = next(m for m in out if isinstance(m, h245.OpenLogicalChannelAck))
    assert ack.media_channel == h245.UnicastAddress(*LOCAL_RTP)
    ours = next(m for m in out if isinstance(m, h245.OpenLogicalChannel))
    assert ours.forward.data_type.codec == "g711Alaw64k"  # the codec the caller sends
    call.receive_h245_data(tpkt.encode(h245.encode(h245.OpenLogicalChannelAck(
        ours.forward_logical_channel_number, 1, h245.UnicastAddress(*CALLER_RTP)))), 1.6)
    assert MediaReady("PCMA", CALLER_RTP, None, ours.forward_logical_channel_number) in events(call)
    # endSessionCommand from the caller: we answer it and release (H.323 section 8.5)
    call.receive_h245_data(tpkt.encode(h245.encode(h245.EndSessionCommand())), 2.0)
    assert _h245_packets(call.h245_data_to_send()) == ["endSessionCommand"]
    rc = read(call.data_to_send())[-1]
    assert rc[0].message_type is MessageType.RELEASE_COMPLETE and rc[0].cause == Cause(16)
    assert [e for e in events(call) if isinstance(e, CallReleased)] == [
        CallReleased("endSessionCommand", 16, "remote")]
    assert call.closed


def test_listener_ready_after_connect_uses_facility_start_h245() -> None:
    call = H323Call()
    offered(call, setup(tunnelling=False))
    call.accept(1.0, local_rtp=LOCAL_RTP)
    call.data_to_send()
    call.h245_listening("127.0.0.1", 47002, 1.5)
    fac = read(call.data_to_send())
    assert [(m.message_type, i.message) for m, i in fac] == [(MessageType.FACILITY, "facility")]
    body = fac[0][1].body
    assert isinstance(body, h225.Facility) and body.reason == "startH245"
    assert body.h245_address == h225.TransportAddress("127.0.0.1", 47002)


# --------------------------------------------------------------------------- release, status, timers


def test_reject_sends_release_complete_with_reason_cause_and_display() -> None:
    call = H323Call()
    offered(call, setup())
    call.data_to_send()
    call.reject(0.5, "securityDenied", display="refused by rule x")
    (msg, info), = read(call.data_to_send())
    assert msg.message_type is MessageType.RELEASE_COMPLETE and msg.flag
    assert isinstance(info.body, h225.ReleaseComplete) and info.body.reason == "securityDenied"
    assert msg.cause == Cause(31) and msg.display is not None and msg.display.text == "refused by rule x"
    assert events(call) == [CallReleased("securityDenied", 31, "local")]
    call.release(0.6)
    call.reject(0.7, "undefinedReason")
    assert call.data_to_send() == b"" and events(call) == [] and call.closed


def test_status_inquiry_gets_status_with_call_state() -> None:
    call = H323Call()
    offered(call, setup())
    call.data_to_send()
    call.receive_data(message(MessageType.STATUS_INQUIRY, h225.StatusInquiry(CALL_ID)), 0.2)
    (msg, _info), = read(call.data_to_send())
    assert msg.message_type is MessageType.STATUS and msg.cause == Cause(30)
    assert RawIE(0x14, bytes([9])) in msg.elements  # U9 incoming call proceeding
    call.receive_data(message(MessageType.STATUS, h225.Status(CALL_ID), Cause(30), RawIE(0x14, b"\x00")), 0.3)
    assert [type(e) for e in events(call)] == [CallReleased]


def test_release_complete_from_caller_ends_the_call_once() -> None:
    call = H323Call()
    offered(call, setup())
    call.receive_data(message(MessageType.RELEASE_COMPLETE, h225.ReleaseComplete("undefinedReason", CALL_ID),
                              Cause(16)), 1.0)
    assert events(call) == [CallReleased("undefinedReason", 16, "remote")]
    call.connection_lost(1.1)
    assert events(call) == [] and call.closed


def test_messages_of_other_call_references_are_ignored() -> None:
    call = H323Call()
    offered(call, setup())
    call.data_to_send()
    call.receive_data(message(MessageType.RELEASE_COMPLETE, h225.ReleaseComplete("undefinedReason"), crv=99), 1.0)
    assert events(call) == [] and not call.closed


def test_answer_timeout_releases_with_recovery_on_timer() -> None:
    call = H323Call(answer_timeout=30.0)
    offered(call, setup(), now=100.0)
    call.data_to_send()
    assert call.get_timer() == 130.0
    call.handle_timer(129.0)
    assert not call.closed
    call.handle_timer(130.0)
    (msg, _info), = read(call.data_to_send())
    assert msg.message_type is MessageType.RELEASE_COMPLETE and msg.cause == Cause(102)
    assert events(call) == [CallReleased("gatewayResources", 102, "timeout")]


def test_slow_start_without_media_times_out() -> None:
    call = H323Call(media_timeout=20.0)
    offered(call, setup())
    call.accept(1.0, local_rtp=LOCAL_RTP)
    call.data_to_send()
    events(call)
    while (t := call.get_timer()) is not None and not call.closed:
        call.handle_timer(t)
    released = [e for e in events(call) if isinstance(e, CallReleased)]
    assert len(released) == 1 and released[0].by == "timeout"


def test_local_release_sends_end_session_tunnelled_in_release_complete() -> None:
    call = H323Call()
    offer, _ = offered(call, setup(fast_start=proposals("g711Ulaw64k")))
    call.accept(1.0, local_rtp=LOCAL_RTP, fast_start=offer.fast_start[0])
    call.data_to_send()
    call.release(5.0)
    (msg, info), = read(call.data_to_send())
    assert msg.message_type is MessageType.RELEASE_COMPLETE and msg.cause == Cause(16)
    assert h245_names(info.h245_control) == ["endSessionCommand"]


# --------------------------------------------------------------------------- hostile input


def test_message_before_setup_closes_with_a_log_line() -> None:
    call = H323Call()
    with capture_logs() as logs:
        call.receive_data(message(MessageType.CONNECT, h225.Connect(CALL_ID)), 0.0)
    assert call.closed and call.data_to_send() == b""
    assert any(e["event"] == "h323.message.invalid" for e in logs)


def test_broken_uuie_after_setup_releases_with_the_cause_hint() -> None:
    call = H323Call()
    offered(call, setup())
    call.data_to_send()
    bad = Q931Message(MessageType.FACILITY, CRV, False, ()).with_user_user(b"\xff\xff\xff").encode()
    with capture_logs() as logs:
        call.receive_data(tpkt.encode(bad), 1.0)
    (msg, _), = read(call.data_to_send())
    assert msg.message_type is MessageType.RELEASE_COMPLETE and msg.cause is not None
    assert msg.cause.value == 100  # invalid information element contents
    assert [e.by for e in events(call) if isinstance(e, CallReleased)] == ["error"]
    assert any(e["event"] == "h323.message.invalid" for e in logs)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.booleans())
def test_random_bytes_never_raise(data: bytes, after_setup: bool) -> None:
    call = H323Call()
    if after_setup:
        call.receive_data(setup(), 0.0)
    with capture_logs():
        call.receive_data(data, 1.0)
        call.receive_data(tpkt.encode(data) if data else b"", 1.1)
        call.receive_h245_data(data, 1.2)
        if (t := call.get_timer()) is not None:
            call.handle_timer(t)
    call.data_to_send()
    events(call)


def test_random_tpkt_garbage_closes_connection() -> None:
    rng = random.Random(5)
    for _ in range(50):
        call = H323Call()
        call.receive_data(setup(), 0.0)
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(3, 200)))
        with capture_logs():
            call.receive_data(b"\x04" + junk, 1.0)  # TPKT version 4: the stream cannot be framed
        assert call.closed
        released = [e for e in events(call) if isinstance(e, CallReleased)]
        assert len(released) == 1 and released[0].by == "error"


@pytest.mark.parametrize("seed", range(3))
def test_mutated_setups_never_raise(seed: int) -> None:
    rng = random.Random(seed)
    good = setup(fast_start=proposals("g711Ulaw64k", "g711Alaw64k"))
    for _ in range(40):
        data = bytearray(good)
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(4, len(data))] = rng.randrange(256)
        call = H323Call()
        with capture_logs():
            call.receive_data(bytes(data), 0.0)
        call.data_to_send()
        events(call)
