"""The legacy video leg without sockets: latching, SRTP, H.264 access units, PLI, the WHIP
passthrough track (room system H.264 -> ``av.Packet`` that decodes), and the SIP/policy wiring."""

from __future__ import annotations

import asyncio
import socket
import struct

import av
import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.h264_rtp import AccessUnit, H264Depacketizer
from bridge.ports import PortAllocator
from bridge.rtcp import PT_PSFB, RawRtcp, parse_compound
from bridge.rtcp_feedback import Pli
from bridge.rtp import RtpPacket
from bridge.session import MediaSession
from bridge.srtp import SdesSrtp
from bridge.video_leg import LegacyVideoLeg, VideoCounters, VideoInbound, VideoLegParams
from bridge.webrtc_leg import (
    VIDEO_RESTART_STEP,
    EncodedFrameTap,
    RoomVideoTrack,
    WebRtcLeg,
    hook_keyframe_requests,
)
from gateway.calls import choose_call_video, reoffer_video, video_leg_params
from gateway.policy import MeetingPolicy
from sip.offer_answer import build_answer, choose_audio
from sip.sdp import SessionDescription
from tests.support.core_server import run
from tests.support.video_room_system import (
    H264PictureSource,
    RoomVideoSender,
    decode_units,
    mean_rgb,
)

ROOM = ("198.51.100.7", 40002)
PT = 96
SUITE = "AES_CM_128_HMAC_SHA1_80"
KEY_A = bytes(range(30))
KEY_B = bytes(range(30, 60))


def _inbound(srtp: SdesSrtp | None = None) -> VideoInbound:
    return VideoInbound(remote_address=ROOM[0], payload_type=PT, counters=VideoCounters(), srtp=srtp)


def _pictures(n: int, rgb: tuple[int, int, int] = (200, 30, 30)) -> list[AccessUnit]:
    source = H264PictureSource(rgb)
    return [u for u in (source.next_unit() for _ in range(n)) if u is not None]


def test_room_h264_becomes_whole_access_units_that_decode() -> None:
    inbound, sender = _inbound(), RoomVideoSender(PT)
    units = _pictures(6)
    out: list[AccessUnit] = []
    for unit in units:
        for data in sender.datagrams(unit):
            out += inbound.receive(data, ROOM)
    assert [u.nals for u in out] == [u.nals for u in units]
    assert out[0].keyframe and not inbound.needs_keyframe
    assert inbound.latched == ROOM and inbound.remote_ssrc == sender.ssrc
    frames = decode_units([u.annexb() for u in out])
    assert len(frames) == len(units)
    r, g, b = mean_rgb(frames[-1])
    assert r > 150 and g < 80 and b < 80, (r, g, b)


def test_plain_rtp_latches_only_from_the_sdp_ip_then_only_that_port() -> None:
    inbound, sender = _inbound(), RoomVideoSender(PT)
    first, second = (sender.datagrams(u)[0] for u in _pictures(2))
    assert inbound.receive(first, ("203.0.113.9", 40002)) == []
    assert inbound.counters.dropped_wrong_source == 1 and inbound.latched is None
    inbound.receive(first, ROOM)
    inbound.receive(second, (ROOM[0], ROOM[1] + 10))
    assert inbound.counters.dropped_wrong_source == 2
    assert inbound.counters.packets_in == 1


def test_wrong_payload_type_and_garbage_are_counted_not_raised() -> None:
    inbound = _inbound()
    (data,) = RoomVideoSender(PT + 1).datagrams(_pictures(1)[0])
    assert inbound.receive(data, ROOM) == []
    assert inbound.receive(b"\x00\x01", ROOM) == []
    c = inbound.counters
    assert (c.dropped_wrong_pt, c.dropped_bad_packet, c.packets_in) == (1, 1, 0)


def test_sdes_srtp_latches_on_the_first_authenticated_packet_from_anywhere() -> None:
    room = SdesSrtp(SUITE, remote_key=KEY_B, local_key=KEY_A)
    inbound = _inbound(SdesSrtp(SUITE, remote_key=KEY_A, local_key=KEY_B))
    (data,) = RoomVideoSender(PT).datagrams(_pictures(1)[0])
    protected = room.protect(data)
    tampered = protected[:-1] + bytes([protected[-1] ^ 1])
    assert inbound.receive(tampered, ("203.0.113.9", 5000)) == []
    assert inbound.counters.dropped_srtp_auth == 1 and inbound.latched is None
    units = inbound.receive(protected, ("203.0.113.9", 5000))
    assert len(units) == 1 and units[0].keyframe
    assert inbound.latched == ("203.0.113.9", 5000)


