"""Keyframes toward a SIP room system that negotiated no RTCP feedback (issue 4, Video).

Older Cisco and Polycom endpoints offer H.264 over plain RTP/AVP without ``a=rtcp-fb``: they
neither understand RTCP PLI/FIR nor send it, and expect SIP INFO ``picture_fast_update``
(RFC 5168).  The room system here is the project's SIP UAC with libx264 video
(tests/support/video_room_system.py) that makes an IDR when such an INFO arrives.  Proven by
what the room system receives and makes, and by a viewer decoding its picture:

* a packet lost on the way breaks the gateway's picture: the gateway asks by INFO (never RTCP);
* a viewer joining later makes the core ask for a keyframe (its PLI on the WHIP leg): that also
  becomes an INFO, the room system answers with an IDR and the late viewer decodes the picture.

And the bitrate the room system receives: with ``b=TIAS`` the core's encoder for it is held to
the cap (through the REMB the gateway's WHEP receiver reports, ``bridge.webrtc_leg.cap_remb``),
measured as RTP payload bit/s over 5 s against the same call without a cap.

And re-offers on the video line: hold (``a=sendonly``), resume on a new port pair (an IDR first),
the room system's video latched again at the new place.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np
import pytest

from bridge.ice import use_host_addresses
from sip.sdp import SessionDescription
from tests.interop.test_walking_skeleton import run_on_private_loop
from tests.support import webrtc_client as wc
from tests.support.gateway_process import GatewayProcess
from tests.support.sip_uac import offer_sdp
from tests.support.video_room_system import (
    H264PictureSource,
    RoomVideoEndpoint,
    TappedViewer,
    colour_of,
    room_system_call,
    video_offer_lines,
)

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"
RED = (220, 20, 20)
MEETING = "1000"


def _red(rgb: tuple[int, int, int] | None) -> bool:
    return rgb is not None and rgb[0] > 150 and rgb[1] < 80 and rgb[2] < 80


async def _room_without_feedback(gw: GatewayProcess) -> dict[str, Any]:
    use_host_addresses([HOST])
    viewer = await wc.subscribe(gw.http_url, MEETING)
    late: TappedViewer | None = None
    out: dict[str, Any] = {}
    try:
        async with room_system_call(gw.sip_uri(MEETING), colour=RED, feedback=False) as rs:
            room, call = rs.room, rs.call
            video_m = call.answer_sdp.media[1]
            loop = asyncio.get_running_loop()
            await asyncio.sleep(2.0)
            room.lose_next_packet()  # the gateway's picture breaks: it must ask for an IDR
            await asyncio.sleep(2.0)
            out["keyframes_before_late"] = room.source.keyframes
            late_at = loop.time()
            late_wall = time.time()
            late = await TappedViewer.join(gw.http_url, MEETING)
            await asyncio.sleep(3.0)
            out.update(
                answer=str(call.answer_sdp), video_proto=video_m.proto, late_at=late_at,
                late_colour=colour_of([u for t, u in late.received if t >= late_wall]),
                late_units=len(late.received), rgb=viewer.last_video_rgb(), frames_seen=viewer.video_count,
                keyframe_requests=list(room.keyframe_requests), lost_at=list(room.lost_at),
                keyframes_made=room.source.keyframes, units_sent=room.units_sent,
                infos=[(r.method, r.headers.get("Content-Type")) for r in call.requests],
            )
            out["bye"] = (await call.bye()).status
            return out
    finally:
        if late is not None:
            await late.close()
        await viewer.close()


def test_room_system_without_rtcp_feedback_gets_sip_info_picture_fast_update(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    gw = gateway_factory()
    out = run_on_private_loop(_room_without_feedback(gw), timeout=120)
    requests: list[tuple[float, str]] = out["keyframe_requests"]
    print(f"room system (RTP/AVP, no rtcp-fb) sent {out['units_sent']} pictures, made "
          f"{out['keyframes_made']} IDRs ({out['keyframes_before_late']} before the late viewer); "
          f"keyframe requests it got: {requests}; in-dialog requests: {out['infos']}; "
          f"viewer: {out['frames_seen']} frames, last RGB {out['rgb']}; late viewer: "
          f"{out['late_units']} units, colour {out['late_colour']}")
    assert out["video_proto"] == "RTP/AVP" and "a=rtcp-fb" not in out["answer"], out["answer"]
    assert requests, "the room system was never asked for a keyframe"
    assert {kind for _, kind in requests} == {"sip_info"}, requests  # never RTCP it cannot parse
    # The lost packet: the gateway's depacketizer saw the gap and asked by INFO.
    (lost_at,) = out["lost_at"]
    after_loss = [t for t, _ in requests if lost_at <= t < out["late_at"]]
    assert after_loss, (lost_at, requests)
    print(f"loss -> INFO at the room system: {(after_loss[0] - lost_at) * 1000:.1f} ms")
    # The late viewer: the core's PLI on the WHIP leg became an INFO, answered with an IDR.
    after_join = [t for t, _ in requests if t >= out["late_at"]]
    assert after_join, (out["late_at"], requests)
    print(f"late viewer join -> INFO at the room system: {(after_join[0] - out['late_at']) * 1000:.1f} ms")
    assert out["keyframes_made"] > out["keyframes_before_late"] > 1
    assert _red(out["late_colour"]), f"the late viewer decodes {out['late_colour']}, not red"
    assert _red(out["rgb"]), f"the viewer's picture is {out['rgb']}, not red"
    assert out["bye"] == 200
    sent = gw.events("sip.info.sent")
    assert sent and {e["content_type"] for e in sent} == {"application/media_control+xml"}, sent


# -- bitrate: the room system's b=TIAS caps the core's encoder --------------------------------

#: Above aiortc's H.264 encoder floor (``MIN_BITRATE``, 500 kbit/s): an aiortc core cannot be
#: held lower whatever the REMB says (see ``bridge.webrtc_leg.cap_remb``).
CAP_BPS = 600_000
#: x264's ABR rate control (what aiortc configures) aims at the average, so a 5 s window may sit
#: somewhat above the target; the REMB is a header-inclusive total compared with payload here.
TOLERANCE = 0.15
WARMUP_S = 4.0
WINDOW_S = 5.0


class NoiseTrack(wc.ColourTrack):
    """Random pixels every frame: no encoder can make them small, so the bit rate the core's
    encoder produces is the bit rate it was told to produce.  30 fps because aiortc configures
    its x264 for 30 fps whatever comes (``H264Encoder._encode_frame``): at 15 fps the ABR budget
    per frame halves the output, the WHEP receiver's own estimate follows it down to the
    encoder's floor and no cap above that floor could ever bind."""

    def __init__(self) -> None:
        super().__init__((0, 0, 0), width=192, height=144, fps=30)
        self._rng = np.random.default_rng(5)

    async def recv(self) -> av.VideoFrame:
        self._image[:] = self._rng.integers(0, 256, self._image.shape, dtype=np.uint8)
        return await super().recv()


