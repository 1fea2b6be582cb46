"""The sans-IO H.245 procedures (h323/h245_session.py) with a fake clock."""

from __future__ import annotations

import random

import pytest

from h323 import h245
from h323.h245_session import (
    N100,
    PEER_OLC_GRACE,
    T101_CAPABILITY,
    DtmfReceived,
    H245Session,
    MediaReady,
    ProcedureFailed,
    SessionEnded,
    master_slave_decision,
)
from tests.support.h245_driver import events, feed, sent

LOCAL = ("127.0.0.1", 30000)
PEER_RTP = ("127.0.0.1", 40000)


@pytest.mark.parametrize(("local", "remote", "expected"), [
    ((60, 5), (50, 9), "master"),
    ((50, 5), (60, 9), "slave"),
    ((60, 5), (60, 6), "master"),  # (remote - local) mod 2**24 = 1 < 2**23
    ((60, 6), (60, 5), "slave"),
    ((60, 5), (60, 5), None),
    ((60, 0), (60, 1 << 23), None),
    ((60, (1 << 24) - 1), (60, 0), "master"),  # wraps around
])
def test_master_slave_decision(local: tuple[int, int], remote: tuple[int, int], expected: str | None) -> None:
    assert master_slave_decision(*local, *remote) == expected


def test_start_sends_tcs_with_g711_g722_and_dtmf_then_msd() -> None:
    s = H245Session(rng=random.Random(1))
    s.start(0.0)
    s.start(0.1)  # idempotent
    tcs, msd = sent(s)
    assert isinstance(tcs, h245.TerminalCapabilitySet)
    assert set(tcs.audio) == {"g711Ulaw64k", "g711Alaw64k", "g722-64k"}
    assert "dtmf" in tcs.user_input
    assert isinstance(msd, h245.MasterSlaveDetermination) and msd.terminal_type == 60


def test_full_slow_start_exchange_to_media_ready() -> None:
    s = H245Session(local_rtp=LOCAL, rng=random.Random(2))
    s.start(0.0)
    sent(s)
    feed(s, 0.1, h245.TerminalCapabilitySet(3, h245.audio_capabilities((("g711Alaw64k", 20),))),
         h245.MasterSlaveDetermination(50, 123), h245.TerminalCapabilitySetAck(1))
    out = sent(s)
    assert h245.TerminalCapabilitySetAck(3) in out and h245.MasterSlaveDeterminationAck("slave") in out
    assert s.msd_status == "master"
    # nothing opened yet: we give the peer PEER_OLC_GRACE to open first
    assert not any(isinstance(m, h245.OpenLogicalChannel) for m in out)
    assert s.get_timer() == pytest.approx(0.1 + PEER_OLC_GRACE)
    s.handle_timer(0.1 + PEER_OLC_GRACE)
    olc, = sent(s)
    assert isinstance(olc, h245.OpenLogicalChannel) and olc.forward.data_type.codec == "g711Alaw64k"
    assert olc.forward.media_control_channel == h245.UnicastAddress("127.0.0.1", 30001)
    feed(s, 0.7, h245.OpenLogicalChannelAck(olc.forward_logical_channel_number, 1, h245.UnicastAddress(*PEER_RTP)))
    assert events(s) == [MediaReady("PCMA", PEER_RTP, None, olc.forward_logical_channel_number)]
    assert s.get_timer() is None


def test_peer_olc_waits_for_local_media_and_sets_our_codec() -> None:
    s = H245Session(rng=random.Random(3))
    olc = h245.OpenLogicalChannel(1, h245.LogicalChannelParameters(
        h245.MediaType("audioData", "g711Ulaw64k", 20), 1, None, h245.UnicastAddress("127.0.0.1", 40001)))
    feed(s, 0.0, olc)
    assert sent(s) == []  # no RTP address to give yet
    s.set_local_media(LOCAL, 0.5)
    ack, = sent(s)
    assert ack == h245.OpenLogicalChannelAck(1, 1, h245.UnicastAddress(*LOCAL), h245.UnicastAddress("127.0.0.1", 30001))


def test_video_and_bidirectional_olcs_are_rejected() -> None:
    s = H245Session(local_rtp=LOCAL)
    video = h245.OpenLogicalChannel(5, h245.LogicalChannelParameters(
        h245.MediaType("videoData", "h261VideoCapability", {"qcifMPI": 1, "temporalSpatialTradeOffCapability": False,
                                                            "maxBitRate": 100, "stillImageTransmission": False}),
        2, None, None))
    feed(s, 0.0, video)
    reject, = list(sent(s))
    assert isinstance(reject, h245.H245Message) and reject.name == "openLogicalChannelReject"
    assert reject.value["cause"][0] == "dataTypeNotSupported"


def test_t101_expiry_fails_the_capability_exchange() -> None:
    s = H245Session()
    s.start(10.0)
    sent(s)
    assert s.get_timer() == 10.0 + T101_CAPABILITY
    s.handle_timer(10.0 + T101_CAPABILITY)
    evs = events(s)
    assert ProcedureFailed("tcs", "no TerminalCapabilitySetAck before T101") in evs
    assert any(isinstance(e, ProcedureFailed) and e.procedure == "msd" for e in evs)


def test_indeterminate_msd_retries_then_rejects() -> None:
    s = H245Session(rng=random.Random(4))
    s.start(0.0)
    sent(s)
    for i in range(N100):
        feed(s, 1.0 + i, h245.MasterSlaveDetermination(60, s._sdn))  # the same number: indeterminate
    out = sent(s)
    assert sum(isinstance(m, h245.MasterSlaveDetermination) for m in out) == N100 - 1
    assert any(isinstance(m, h245.H245Message) and m.name == "masterSlaveDeterminationReject" for m in out)
    assert any(isinstance(e, ProcedureFailed) and e.procedure == "msd" for e in events(s))


def test_user_input_round_trip_delay_close_and_unknown_requests() -> None:
    s = H245Session(local_rtp=LOCAL)
    feed(s, 0.0, h245.UserInputIndication(alphanumeric="12#"), h245.UserInputIndication(signal="*", duration=80))
    assert events(s) == [DtmfReceived("1"), DtmfReceived("2"), DtmfReceived("#"), DtmfReceived("*", 80)]
    feed(s, 0.1, h245.H245Message("request", "roundTripDelayRequest", {"sequenceNumber": 9}),
         h245.H245Message("request", "closeLogicalChannel", {"forwardLogicalChannelNumber": 1,
                                                             "source": ("user", 0)}),
         h245.H245Message("request", "maintenanceLoopRequest", {"type": ("systemLoop", 0)}))
    names = [m.name if isinstance(m, h245.H245Message) else type(m).__name__ for m in sent(s)]
    assert names == ["roundTripDelayResponse", "closeLogicalChannelAck", "functionNotUnderstood"]


def test_end_session_is_answered_once() -> None:
    s = H245Session()
    s.start(0.0)
    sent(s)
    feed(s, 1.0, h245.EndSessionCommand())
    assert sent(s) == [h245.EndSessionCommand("disconnect")]
    assert events(s) == [SessionEnded("disconnect")]
    s.end_session()
    feed(s, 1.1, h245.EndSessionCommand())
    assert sent(s) == [] and events(s) == [] and s.get_timer() is None


def test_undecodable_pdu_raises_typed_error() -> None:
    s = H245Session()
    with pytest.raises(h245.H245Error):
        s.receive_pdu(b"\xff\xff\xff\xff", 0.0)