def test_keyframe_requests_go_by_the_negotiated_feedback_coalesced() -> None:
    """Through the call's translator (bridge.keyframe): PLI when ``nack pli`` was negotiated,
    FIR for ``ccm fir`` only, SIP INFO without RTCP feedback; repeats within 250 ms coalesce."""
    run(_keyframe_requests())


async def _keyframe_requests() -> None:
    room = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    room.bind(("127.0.0.1", 0))
    room.setblocking(False)
    ports = PortAllocator(31100, 31120, address="127.0.0.1")
    sent: dict[tuple[str, ...], list[RawRtcp | str]] = {}
    try:
        for feedback in (("nack", "nack pli", "ccm fir"), ("ccm fir",), ()):
            params = VideoLegParams(payload_type=PT, remote_address="127.0.0.1",
                                    remote_port=room.getsockname()[1] - 1, feedback=feedback)
            leg = LegacyVideoLeg(lease=ports.allocate(), params=params)
            got: list[RawRtcp | str] = []
            leg.on_sip_info = lambda got=got: got.append("sip_info")  # type: ignore[misc]
            await leg.start()
            (first,) = RoomVideoSender(PT).datagrams(_PICTURES[0])
            leg._rtp_received(first, ("127.0.0.1", room.getsockname()[1] - 1))  # latch, learn SSRC
            assert leg.request_keyframe("core_pli") is True
            assert leg.request_keyframe("core_pli") is False  # coalesced into the first
            await asyncio.sleep(0.05)
            while True:
                try:
                    data = room.recv(2048)
                except BlockingIOError:
                    break
                got += [p for p in parse_compound(data) if isinstance(p, RawRtcp)]
            sent[feedback] = got
            leg.close()
    finally:
        room.close()
    pli, fir, info = sent.values()
    assert [(p.packet_type, p.fmt) for p in pli] == [(PT_PSFB, 1)]  # type: ignore[union-attr]
    assert pli[0].body[:4] == struct.pack("!I", RoomVideoSender(PT).ssrc)  # type: ignore[union-attr]
    assert [(p.packet_type, p.fmt) for p in fir] == [(PT_PSFB, 4)]  # type: ignore[union-attr]
    assert info == ["sip_info"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=64), st.sampled_from([ROOM, ("203.0.113.9", 1)])),
                max_size=40))
def test_hostile_datagrams_never_raise_and_each_is_counted_once(
        datagrams: list[tuple[bytes, tuple[str, int]]]) -> None:
    inbound = _inbound()
    for data, addr in datagrams:
        inbound.receive(data, addr)
    c = inbound.counters
    assert c.packets_in + c.rtcp_in + c.dropped == len(datagrams)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), max_size=60))
def test_lossy_reordered_stream_never_raises(order: list[int]) -> None:
    """Packets of real pictures in a hostile order: whole units or counted drops, never a crash."""
    inbound, sender = _inbound(), RoomVideoSender(PT)
    datagrams = [d for u in _PICTURES for d in sender.datagrams(u)]
    for i in order:
        for unit in inbound.receive(datagrams[i % len(datagrams)], ROOM):
            assert unit.nals  # only whole, non-empty access units come out


_PICTURES = _pictures(8)


# -- the WHIP passthrough track ----------------------------------------------------------------

def _unit(ts: int, keyframe: bool) -> AccessUnit:
    return AccessUnit(nals=[b"\x65\x88" if keyframe else b"\x41\x9a"], timestamp=ts, keyframe=keyframe)


def test_track_waits_for_a_keyframe_then_yields_annexb_packets_at_90khz() -> None:
    run(_test_track_waits_for_a_keyframe_then_yields_annexb_packets_at_90khz())