async def _received_bitrate(gw: GatewayProcess, tias_bps: int | None) -> dict[str, Any]:
    use_host_addresses([HOST])
    publisher = await wc.publish(gw.http_url, MEETING, video=NoiseTrack())
    try:
        async with room_system_call(gw.sip_uri(MEETING), colour=RED, tias_bps=tias_bps) as rs:
            room, call = rs.room, rs.call
            start = asyncio.get_running_loop().time()
            await asyncio.sleep(WARMUP_S + WINDOW_S)
            out = {"bps": room.payload_bps(start + WARMUP_S, start + WARMUP_S + WINDOW_S),
                   "warmup_bps": room.payload_bps(start, start + WARMUP_S),
                   "units": len(room.received), "bye": (await call.bye()).status}
            return out
    finally:
        await publisher.close()


def test_room_system_tias_caps_the_video_it_receives(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    gw = gateway_factory()
    capped = run_on_private_loop(_received_bitrate(gw, CAP_BPS), timeout=90)
    free = run_on_private_loop(_received_bitrate(gw, None), timeout=90)
    print(f"room system receives (RTP payload, {WINDOW_S:g} s after {WARMUP_S:g} s): "
          f"b=TIAS:{CAP_BPS} -> {capped['bps'] / 1000:.0f} kbit/s "
          f"(warm-up {capped['warmup_bps'] / 1000:.0f}), no cap -> {free['bps'] / 1000:.0f} kbit/s "
          f"(warm-up {free['warmup_bps'] / 1000:.0f}); access units {capped['units']} / {free['units']}")
    assert capped["bye"] == free["bye"] == 200
    assert capped["units"] > 30 and free["units"] > 30, "the room system got (almost) no video"
    assert capped["bps"] <= CAP_BPS * (1 + TOLERANCE), capped
    assert free["bps"] > CAP_BPS * (1 + TOLERANCE), free  # the cap is what held it down
    targets = [e for e in gw.events("video.bitrate.target")]
    print(f"governor events: {targets}")


# -- re-offers: hold, resume and a move of the room system's video ----------------------------

GREEN = (20, 200, 20)


def _offer(audio_port: int, video_port: int, sid: int, version: int, direction: str = "sendrecv") -> str:
    """The room system's (re-)offer: audio unchanged, the video line on ``video_port`` with
    ``direction``; ``version`` is the o= session version (RFC 3264 8: bumped for a change)."""
    video = [*video_offer_lines(HOST, video_port)[:-1], f"a={direction}"]
    audio = offer_sdp(HOST, audio_port, session_id=sid).replace(f"o=- {sid} 1 ", f"o=- {sid} {version} ")
    return audio + "\r\n".join(video) + "\r\n"


async def _reoffers(gw: GatewayProcess) -> dict[str, Any]:
    use_host_addresses([HOST])
    publisher = await wc.publish(gw.http_url, MEETING, video=wc.ColourTrack((20, 20, 220)))
    viewer = await wc.subscribe(gw.http_url, MEETING, exclude=publisher.participant_id)
    moved: RoomVideoEndpoint | None = None
    sid = 4242
    out: dict[str, Any] = {}
    try:
        async with room_system_call(gw.sip_uri(MEETING), colour=RED,
                                    offer=lambda audio_port, video_port: _offer(audio_port, video_port, sid, 1)) as rs:
            uac, room, call, audio_port, gw_video = rs.uac, rs.room, rs.call, rs.audio_port, rs.video_target
            loop = asyncio.get_running_loop()
            await asyncio.sleep(3.0)
            out["before_hold"] = len(room.received)
            out["viewer_before"] = viewer.last_video_rgb()

            async def update(sdp: str) -> SessionDescription:
                resp = await call.uac._request_in_dialog(  # UPDATE (RFC 3311): the same re-offer path
                    call, "UPDATE", headers=[("Content-Type", "application/sdp"), ("Contact", uac.contact)],
                    body=sdp.encode(), timeout=10)
                return SessionDescription.parse(resp.body)

            held = await update(_offer(audio_port, room.rtp_port, sid, 2, direction="sendonly"))
            out["held_answer_dir"] = held.media[1].direction
            await asyncio.sleep(0.5)  # what was in flight arrives
            hold_start = len(room.received)
            await asyncio.sleep(2.0)
            out["during_hold"] = len(room.received) - hold_start

            moved = await RoomVideoEndpoint.bind(HOST, H264PictureSource(GREEN))
            resumed_at = loop.time()
            resumed_wall = time.time()
            answer = await update(_offer(audio_port, moved.rtp_port, sid, 3))
            out["resumed_answer"] = (answer.media[1].port, answer.media[1].direction)
            await room.stop()  # the old port pair is gone
            moved.start(gw_video)
            await asyncio.sleep(3.0)
            got = [(t, u) for t, u in moved.received]
            out.update(
                moved_units=len(got), moved_first_keyframe=got[0][1].keyframe if got else None,
                moved_first_after_ms=(got[0][0] - resumed_wall) * 1000 if got else None,
                moved_colour=colour_of([u for _, u in got]), viewer_after=viewer.last_video_rgb(),
                resume_to_update_ms=(loop.time() - resumed_at) * 1000,
            )
            out["bye"] = (await call.bye()).status
            return out
    finally:
        if moved is not None:
            await moved.stop()
        await viewer.close()
        await publisher.close()


def test_reoffers_hold_resume_and_move_the_video_leg(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    """RFC 3264 8 on the video line (``gateway.calls.renegotiate_video``), by UPDATE (RFC 3311,
    the same re-offer path as a re-INVITE; the test UAC sends re-INVITEs only without SDP):
    ``a=sendonly`` holds the meeting's video toward the room system (nothing arrives), a re-offer
    on a new port pair resumes it there starting with an IDR, and the room system's video from
    the new place latches again (the viewer now decodes its new, green picture)."""
    gw = gateway_factory()
    out = run_on_private_loop(_reoffers(gw), timeout=120)
    print(f"room system got {out['before_hold']} units before the hold, {out['during_hold']} during "
          f"2 s of hold; after the move {out['moved_units']} units, first a keyframe: "
          f"{out['moved_first_keyframe']}, {out['moved_first_after_ms']} ms after the UPDATE; "
          f"colour {out['moved_colour']}; viewer before {out['viewer_before']}, after {out['viewer_after']}")
    assert out["before_hold"] > 10, out
    assert out["held_answer_dir"] == "recvonly", out
    assert out["during_hold"] == 0, out
    assert out["resumed_answer"][1] == "sendrecv", out
    assert out["moved_units"] > 10 and out["moved_first_keyframe"] is True, out
    moved_colour = out["moved_colour"]
    assert moved_colour is not None and moved_colour[2] > 150, out  # the publisher's blue
    assert _red(out["viewer_before"]), out
    after = out["viewer_after"]
    assert after is not None and after[1] > 150 and after[0] < 80, f"viewer sees {after}, not green"
    assert out["bye"] == 200
    assert gw.events("bridge.video.held") and gw.events("bridge.video.resumed")
    assert gw.events("bridge.video.retargeted") and len(gw.events("bridge.rtp.latched", leg="video")) == 2
