"""The gateway connects out to the caller's H.245 listener (H.323 8.2.3; issue 5, slice 4).

Sans-IO with a fake clock: the caller side is built with the codec layer (tests/unit/test_h323_call
helpers).  Exactly one H.245 connection must result, whichever side opens it first.
"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from h323 import h225, q931
from h323.call import H245ConnectNeeded, H245ListenerNeeded, H323Call
from h323.h225 import Alias, TransportAddress
from h323.q931 import CalledPartyNumber, MessageType
from tests.unit.test_h323_call import (
    CALL_ID,
    CONF_ID,
    LOCAL_RTP,
    _h245_packets,
    events,
    message,
    offered,
    read,
)

CALLER_H245 = ("127.0.0.1", 46000)


def setup_with_h245(address: tuple[str, int] = CALLER_H245, *, tunnelling: bool = False) -> bytes:
    body = h225.Setup(CONF_ID, CALL_ID, destination_address=(Alias("dialledDigits", "1000"),),
                      source_address=(Alias("h323-ID", "tester"),), h245_address=TransportAddress(*address))
    return message(MessageType.SETUP, body, CalledPartyNumber("1000"), tunnelling=tunnelling)


def kinds(evs: list[object]) -> list[type]:
    return [type(e) for e in evs if isinstance(e, H245ConnectNeeded | H245ListenerNeeded)]


def test_setup_h245_address_means_we_connect_out_and_offer_no_listener() -> None:
    call = H323Call(rng=random.Random(3), peer=("127.0.0.1", 50000))
    _, evs = offered(call, setup_with_h245())
    assert kinds(evs) == []  # nothing until we answer; no listener at all
    call.data_to_send()
    call.accept(1.0, local_rtp=LOCAL_RTP)
    connect = read(call.data_to_send())[-1][1]
    assert isinstance(connect.body, h225.Connect) and connect.body.h245_address is None
    assert [e for e in events(call) if isinstance(e, H245ConnectNeeded)] == [H245ConnectNeeded(*CALLER_H245)]
    assert call.h245_connection_made(1.1)
    assert _h245_packets(call.h245_data_to_send()) == ["terminalCapabilitySet", "masterSlaveDetermination"]
    assert not call.h245_connection_made(1.2)  # the caller's own attempt (or a second one): refused
    call.h245_connect_failed(1.3)  # a late failure report changes nothing
    assert kinds(events(call)) == []


def test_connect_failure_falls_back_to_our_listener_in_facility() -> None:
    call = H323Call()
    offered(call, setup_with_h245())
    call.accept(1.0, local_rtp=LOCAL_RTP)
    call.data_to_send()
    events(call)
    call.h245_connect_failed(2.0)
    assert kinds(events(call)) == [H245ListenerNeeded]
    call.h245_listening("127.0.0.1", 47010, 2.1)
    fac = read(call.data_to_send())
    body = fac[0][1].body
    assert isinstance(body, h225.Facility) and body.reason == "startH245"
    assert body.h245_address == TransportAddress("127.0.0.1", 47010)
    assert call.h245_connection_made(2.5)
    assert _h245_packets(call.h245_data_to_send()) == ["terminalCapabilitySet", "masterSlaveDetermination"]


def test_an_h245_address_on_another_host_is_refused_and_we_listen() -> None:
    call = H323Call(peer=("127.0.0.1", 50000))
    _, evs = offered(call, setup_with_h245(("192.0.2.9", 46000)))
    assert kinds(evs) == [H245ListenerNeeded]  # our own listener, as for a Setup without address
    call.accept(1.0, local_rtp=LOCAL_RTP)
    assert kinds(events(call)) == []
    assert call.peer_h245_address is None


def test_tunnelling_ignores_the_h245_address() -> None:
    call = H323Call()
    offered(call, setup_with_h245(tunnelling=True))
    call.accept(1.0, local_rtp=LOCAL_RTP)
    assert kinds(events(call)) == []


def test_facility_start_h245_from_the_caller_after_connect_makes_us_connect_out() -> None:
    from tests.unit.test_h323_call import setup

    call = H323Call()
    offered(call, setup(tunnelling=False))  # no address in Setup: our listener as before
    call.h245_listening("127.0.0.1", 47020, 0.1)
    call.accept(1.0, local_rtp=LOCAL_RTP)
    call.data_to_send()
    events(call)
    fac = h225.Facility("startH245", CALL_ID, TransportAddress(*CALLER_H245), CONF_ID)
    call.receive_data(message(MessageType.FACILITY, fac, tunnelling=False, flag=False), 1.5)
    assert [e for e in events(call) if isinstance(e, H245ConnectNeeded)] == [H245ConnectNeeded(*CALLER_H245)]
    # the caller also connects to our listener first: that one wins, ours is refused
    assert call.h245_connection_made(1.6)
    assert not call.h245_connection_made(1.7)
    # a second startH245 once connected is ignored
    call.receive_data(message(MessageType.FACILITY, fac, tunnelling=False), 1.8)
    assert kinds(events(call)) == []


@given(st.permutations(["ours_ok", "theirs_ok", "fail"]))
def test_only_one_h245_connection_whatever_the_order(order: list[str]) -> None:
    call = H323Call()
    offered(call, setup_with_h245())
    call.accept(1.0, local_rtp=LOCAL_RTP)
    accepted = 0
    now = 2.0
    for step in order:
        now += 0.1
        if step == "fail":
            call.h245_connect_failed(now)
        else:
            accepted += call.h245_connection_made(now)
    assert accepted == 1 and call.h245_connected
    assert not call.closed


def test_setup_message_check() -> None:
    """The Setup we feed really carries the address (guards the test helper)."""
    [(msg, info)] = read(setup_with_h245())
    assert msg.message_type is MessageType.SETUP and isinstance(info.body, h225.Setup)
    assert info.body.h245_address == TransportAddress(*CALLER_H245)
    assert isinstance(msg, q931.Q931Message)