async def _test_track_waits_for_a_keyframe_then_yields_annexb_packets_at_90khz() -> None:
    track = RoomVideoTrack()
    asked: list[str] = []
    track.on_keyframe_needed = asked.append
    t0 = 0xFFFFE000  # the RTP clock wraps between the 3rd and 4th picture: pts keeps growing
    track.push(_unit(t0, False))
    assert asked == ["no_keyframe_yet"] and track.dropped_units == 1
    for i in range(1, 4):
        track.push(_unit((t0 + 3000 * i) & 0xFFFFFFFF, i == 1))
    # A step backwards (a restarted sender, a re-offer to a new port) never moves pts back, and
    # moves it one frame: a picture stamped like the previous one would merge into it downstream.
    track.push(_unit(5, False))
    packets = [await track.recv() for _ in range(4)]
    assert all(isinstance(p, av.Packet) for p in packets)
    assert bytes(packets[0]) == b"\x00\x00\x00\x01\x65\x88"
    assert [p.pts for p in packets] == [3000, 6000, 9000, 9000 + VIDEO_RESTART_STEP]
    assert packets[0].time_base == packets[0].time_base.__class__(1, 90000)


def test_track_overflow_restarts_at_the_next_keyframe() -> None:
    run(_test_track_overflow_restarts_at_the_next_keyframe())


async def _test_track_overflow_restarts_at_the_next_keyframe() -> None:
    track = RoomVideoTrack(depth=3)
    track.push(_unit(0, True))
    for i in range(1, 4):
        track.push(_unit(i * 3000, False))  # the 4th push finds the queue full
    assert track.dropped_units == 4
    track.push(_unit(15000, True))
    packet = await track.recv()
    assert bytes(packet).endswith(b"\x65\x88")


def test_track_recv_ends_when_stopped() -> None:
    run(_test_track_recv_ends_when_stopped())


async def _test_track_recv_ends_when_stopped() -> None:
    track = RoomVideoTrack()
    track.POLL_SECONDS = 0.01
    task = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.02)
    track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(task, 1.0)


# -- session and SIP/policy wiring -------------------------------------------------------------

OFFER = ("v=0\r\no=x 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"
         "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
         "m=video 40002 RTP/AVPF 96\r\na=rtpmap:96 H264/90000\r\n"
         "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1\r\na=rtcp-fb:96 nack pli\r\n")


def _policy(**kw: object) -> MeetingPolicy:
    return MeetingPolicy(meeting="m", legacy_media="allow-plain", protocols=("sip",),  # type: ignore[arg-type]
                         configured=True, **kw)  # type: ignore[arg-type]


def test_policy_decides_whether_the_call_carries_video() -> None:
    offer = SessionDescription.parse(OFFER)
    on = choose_call_video(offer, _policy())
    assert on is not None and on.payload_type == 96 and on.packetization_mode == 1
    assert choose_call_video(offer, _policy(video=False)) is None
    assert choose_call_video(offer, _policy(video_codecs=("VP8",))) is None
    params = video_leg_params(on)
    assert (params.payload_type, params.remote_address, params.remote_port,
            params.packetization_mode, params.srtp_suite) == (96, "198.51.100.7", 40002, 1, None)


def test_session_with_video_binds_a_second_pair_and_releases_both() -> None:
    ports = PortAllocator(31000, 31010, address="127.0.0.1")
    session = MediaSession.allocate(
        reactor=None, meeting="m", core_url="http://127.0.0.1:1", media_address="127.0.0.1",
        port_allocator=ports, encoding="PCMU", payload_type=0, remote_address="127.0.0.1",
        remote_port=40000, video=VideoLegParams(payload_type=96, remote_address="127.0.0.1",
                                                remote_port=40002))
    assert session.video is not None and session.webrtc.video_track is not None
    assert session.video_port is not None and session.video_port != session.local_port
    assert ports.in_use == 2
    session.legacy.close()
    session.video.close()
    assert ports.in_use == 0


def test_core_pli_and_fir_reach_the_room_system_hook() -> None:
    """A real aiortc sender, as the WHIP publish makes it: PLI and FIR from the core call the
    hook (aiortc's own handling would only flag an encoder that passthrough never uses)."""
    run(_core_pli_and_fir_reach_the_room_system_hook())


async def _core_pli_and_fir_reach_the_room_system_hook() -> None:
    leg = WebRtcLeg(reactor=None, core_url="http://127.0.0.1:1", meeting="m", legacy_rate=8000)
    asked: list[str] = []
    leg.on_keyframe_request = asked.append
    pc = RTCPeerConnection()
    try:
        sender = pc.addTransceiver(leg.enable_video(), direction="sendonly").sender
        hook_keyframe_requests(sender, leg._core_wants_keyframe)
        ssrc = sender._ssrc
        for fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            await sender._handle_rtcp_packet(RtcpPsfbPacket(fmt=fmt, ssrc=1, media_ssrc=ssrc))
    finally:
        await pc.close()
    assert asked == ["core_pli", "core_pli"] and leg.stats()["keyframe_requests_in"] == 2


