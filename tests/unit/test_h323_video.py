"""H.264 video channels in H.245 (H.241 generic capability, H.245 8.4, H.323 8.1.7.1 / 8.5).

The codec pieces (``h323.h245.H264Capability``, video OLCs, CloseLogicalChannel), the session's
video channels (``h323.h245_session``) and the Fast Start video pair of ``h323.call``, with a
fake clock.  Values are compared decoded (PER extension bitmaps may legally differ).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h323 import h245
from h323.call import H323Call, fast_start_video_offers
from h323.errors import H245Error
from h323.h245_session import (
    T103_LOGICAL_CHANNEL,
    ChannelClosed,
    H245Session,
    MediaReady,
    VideoChannel,
)
from tests.support.h245_driver import events, feed, sent

LOCAL = ("127.0.0.1", 30000)
LOCAL_VIDEO = ("127.0.0.1", 30002)
PEER_RTP = ("127.0.0.1", 40000)
PEER_VIDEO = ("127.0.0.1", 40002)
H264 = h245.H264Capability(max_bit_rate=5120, level=h245.H241_LEVELS["3"])
OUR_VIDEO = h245.H264Capability(max_bit_rate=20_000)


def peer_tcs(video: h245.H264Capability | None) -> h245.TerminalCapabilitySet:
    caps = h245.audio_capabilities((("g711Ulaw64k", 20),))
    if video is not None:
        caps += (video.table_entry(len(caps) + 1),)
    return h245.TerminalCapabilitySet(7, caps)


def audio_olc(number: int = 1) -> h245.OpenLogicalChannel:
    return h245.OpenLogicalChannel(number, h245.LogicalChannelParameters(
        h245.MediaType("audioData", "g711Ulaw64k", 20), 1, None, h245.UnicastAddress("127.0.0.1", 40001), False))


def video_olc(number: int = 3, pt: int | None = 97) -> h245.OpenLogicalChannel:
    return h245.OpenLogicalChannel(number, h245.LogicalChannelParameters(
        H264.media_type(), 2, None, h245.UnicastAddress("127.0.0.1", 40003), None, pt))


def our_channels(out: list[Any]) -> tuple[int, int]:
    """Our audio and video channel numbers among the PDUs ``out``."""
    olcs = {o.forward.data_type.kind: o.forward_logical_channel_number
            for o in out if isinstance(o, h245.OpenLogicalChannel)}
    return olcs["audioData"], olcs["videoData"]


def video_session(peer_video: h245.H264Capability | None = H264) -> tuple[H245Session, list[Any]]:
    """A session with video, after the peer's TCS (with ``peer_video``), MSD, acks and OLCs."""
    s = H245Session(local_rtp=LOCAL, video=OUR_VIDEO, local_video=LOCAL_VIDEO, rng=random.Random(3))
    s.start(0.0)
    sent(s)
    feed(s, 0.1, peer_tcs(peer_video), h245.MasterSlaveDetermination(50, 1), h245.TerminalCapabilitySetAck(1),
         audio_olc(), *((video_olc(),) if peer_video is not None else ()))
    return s, sent(s)


# -- the codec --------------------------------------------------------------------------------


def test_h264_capability_encodes_as_h241_generic_capability() -> None:
    value = h245.H264Capability(max_bit_rate=3840, level=h245.H241_LEVELS["2.2"]).to_asn1()
    assert value == {"capabilityIdentifier": ("standard", (0, 0, 8, 241, 0, 0, 1)), "maxBitRate": 3840,
                     "collapsing": [{"parameterIdentifier": ("standard", 41), "parameterValue": ("booleanArray", 64)},
                                    {"parameterIdentifier": ("standard", 42), "parameterValue": ("unsignedMin", 57)}]}


