"""The gateway side of H.323 video: policy, the bridge's view of the channels, and the wiring
shared with SIP (gateway/h323_calls.py, gateway/participation.py, bridge/video_leg.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from bridge.keyframe import Method, h323_caps
from bridge.ports import NoFreePort, PortAllocator
from bridge.video_leg import LegacyVideoLeg
from gateway.h323_calls import (
    VIDEO_CAPABILITY,
    H323CallController,
    H323LegacyCall,
    _PreparedPorts,
    video_leg_params,
)
from gateway.participation import passthrough_video_codecs, wire_video
from gateway.policy import MeetingPolicy
from h323 import h245
from h323.call import ChannelClosed
from h323.h245_session import VideoChannel

CHANNEL = VideoChannel(("192.0.2.7", 40002), ("192.0.2.7", 40003), 102, 97,
                       h245.H264Capability(max_bit_rate=3840))


def _policy(**kw: Any) -> MeetingPolicy:
    return MeetingPolicy(meeting="m", legacy_media="allow-plain", protocols=("h323",),  # type: ignore[arg-type]
                         configured=True, **kw)


def test_policy_decides_whether_h323_calls_carry_video() -> None:
    assert passthrough_video_codecs(_policy()) == ("H264",)
    assert passthrough_video_codecs(_policy(video=False)) == ()
    assert passthrough_video_codecs(_policy(video_codecs=("VP8",))) == ()
    # what we advertise: Baseline, up to the bridge's own ceiling (2 Mbit/s)
    assert (VIDEO_CAPABILITY.profile, VIDEO_CAPABILITY.max_bps) == (h245.H241_BASELINE, 2_000_000)


def test_video_leg_params_from_the_h245_channel() -> None:
    params = video_leg_params(CHANNEL)
    assert (params.payload_type, params.remote_address, params.remote_port, params.packetization_mode,
            params.bitrate_cap_bps, params.srtp_suite) == (97, "192.0.2.7", 40002, 1, 384_000, None)
    assert params.keyframe_caps == h323_caps()
    unlimited = video_leg_params(VideoChannel(("192.0.2.7", 40002), None, 102, 96, h245.H264Capability(0)))
    assert unlimited.bitrate_cap_bps is None  # maxBitRate 0 states no limit


def test_prepared_ports_hand_out_audio_then_video_then_refuse() -> None:
    audio, video = SimpleNamespace(rtp_port=1), SimpleNamespace(rtp_port=3)
    ports = _PreparedPorts("127.0.0.1", audio, None, video)  # type: ignore[arg-type]
    assert ports.allocate() is audio and ports.allocate() is video
    with pytest.raises(NoFreePort):
        ports.allocate()


def test_an_h323_video_leg_asks_by_h245_coalesced_and_needs_no_periodic_refresh() -> None:
    async def scenario() -> tuple[list[str], bool, Any, int]:
        ports = PortAllocator(31420, 31430, address="127.0.0.1")
        leg = LegacyVideoLeg(lease=ports.allocate(), params=video_leg_params(CHANNEL))
        asked: list[str] = []
        leg.on_h245_fast_update = lambda: asked.append("vfu")
        leg.on_sip_info = lambda: asked.append("sip-info")
        await leg.start()
        try:
            first = leg.request_keyframe("core_pli")  # before any video came: signalled, no SSRC needed
            leg.request_keyframe("core_pli")  # within 250 ms: coalesced
            assert leg.keyframes is not None
            return asked, first, leg.keyframes.caps.method, leg.counters.keyframe_requests_out
        finally:
            fallback = leg.keyframes.fallback_active if leg.keyframes is not None else None
            leg.close()
            assert fallback is False

    asked, first, method, out = asyncio.run(scenario())
    assert asked == ["vfu"] and first is True and method is Method.H245 and out == 1


class _Video:
    def __init__(self) -> None:
        self.closed = 0
        self.requests: list[str] = []
        self.on_sip_info: Any = None
        self.on_h245_fast_update: Any = None
        self.bitrate = SimpleNamespace(target_bps=384_000)

    def close(self) -> None:
        self.closed += 1

    def request_keyframe(self, why: str) -> bool:
        self.requests.append(why)
        return True


class _Conn:
    def __init__(self) -> None:
        self.id, self.label, self.keyframes = 61, "c61", 0

    def request_keyframe(self) -> bool:
        self.keyframes += 1
        return True


def _controller_with_video() -> tuple[H323CallController, H323LegacyCall, _Video, _Conn]:
    ctl = H323CallController(reactor=None, policy=None, core_url="", media_address="127.0.0.1",  # type: ignore[arg-type]
                             ports=None)  # type: ignore[arg-type]
    conn, video = _Conn(), _Video()
    entry = H323LegacyCall(conn=conn, offer=None, meeting="1000", label=conn.label)  # type: ignore[arg-type]
    entry.session = SimpleNamespace(video=video)  # type: ignore[assignment]
    entry.video_channel = 102
    ctl._calls[conn.id] = entry
    return ctl, entry, video, conn


def test_the_core_keyframe_need_goes_through_the_calls_video_leg() -> None:
    ctl, entry, video, conn = _controller_with_video()
    assert ctl.request_keyframe(entry, "vas_switch") is True
    assert video.requests == ["vas_switch"] and conn.keyframes == 0  # the leg's hook sends the VFU
    assert entry.keyframes is None  # no second translator for this call


def test_the_callers_close_of_its_video_channel_closes_the_video_leg() -> None:
    ctl, entry, video, conn = _controller_with_video()
    ctl.channel_closed(conn, ChannelClosed(1, "audio"))  # type: ignore[arg-type]
    assert video.closed == 0
    ctl.channel_closed(conn, ChannelClosed(3, "video"))  # type: ignore[arg-type]
    assert video.closed == 1 and entry.video_channel is None


def test_wire_video_sets_the_signalled_keyframe_hook_and_the_remb_cap() -> None:
    video = _Video()
    session = SimpleNamespace(video=video, webrtc=SimpleNamespace(video_bitrate_cap=None))
    sent: list[str] = []
    wire_video(session, h245_fast_update=lambda: sent.append("vfu"))  # type: ignore[arg-type]
    video.on_h245_fast_update()
    assert sent == ["vfu"] and video.on_sip_info is None
    assert session.webrtc.video_bitrate_cap() == 384_000
    audio_only = SimpleNamespace(video=None, webrtc=SimpleNamespace(video_bitrate_cap=None))
    wire_video(audio_only, sip_info=lambda: True)  # type: ignore[arg-type]
    assert audio_only.webrtc.video_bitrate_cap is None