# -- meeting -> room system ----------------------------------------------------------------------

class _JitterFrame:
    def __init__(self, data: bytes, timestamp: int) -> None:
        self.data, self.timestamp = data, timestamp


def test_encoded_frame_tap_turns_aiortc_frames_into_access_units_and_passes_stop_on() -> None:
    got: list[AccessUnit] = []
    tap = EncodedFrameTap(got.append)
    idr = _PICTURES[0]
    tap.put((object(), _JitterFrame(idr.annexb(), 3000)))
    tap.put((object(), _JitterFrame(b"", 6000)))  # nothing in it: ignored
    tap.put(None)  # aiortc stopping the receiver: the decoder thread must get it
    assert [(u.nals, u.timestamp, u.keyframe) for u in got] == [(idr.nals, 3000, True)]
    assert tap.get(timeout=1) is None and tap.frames == 1


def test_meeting_video_goes_to_the_room_system_and_its_pli_reaches_the_core() -> None:
    run(_meeting_video_to_room())


async def _meeting_video_to_room() -> None:
    room = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    room.bind(("127.0.0.1", 0))
    room.setblocking(False)
    room_port = room.getsockname()[1]
    ports = PortAllocator(31200, 31220, address="127.0.0.1")
    leg = LegacyVideoLeg(lease=ports.allocate(), params=VideoLegParams(
        payload_type=PT, remote_address="127.0.0.1", remote_port=room_port,
        feedback=("nack pli",)))
    asked: list[str] = []
    leg.on_core_keyframe = lambda: asked.append("core")
    try:
        await leg.start()
        for unit in _PICTURES[:3]:
            leg.send_access_unit(unit)
        await asyncio.sleep(0.05)
        depacketizer, units = H264Depacketizer(), []
        while True:
            try:
                data = room.recv(4096)
            except BlockingIOError:
                break
            packet = RtpPacket.parse(data)
            assert packet.payload_type == PT and packet.ssrc == leg.ssrc
            units += depacketizer.push(packet)
        assert [u.nals for u in units] == [u.nals for u in _PICTURES[:3]]
        # The room system's PLI (to our RTCP port) and SIP INFO, coalesced into one request.
        room.sendto(Pli(0x1234, leg.ssrc).to_bytes(), ("127.0.0.1", leg.lease.rtcp_port))
        await asyncio.sleep(0.05)
        assert leg.keyframe_from_room("sip_info") is False  # within 250 ms of the PLI
        assert asked == ["core"] and leg.counters.keyframe_requests_in == 1
    finally:
        leg.close()
        room.close()


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0x80, max_value=0xBF), st.sampled_from([200, 201, 205, 206]),
       st.binary(max_size=80))
def test_hostile_rtcp_from_the_room_system_never_raises(b0: int, pt: int, rest: bytes) -> None:
    inbound = _inbound()
    asked: list[str] = []
    inbound.on_keyframe_request = asked.append
    data = bytes([b0, pt]) + rest
    assert inbound.receive(data, ROOM) == []
    assert inbound.counters.rtcp_in == 1 and len(asked) <= inbound.counters.keyframe_requests_in


def test_a_reoffer_keeps_the_running_video_line_only_when_the_leg_can_take_it() -> None:
    """RFC 3264 8: a hold/resume re-offer must not drop video; a new codec or new keys (which
    the running leg cannot take) get port 0 instead of a broken stream."""
    ports = PortAllocator(31300, 31310, address="127.0.0.1")
    first = choose_call_video(SessionDescription.parse(OFFER), _policy())
    assert first is not None
    session = MediaSession.allocate(
        reactor=None, meeting="m", core_url="http://127.0.0.1:1", media_address="127.0.0.1",
        port_allocator=ports, encoding="PCMU", payload_type=0, remote_address="127.0.0.1",
        remote_port=40000, video=video_leg_params(first))
    try:
        held = SessionDescription.parse(OFFER.replace("a=rtcp-fb:96 nack pli\r\n",
                                                      "a=rtcp-fb:96 nack pli\r\na=sendonly\r\n"))
        kept = reoffer_video(session, held)
        assert kept is not None and kept.payload_type == 96
        answer = build_answer(held, choose_audio(held), "127.0.0.1", session.local_port,
                              video=kept, video_port=session.video_port)
        assert answer.media[1].port == session.video_port and answer.media[1].direction == "recvonly"
        assert reoffer_video(session, SessionDescription.parse(OFFER.replace(" 96", " 97")
                                                               .replace(":96", ":97"))) is None
        assert reoffer_video(None, held) is None
    finally:
        session.legacy.close()
        assert session.video is not None
        session.video.close()