def test_tcs_with_h264_round_trips_to_the_same_values() -> None:
    tcs = peer_tcs(H264)
    back = h245.decode(h245.encode(tcs)).typed()
    assert back.capabilities == tcs.capabilities
    assert back.h264 == H264 and back.h264.max_bps == 512_000
    assert back.audio == ("g711Ulaw64k",)
    # each kind is an alternative set of its own in the one descriptor
    (desc,) = back.descriptors
    assert desc["simultaneousCapabilities"] == [[1], [2, 3], [4]]
    assert peer_tcs(None).h264 is None


def test_h264_capability_defaults_missing_parameters_and_refuses_other_identifiers() -> None:
    bare = {"capabilityIdentifier": ("standard", h245.H264_OID), "maxBitRate": 100}
    assert h245.H264Capability.from_asn1(bare) == h245.H264Capability(100, 64, h245.H241_LEVELS["1"])
    with pytest.raises(ValueError):
        h245.H264Capability.from_asn1({"capabilityIdentifier": ("standard", (0, 0, 8, 245, 1, 0, 0))})


def test_h264_olc_round_trips_with_payload_type_and_session() -> None:
    olc = video_olc(pt=96)
    back = h245.decode(h245.encode(olc)).typed()
    assert back == olc
    assert back.forward.data_type.kind == "videoData" and back.forward.data_type.codec == "h264"
    assert back.forward.session_id == 2 and back.forward.payload_type == 96
    assert h245.decode_olc(h245.encode_olc(olc)) == olc  # the Fast Start form


def test_close_logical_channel_round_trips() -> None:
    clc = h245.CloseLogicalChannel(102)
    assert h245.decode(h245.encode(clc)).typed() == clc
    assert h245.decode(h245.encode(h245.CloseLogicalChannel(5, "lcse"))).typed().source == "lcse"


@settings(deadline=None)  # PER through pycrate: slow on a loaded machine, not wrong
@given(rate=st.integers(0, (1 << 32) - 1), profile=st.integers(0, 127), level=st.integers(0, 255))
def test_any_h264_capability_round_trips_in_a_tcs(rate: int, profile: int, level: int) -> None:
    cap = h245.H264Capability(rate, profile, level)
    back = h245.decode(h245.encode(h245.TerminalCapabilitySet(1, (cap.table_entry(1),)))).typed()
    assert back.h264 == cap


@settings(deadline=None)
@given(st.dictionaries(st.sampled_from(["capabilityIdentifier", "maxBitRate", "collapsing"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=3),
                                 st.lists(st.dictionaries(st.text(max_size=3), st.integers()), max_size=2))))
def test_hostile_generic_capability_values_are_typed_refusals(value: dict[str, Any]) -> None:
    try:
        h245.H264Capability.from_asn1(value)
    except (KeyError, TypeError, ValueError):
        pass


# -- the session ------------------------------------------------------------------------------


def test_our_tcs_lists_h264_only_with_video() -> None:
    s = H245Session(video=OUR_VIDEO, local_video=LOCAL_VIDEO)
    s.start(0.0)
    tcs = sent(s)[0]
    assert tcs.h264 == OUR_VIDEO
    (video,) = [c for c in tcs.capabilities if c.kind == "receiveVideoCapability"]
    assert video.name == "genericVideoCapability"
    plain = H245Session()
    plain.start(0.0)
    assert sent(plain)[0].h264 is None


def test_peer_video_olc_is_acked_with_our_video_addresses_and_ours_opened() -> None:
    _s, out = video_session()
    acks = {m.forward_logical_channel_number: m for m in out if isinstance(m, h245.OpenLogicalChannelAck)}
    assert acks[3] == h245.OpenLogicalChannelAck(3, 2, h245.UnicastAddress(*LOCAL_VIDEO),
                                                 h245.UnicastAddress("127.0.0.1", LOCAL_VIDEO[1] + 1))
    assert acks[1].media_channel == h245.UnicastAddress(*LOCAL) and acks[1].session_id == 1
    olcs = [m for m in out if isinstance(m, h245.OpenLogicalChannel)]
    (video,) = [o for o in olcs if o.forward.data_type.kind == "videoData"]
    fwd = video.forward
    assert fwd.session_id == 2 and fwd.payload_type == 97  # the peer's own payload type
    assert fwd.media_control_channel == h245.UnicastAddress("127.0.0.1", LOCAL_VIDEO[1] + 1)
    # what we send stays within what both sides take: the peer's rate and level
    assert h245.H264Capability.from_asn1(fwd.data_type.param) == h245.H264Capability(5120, 64, H264.level)


def test_media_ready_waits_for_our_video_channel_and_carries_it() -> None:
    s, out = video_session()
    audio_out, video_out = our_channels(out)
    feed(s, 0.2, h245.OpenLogicalChannelAck(audio_out, 1, h245.UnicastAddress(*PEER_RTP)))
    assert events(s) == []  # audio is open, video is not settled yet
    feed(s, 0.3, h245.OpenLogicalChannelAck(video_out, 2, h245.UnicastAddress(*PEER_VIDEO),
                                             h245.UnicastAddress("127.0.0.1", PEER_VIDEO[1] + 1)))
    (ready,) = events(s)
    assert ready == MediaReady("PCMU", PEER_RTP, None, audio_out, video=VideoChannel(
        PEER_VIDEO, ("127.0.0.1", PEER_VIDEO[1] + 1), video_out, 97, H264))


@pytest.mark.parametrize("how", ["reject", "t103"])
def test_a_video_channel_that_does_not_open_leaves_an_audio_call(how: str) -> None:
    s, out = video_session()
    audio_out, video_out = our_channels(out)
    feed(s, 0.2, h245.OpenLogicalChannelAck(audio_out, 1, h245.UnicastAddress(*PEER_RTP)))
    if how == "reject":
        feed(s, 0.3, h245.H245Message("response", "openLogicalChannelReject", {
            "forwardLogicalChannelNumber": video_out, "cause": ("dataTypeNotSupported", 0)}))
    else:
        assert s.get_timer() == pytest.approx(0.1 + T103_LOGICAL_CHANNEL)
        s.handle_timer(0.1 + T103_LOGICAL_CHANNEL)
    (ready,) = events(s)
    assert isinstance(ready, MediaReady) and ready.video is None and ready.remote_rtp == PEER_RTP


def test_without_h264_in_the_peer_tcs_no_video_channel_is_opened() -> None:
    s, out = video_session(peer_video=None)
    olcs = [o for o in out if isinstance(o, h245.OpenLogicalChannel)]
    assert [o.forward.data_type.kind for o in olcs] == ["audioData"]
    feed(s, 0.2, h245.OpenLogicalChannelAck(olcs[0].forward_logical_channel_number, 1, h245.UnicastAddress(*PEER_RTP)))
    (ready,) = events(s)
    assert ready.video is None


def test_a_video_olc_to_a_session_without_video_is_rejected() -> None:
    s = H245Session(local_rtp=LOCAL)
    feed(s, 0.0, video_olc())
    (reject,) = sent(s)
    assert reject.name == "openLogicalChannelReject"
    assert reject.value == {"forwardLogicalChannelNumber": 3, "cause": ("dataTypeNotSupported", 0)}


def test_a_video_olc_before_we_answered_waits_then_is_acked_or_rejected() -> None:
    s = H245Session()
    feed(s, 0.0, video_olc())
    assert sent(s) == []
    s.set_local_media(LOCAL, 0.1, video=OUR_VIDEO, local_video=LOCAL_VIDEO)
    (ack,) = sent(s)
    assert ack == h245.OpenLogicalChannelAck(3, 2, h245.UnicastAddress(*LOCAL_VIDEO),
                                             h245.UnicastAddress("127.0.0.1", LOCAL_VIDEO[1] + 1))
    audio_only = H245Session()
    feed(audio_only, 0.0, video_olc())
    audio_only.set_local_media(LOCAL, 0.1)
    assert sent(audio_only)[0].name == "openLogicalChannelReject"