# -- keyframes toward a room system without RTCP feedback: SIP INFO and the periodic refresh -----

class _Dialog:
    """Stands in for ``sip.calls.InboundCall``: keeps the INFOs the gateway sends."""

    def __init__(self, confirmed: bool = True) -> None:
        self.confirmed = confirmed
        self.infos: list[tuple[str, bytes]] = []

    def send_info(self, content_type: str, body: bytes) -> bool:
        if self.confirmed:
            self.infos.append((content_type, body))
        return self.confirmed


def test_a_room_system_without_rtcp_feedback_is_asked_by_sip_info_picture_fast_update() -> None:
    """The gateway's wiring (``CallController._send_picture_fast_update``, set as the video leg's
    ``on_sip_info``): the core's request becomes one RFC 5168 INFO our own INFO parser reads as
    a keyframe request -- even before any video arrived (INFO names no SSRC); a dialog that
    cannot carry it (not confirmed) is not counted as asked."""
    run(_sip_info_wiring())


async def _sip_info_wiring() -> None:
    from gateway.calls import CallController, LegacyCall
    from sip.info import KeyframeRequest, classify

    ports = PortAllocator(31320, 31330, address="127.0.0.1")
    for confirmed in (True, False):
        dialog = _Dialog(confirmed)
        entry = LegacyCall(call=dialog, meeting="m", label="l")  # type: ignore[arg-type]
        leg = LegacyVideoLeg(lease=ports.allocate(), params=VideoLegParams(
            payload_type=PT, remote_address="127.0.0.1", remote_port=9))
        leg.on_sip_info = lambda entry=entry: CallController._send_picture_fast_update(entry)  # type: ignore[misc]
        try:
            await leg.start()
            assert leg.request_keyframe("vas_switch") is confirmed
            assert leg.counters.keyframe_requests_out == int(confirmed)
        finally:
            leg.close()
        if confirmed:
            ((ctype, body),) = dialog.infos
            assert ctype == "application/media_control+xml"
            assert isinstance(classify(ctype, body), KeyframeRequest)
        else:
            assert dialog.infos == []
    entry.ended = True
    assert CallController._send_picture_fast_update(entry) is False


def test_periodic_refresh_runs_only_toward_a_room_system_that_cannot_ask() -> None:
    """bridge.keyframe's fallback: without ``a=rtcp-fb`` the core is asked for an IDR every
    ``fallback_interval``; with PLI negotiated never (the room system asks when it needs one)."""
    run(_periodic_refresh())


async def _periodic_refresh() -> None:
    ports = PortAllocator(31340, 31350, address="127.0.0.1")
    asked: dict[tuple[str, ...], list[str]] = {}
    legs = []
    try:
        for feedback in ((), ("nack pli",)):
            leg = LegacyVideoLeg(lease=ports.allocate(), fallback_interval=0.1, params=VideoLegParams(
                payload_type=PT, remote_address="127.0.0.1", remote_port=9, feedback=feedback))
            got = asked[feedback] = []
            leg.on_core_keyframe = lambda got=got: got.append("core")  # type: ignore[misc]
            await leg.start()
            legs.append(leg)
        await asyncio.sleep(0.45)
        refreshes = len(asked[()])
        assert legs[0].keyframes is not None
        print(f"periodic refreshes in 0.45 s at 0.1 s: {refreshes}; "
              f"translator sent {dict(legs[0].keyframes.sent)}")
        assert refreshes >= 2 and legs[0].keyframes.sent["core/force_keyframe"] == refreshes
        assert asked[("nack pli",)] == []
        legs[0].close()  # a closed leg's timer is cancelled
        await asyncio.sleep(0.25)
        assert len(asked[()]) == refreshes
    finally:
        for leg in legs:
            leg.close()