def test_peer_closing_its_video_channel_is_acked_and_reported() -> None:
    s, _ = video_session()
    assert s.request_fast_update() == 3  # the peer's video channel, not its audio one (1)
    sent(s)
    feed(s, 1.0, h245.CloseLogicalChannel(3))
    (ack,) = sent(s)
    assert (ack.name, ack.value) == ("closeLogicalChannelAck", {"forwardLogicalChannelNumber": 3})
    assert ChannelClosed(3, "video") in events(s)
    assert s.request_fast_update() == 1  # no video channel from the peer any more
    feed(s, 1.1, h245.CloseLogicalChannel(1))
    assert ChannelClosed(1, "audio") in events(s)


def test_ending_the_session_closes_our_video_channel_first() -> None:
    s, out = video_session()
    video_out = next(o.forward_logical_channel_number for o in out
                     if isinstance(o, h245.OpenLogicalChannel) and o.forward.data_type.kind == "videoData")
    feed(s, 0.3, h245.OpenLogicalChannelAck(video_out, 2, h245.UnicastAddress(*PEER_VIDEO)))
    sent(s)
    s.end_session()
    assert sent(s) == [h245.CloseLogicalChannel(video_out), h245.EndSessionCommand("disconnect")]


# -- Fast Start ---------------------------------------------------------------------------------


def video_proposals(pt: int = 96) -> tuple[bytes, ...]:
    rtp, rtcp = h245.UnicastAddress(*PEER_VIDEO), h245.UnicastAddress("127.0.0.1", PEER_VIDEO[1] + 1)
    receive = h245.OpenLogicalChannel(4, h245.LogicalChannelParameters(h245.MediaType("nullData"), 0),
                                      h245.LogicalChannelParameters(H264.media_type(), 2, rtp, rtcp, None, pt))
    transmit = h245.OpenLogicalChannel(3, h245.LogicalChannelParameters(H264.media_type(), 2, None, rtcp, None, pt))
    return (h245.encode_olc(receive), h245.encode_olc(transmit))


def test_fast_start_video_proposals_are_paired() -> None:
    (offer,) = fast_start_video_offers(video_proposals() + (b"\xff\x00",))
    assert (offer.codec, offer.transmit_number, offer.receive_number) == ("H264", 3, 4)
    assert offer.remote_rtp == PEER_VIDEO and offer.remote_rtcp == ("127.0.0.1", PEER_VIDEO[1] + 1)
    assert offer.video == H264 and offer.payload_type == 96
    assert fast_start_video_offers(video_proposals()[:1]) == ()  # a receive proposal alone is no pair
    assert fast_start_video_offers(None) == ()


def _setup_with_video() -> bytes:
    from h323 import h225, q931, tpkt

    audio_rtp, audio_rtcp = h245.UnicastAddress(*PEER_RTP), h245.UnicastAddress("127.0.0.1", PEER_RTP[1] + 1)
    g711 = h245.MediaType("audioData", "g711Ulaw64k", 20)
    audio = (h245.encode_olc(h245.OpenLogicalChannel(2, h245.LogicalChannelParameters(h245.MediaType("nullData"), 0),
                                                     h245.LogicalChannelParameters(g711, 1, audio_rtp, audio_rtcp))),
             h245.encode_olc(h245.OpenLogicalChannel(1, h245.LogicalChannelParameters(g711, 1, None, audio_rtcp))))
    body = h225.Setup(b"c" * 16, b"i" * 16, fast_start=audio + video_proposals())
    info = h225.UserInformation(body, h245_tunnelling=True)
    msg = q931.Q931Message(q931.MessageType.SETUP, 9, False, (q931.BearerCapability(),
                                                             q931.CalledPartyNumber("1000", 0, 1)))
    return tpkt.encode(msg.with_user_user(info.encode(role="terminal")).encode())


def test_accept_answers_the_video_pair_with_our_video_addresses() -> None:
    from h323 import h225, q931, tpkt

    call = H323Call(peer=("127.0.0.1", 5000), rng=random.Random(4))
    call.receive_data(_setup_with_video(), 0.0)
    offered = call.next_event()
    assert offered is not None and len(offered.fast_start_video) == 1  # type: ignore[union-attr]
    choice, video = offered.fast_start[0], offered.fast_start_video[0]  # type: ignore[union-attr]
    call.data_to_send()
    call.accept(0.1, local_rtp=LOCAL, fast_start=choice, video=OUR_VIDEO, local_video=LOCAL_VIDEO,
                fast_start_video=video)
    ready = call.next_event()
    assert isinstance(ready, MediaReady) and ready.video == VideoChannel(
        PEER_VIDEO, ("127.0.0.1", PEER_VIDEO[1] + 1), 102, 96, H264)
    connect = next(q931.parse(p) for p in tpkt.TpktFramer().feed(call.data_to_send())
                   if q931.parse(p).message_type is q931.MessageType.CONNECT)
    body = h225.decode(connect.user_user).body  # type: ignore[arg-type]
    assert isinstance(body, h225.Connect) and body.fast_start is not None
    answer = [h245.decode_olc(e) for e in body.fast_start]
    video_answer = [o for o in answer if "videoData" in (o.forward.data_type.kind,
                                                         o.reverse.data_type.kind if o.reverse else "")]
    ours, theirs = video_answer
    assert ours.forward_logical_channel_number == 102 and ours.reverse is not None
    assert ours.reverse.session_id == 2 and ours.reverse.payload_type == 96
    assert ours.reverse.media_control_channel == h245.UnicastAddress("127.0.0.1", LOCAL_VIDEO[1] + 1)
    assert theirs.forward_logical_channel_number == 3
    assert theirs.forward.media_channel == h245.UnicastAddress(*LOCAL_VIDEO)
    # our tunnelled TCS lists H.264, and a keyframe request names the caller's video channel
    tcs = next(m.typed() for e in h225.decode(connect.user_user).h245_control  # type: ignore[arg-type]
               for m in h245.decode_all(e) if m.name == "terminalCapabilitySet")
    assert tcs.h264 == OUR_VIDEO
    assert call.request_keyframe(0.2)
    assert call.session is not None and call.session.request_fast_update() == 1  # no H.245 video OLC
    fast = [m for p in tpkt.TpktFramer().feed(call.data_to_send()) for e in
            h225.decode(q931.parse(p).user_user).h245_control for m in h245.decode_all(e)]  # type: ignore[arg-type]
    assert h245.VideoFastUpdatePicture(3) in [m.typed() for m in fast]


def test_accept_without_a_video_choice_answers_audio_only() -> None:
    from h323 import h225, q931, tpkt

    call = H323Call(peer=("127.0.0.1", 5000), rng=random.Random(5))
    call.receive_data(_setup_with_video(), 0.0)
    offered = call.next_event()
    call.data_to_send()
    call.accept(0.1, local_rtp=LOCAL, fast_start=offered.fast_start[0])  # type: ignore[union-attr]
    ready = call.next_event()
    assert isinstance(ready, MediaReady) and ready.video is None
    connect = next(q931.parse(p) for p in tpkt.TpktFramer().feed(call.data_to_send())
                   if q931.parse(p).message_type is q931.MessageType.CONNECT)
    body = h225.decode(connect.user_user).body  # type: ignore[arg-type]
    assert isinstance(body, h225.Connect) and body.fast_start is not None and len(body.fast_start) == 2