# -- bitrate toward the room system: SDP cap, REMB/TMMBR (TMMBN back), the REMB we report ------

def test_the_room_systems_sdp_cap_reaches_the_video_leg() -> None:
    """``b=TIAS`` is taken as is (payload bit/s); without the offer only our ceiling applies."""
    offer = SessionDescription.parse(OFFER.replace("a=rtpmap:96", "b=TIAS:300000\r\na=rtpmap:96"))
    choice = choose_call_video(offer, _policy())
    assert choice is not None
    assert video_leg_params(choice, offer).bitrate_cap_bps == 300_000
    assert video_leg_params(choice).bitrate_cap_bps is None
    ports = PortAllocator(31360, 31364, address="127.0.0.1")
    leg = LegacyVideoLeg(lease=ports.allocate(), params=video_leg_params(choice, offer))
    try:
        assert leg.bitrate.target_bps == 300_000 and leg.stats()["bitrate_target_bps"] == 300_000
    finally:
        leg.close()


def test_room_system_remb_and_tmmbr_move_the_target_and_tmmbr_gets_a_tmmbn() -> None:
    run(_remb_tmmbr())


async def _remb_tmmbr() -> None:
    from bridge.bitrate import CEILING_BPS, payload_share
    from bridge.rtcp_feedback import Remb, Tmmbn, Tmmbr, parse_feedback

    room = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    room.bind(("127.0.0.1", 0))
    room.setblocking(False)
    ports = PortAllocator(31370, 31380, address="127.0.0.1")
    leg = LegacyVideoLeg(lease=ports.allocate(), params=VideoLegParams(
        payload_type=PT, remote_address="127.0.0.1", remote_port=room.getsockname()[1] - 1))
    try:
        await leg.start()
        assert leg.bitrate.target_bps == CEILING_BPS
        room.sendto(Remb(0x1234, 900_000, (leg.ssrc,)).to_bytes(), ("127.0.0.1", leg.lease.rtcp_port))
        await asyncio.sleep(0.05)
        assert leg.bitrate.target_bps == payload_share(900_000)
        room.sendto(Tmmbr(0x1234, ((leg.ssrc, 400_000, 40),)).to_bytes(), ("127.0.0.1", leg.lease.rtcp_port))
        await asyncio.sleep(0.05)
        assert leg.bitrate.target_bps == payload_share(400_000, 40)
        (raw,) = [p for p in parse_compound(room.recv(2048)) if isinstance(p, RawRtcp)]
        assert parse_feedback(raw) == Tmmbn(leg.ssrc, ((0x1234, 400_000, 40),))
        # A TMMBR for another sender's SSRC is not ours to obey or acknowledge.
        room.sendto(Tmmbr(0x1234, ((leg.ssrc ^ 1, 100_000, 40),)).to_bytes(), ("127.0.0.1", leg.lease.rtcp_port))
        await asyncio.sleep(0.05)
        assert leg.bitrate.target_bps == payload_share(400_000, 40)
        with pytest.raises(BlockingIOError):
            room.recv(2048)
        c = leg.counters
        assert (c.bitrate_feedback_in, c.tmmbn_out, c.dropped) == (3, 1, 0)
    finally:
        leg.close()
        room.close()


class _Estimator:
    """aiortc's ``RemoteBitrateEstimator.add`` contract: ``(bitrate, ssrcs)`` or None."""

    def __init__(self, results: list[tuple[int, list[int]] | None]) -> None:
        self.results = results

    def add(self, **_: object) -> tuple[int, list[int]] | None:
        return self.results.pop(0)