def test_undecodable_capability_in_a_tcs_is_no_h264() -> None:
    tcs = h245.TerminalCapabilitySet(1, (h245.Capability(1, "receiveVideoCapability", "genericVideoCapability", {
        "capabilityIdentifier": ("standard", h245.H264_OID), "maxBitRate": "x"}),))
    assert tcs.h264 is None
    with pytest.raises(H245Error):
        h245.encode(tcs)  # and it cannot be sent either: a typed error


def test_without_a_peer_video_channel_ours_opens_after_the_grace_with_our_payload_type() -> None:
    from h323.h245_session import H264_PAYLOAD_TYPE, PEER_OLC_GRACE

    s = H245Session(local_rtp=LOCAL, video=OUR_VIDEO, local_video=LOCAL_VIDEO, rng=random.Random(6))
    s.start(0.0)
    sent(s)
    feed(s, 0.1, peer_tcs(H264), h245.MasterSlaveDetermination(50, 1), h245.TerminalCapabilitySetAck(1), audio_olc())
    assert not any(isinstance(m, h245.OpenLogicalChannel) and m.forward.data_type.kind == "videoData" for m in sent(s))
    assert s.get_timer() == pytest.approx(0.1 + PEER_OLC_GRACE)
    s.handle_timer(0.1 + PEER_OLC_GRACE)
    (video,) = sent(s)
    assert video.forward.data_type.kind == "videoData" and video.forward.payload_type == H264_PAYLOAD_TYPE


@settings(deadline=None)
@given(st.binary(max_size=40))
def test_hostile_bytes_after_a_video_olc_are_a_typed_error_never_a_crash(tail: bytes) -> None:
    s = H245Session(local_rtp=LOCAL, video=OUR_VIDEO, local_video=LOCAL_VIDEO, rng=random.Random(7))
    good = h245.encode(video_olc())
    try:
        s.receive_pdu(good[: len(good) // 2] + tail, 0.0)
    except H245Error:
        pass
    for message in sent(s):  # whatever decoded was answered with a well-formed PDU
        assert isinstance(message, h245.OpenLogicalChannelAck | h245.H245Message)


def test_tshark_decodes_our_video_pdus(tmp_path: Any) -> None:
    """What the session sends for video -- TCS with H.264, the H.264 OLC, the ack of the peer's,
    CloseLogicalChannel -- decodes in Wireshark's H.245 dissector with no malformed frame."""
    import shutil
    import subprocess

    from h323 import tpkt
    from tests.support.pcap import Flow, write_pcap

    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.fail("tshark is not installed (make test installs it)")
    s, out = video_session()
    feed(s, 0.3, h245.OpenLogicalChannelAck(our_channels(out)[1], 2, h245.UnicastAddress(*PEER_VIDEO)))
    s.end_session()
    pdus = [h245.encode(m) for m in out] + s.pdus_to_send()
    tcs = H245Session(local_rtp=LOCAL, video=OUR_VIDEO, local_video=LOCAL_VIDEO)
    tcs.start(0.0)
    pdus += tcs.pdus_to_send()
    gw, caller = ("192.0.2.10", 40100), ("192.0.2.20", 40010)
    path = tmp_path / "video.pcap"
    write_pcap(path, [Flow(tpkt.encode(p), gw, caller) for p in pdus])
    text = subprocess.run([tshark, "-n", "-r", str(path), "-d", f"tcp.port=={gw[1]},h245", "-V"],
                          capture_output=True, text=True, check=True, timeout=60).stdout
    assert "Malformed" not in text and "Expert Info (Error" not in text
    assert "receiveVideoCapability" in text and "genericVideoCapability" in text
    assert "0.0.8.241.0.0.1" in text and "videoData" in text
    assert "dynamicRTPPayloadType: 97" in text and "closeLogicalChannel" in text, [
        line for line in text.splitlines() if "dynamic" in line or "LogicalChannel" in line]
    assert "openLogicalChannelAck" in text