def test_the_remb_our_whep_receiver_reports_is_capped_by_the_room_systems_target() -> None:
    """bridge.webrtc_leg.cap_remb on a real aiortc RTCRtpReceiver: min(estimate, cap), the
    estimator's silences (None) and SSRC list untouched, a changed cap read at each REMB."""
    from unittest import mock

    from aiortc import RTCRtpReceiver

    from bridge.webrtc_leg import cap_remb

    receiver = RTCRtpReceiver("video", mock.Mock())
    real = receiver._RTCRtpReceiver__remote_bitrate_estimator  # type: ignore[attr-defined]
    assert hasattr(real, "add")  # the aiortc attribute the hook relies on is still there
    estimator = _Estimator([(1_500_000, [7]), None, (250_000, [7]), (1_500_000, [7, 8])])
    receiver._RTCRtpReceiver__remote_bitrate_estimator = estimator  # type: ignore[attr-defined]
    cap: list[int | None] = [600_000]
    cap_remb(receiver, lambda: cap[0])
    add = estimator.add
    assert add(abs_send_time=0, arrival_time_ms=0, payload_size=1, ssrc=7) == (600_000, [7])
    assert add(abs_send_time=0, arrival_time_ms=1, payload_size=1, ssrc=7) is None
    assert add(abs_send_time=0, arrival_time_ms=2, payload_size=1, ssrc=7) == (250_000, [7])
    cap[0] = None
    assert add(abs_send_time=0, arrival_time_ms=3, payload_size=1, ssrc=7) == (1_500_000, [7, 8])
    audio = RTCRtpReceiver("audio", mock.Mock())
    cap_remb(audio, lambda: 1)  # no estimator on audio receivers: nothing to hook, no error


# -- re-offers: re-target and hold/resume the running video leg --------------------------------

def test_a_reoffer_retargets_the_video_leg_and_holds_or_resumes_it() -> None:
    """RFC 3264 8 through ``gateway.calls.renegotiate_video``: ``a=sendonly`` holds our video
    (counted, nothing sent), a new port re-targets and drops the latch, resuming asks the core
    for an IDR, a line not kept holds, ``c=0.0.0.0`` holds without moving the target."""
    run(_reoffer_video_leg())


async def _reoffer_video_leg() -> None:
    from types import SimpleNamespace

    from gateway.calls import renegotiate_video

    room = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    room.bind(("127.0.0.1", 0))
    room.setblocking(False)
    room_port = room.getsockname()[1]
    offer_text = OFFER.replace("198.51.100.7", "127.0.0.1").replace("m=video 40002", f"m=video {room_port}")
    ports = PortAllocator(31390, 31400, address="127.0.0.1")
    first = choose_call_video(SessionDescription.parse(offer_text), _policy())
    assert first is not None
    leg = LegacyVideoLeg(lease=ports.allocate(), params=video_leg_params(first))
    session = SimpleNamespace(video=leg)
    asked: list[str] = []
    leg.on_core_keyframe = lambda: asked.append("core")
    try:
        await leg.start()
        (datagram,) = RoomVideoSender(PT).datagrams(_PICTURES[0])
        leg._rtp_received(datagram, ("127.0.0.1", room_port))
        assert leg.inbound.latched == ("127.0.0.1", room_port)

        held = SessionDescription.parse(offer_text.replace("a=rtcp-fb:96 nack pli\r\n",
                                                           "a=rtcp-fb:96 nack pli\r\na=sendonly\r\n"))
        renegotiate_video(session, reoffer_video(session, held), held)  # type: ignore[arg-type]
        leg.send_access_unit(_PICTURES[1])
        await asyncio.sleep(0.05)
        with pytest.raises(BlockingIOError):
            room.recv(4096)
        assert not leg.sending and leg.counters.access_units_held == 1 and asked == []

        moved_text = offer_text.replace(f"m=video {room_port}", f"m=video {room_port + 100}")
        moved = SessionDescription.parse(moved_text)
        renegotiate_video(session, reoffer_video(session, moved), moved)  # type: ignore[arg-type]
        assert leg.sending and leg.remote == ("127.0.0.1", room_port + 100)
        assert leg.inbound.latched is None and leg.destination == ("127.0.0.1", room_port + 100)
        assert asked == ["core"]  # resumed: the room system's decoder needs an IDR first

        renegotiate_video(session, None, moved)  # type: ignore[arg-type]  # the line was refused
        assert not leg.sending
        renegotiate_video(session, reoffer_video(session, moved), moved)  # type: ignore[arg-type]
        assert leg.sending
        old_hold = SessionDescription.parse(moved_text.replace(
            f"m=video {room_port + 100} RTP/AVPF 96\r\n",
            f"m=video {room_port + 100} RTP/AVPF 96\r\nc=IN IP4 0.0.0.0\r\n"))
        kept = reoffer_video(session, old_hold)  # type: ignore[arg-type]
        assert kept is not None and kept.remote_address == "0.0.0.0"
        renegotiate_video(session, kept, old_hold)  # type: ignore[arg-type]
        assert not leg.sending and leg.remote == ("127.0.0.1", room_port + 100)
    finally:
        leg.close()
        room.close()
