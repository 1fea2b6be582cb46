"""H.323 video calls end to end (issue 5, Media: "H.264 video passthrough" on the bridge's video leg).

The real gateway (``roomgate run`` with ``h323.listen``) is dialled by the project's H.323 caller
(tests/peers/h323_caller.py, written from the standards with the codec layer only) with a red
H.264 picture (libx264 via PyAV, ``tests/support/video_room_system.py``) and a 1 kHz tone, while
an aiortc participant publishes a blue picture and a 440 Hz voice.  Everything is proven by
decoded pixels and by the H.245 the caller saw, never by call state alone:

* the caller's red picture reaches a WHEP viewer of the meeting once it is the speaker (encoded
  frames, decoded here);
* the participant's blue picture reaches the H.323 caller (its depacketized H.264, decoded here);
* when the caller starts talking the core switches to it and asks it for a keyframe (PLI on the
  gateway's WHIP leg): the gateway turns that into H.245 videoFastUpdatePicture on the caller's
  video channel, and an IDR from the caller follows (both times printed);
* with Fast Start (the call's media is up when Connect arrives) the caller's flowControlCommand
  (whole multiplex, 384 kbit/s) moves the video leg's bitrate target;
* tshark decodes every PDU the gateway sent, with the H.264 capability and video channels, with
  no malformed frame.

Fast Start with tunnelling and slow start on a separate H.245 connection (plus slow start
tunnelled) cover the three ways the video channels open.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from bridge.ice import use_host_addresses
from h323 import h245
from tests.interop.test_h323_calls import gateway_pdus
from tests.interop.test_walking_skeleton import run_on_private_loop
from tests.peers.h323_caller import CallerResult, H323Caller
from tests.support import webrtc_client as wc
from tests.support.gateway_process import GatewayProcess, free_tcp_port
from tests.support.tshark import TSHARK, capture
from tests.support.video_room_system import TappedViewer, colour_of

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"
RED = (220, 20, 20)
BLUE = (20, 20, 220)


def _is(rgb: tuple[int, int, int] | None, want: tuple[int, int, int]) -> bool:
    return rgb is not None and all(abs(a - b) < 60 for a, b in zip(rgb, want))


#: The caller's flowControlCommand (H.245 8.11): at most 384 kbit/s on everything we send it.
FLOW_CONTROL = h245.FlowControlCommand("wholeMultiplex", None, 3840)


async def _video_call(gw: GatewayProcess, port: int, meeting: str, *, fast_start: bool, tunnelling: bool,
                      turn: float = 3.0) -> dict[str, Any]:
    """The participant talks first (the meeting's speaker), then the H.323 caller; returns what
    each side received and when the switch to the caller was made."""
    use_host_addresses([HOST])
    tone = wc.ToneTrack.sine(440.0)._samples.copy()
    voice = wc.ToneTrack(tone)
    publisher = await wc.publish(gw.http_url, meeting, audio=voice, video=wc.ColourTrack(BLUE))
    viewer = await TappedViewer.join(gw.http_url, meeting)  # the whole meeting: the speaker's picture
    caller = H323Caller(HOST, port, meeting, fast_start=fast_start, tunnelling=tunnelling, video=RED,
                        tone_hz=1000.0, amplitude=0.0, seconds=3 * turn, timeout=3 * turn + 30,
                        commands=(FLOW_CONTROL,) if fast_start else ())
    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {"publisher": publisher.participant_id}
    try:
        call = loop.run_in_executor(None, caller.run)
        await loop.run_in_executor(None, lambda: gw.wait_for_event("call.answered", timeout=30, meeting=meeting))
        await asyncio.sleep(turn)
        # The caller takes the floor: the core switches to it and asks it for an IDR.
        out["switch_at"] = time.time()
        voice._samples = np.zeros_like(tone)
        caller.amplitude = 0.3
        result: CallerResult = await call
        out["result"] = result
        out["viewer"] = list(viewer.received)
    finally:
        await viewer.close()
        await publisher.close()
    return out


COMBINATIONS = [
    pytest.param(True, True, "3201", id="faststart-tunnelled"),
    pytest.param(False, False, "3202", id="slowstart-separate-h245"),
    pytest.param(False, True, "3203", id="slowstart-tunnelled"),
]


@pytest.mark.parametrize(("fast_start", "tunnelling", "meeting"), COMBINATIONS)
def test_h323_caller_and_webrtc_participant_see_each_other(
    gateway_factory: Callable[..., GatewayProcess], tmp_path: Any, fast_start: bool, tunnelling: bool,
    meeting: str,
) -> None:
    if shutil.which(TSHARK) is None:
        pytest.fail("tshark is not installed (make test installs it)")
    port = free_tcp_port()
    gw = gateway_factory(config={"h323": {"listen": f"{HOST}:{port}"}})
    with capture("tcp", tmp_path / "h323-video.pcapng") as cap:
        out = run_on_private_loop(_video_call(gw, port, meeting, fast_start=fast_start, tunnelling=tunnelling),
                                  timeout=120)
    result: CallerResult = out["result"]
    assert result.connected and result.error is None, result

    # The video channels opened the way this combination opens them.
    assert result.video_remote_rtp is not None and result.video_remote_rtp[1] in gw.media_ports, result
    answered = gw.wait_for_event("call.answered", meeting=meeting)
    assert answered["video"] is True and answered["video_port"] == result.video_remote_rtp[1], answered
    if not fast_start:
        assert result.remote_h264, "the gateway's TerminalCapabilitySet lists no H.264"
        assert result.h245.count("openLogicalChannel") == 2, result.h245  # audio and video toward us
    up = gw.events("bridge.leg.up", leg="video")
    assert up and up[-1]["codec"] == "H264" and up[-1]["encryption"] == "plain", up

    # The caller's red picture reaches the meeting's viewer ...
    viewer_units = [u for _, u in out["viewer"]]
    seen = colour_of(viewer_units)
    print(f"viewer: {len(viewer_units)} access units ({sum(u.keyframe for u in viewer_units)} IDRs), "
          f"decoded colour {seen}; caller sent {result.video_units_sent} pictures in "
          f"{result.video_packets_sent} packets")
    assert _is(seen, RED), f"the WebRTC viewer decodes {seen}, not the H.323 caller's red"
    # ... and the participant's blue picture reaches the caller.
    caller_units = [u for _, u in result.video_received]
    got = colour_of(caller_units)
    print(f"H.323 caller: {len(caller_units)} access units ({sum(u.keyframe for u in caller_units)} IDRs) "
          f"in {result.video_packets_in} packets, decoded colour {got}")
    assert _is(got, BLUE), f"the H.323 caller decodes {got}, not the participant's blue"

    # The switch to the caller: the core's keyframe request became videoFastUpdatePicture on the
    # caller's video channel, and the caller's IDR followed.
    switch_at = out["switch_at"]
    updates = [(t, ch) for t, ch in result.fast_updates if t > switch_at]
    switches = [e for e in gw.events("core.video.switched") if e.get("publisher") != out["publisher"]]
    assert updates, (f"no videoFastUpdatePicture after the caller took the floor; all: {result.fast_updates}",
                     switches)
    first, channel = updates[0]
    idr = next((t for t in result.idrs_sent if t >= first), None)
    assert idr is not None, ("no IDR after the videoFastUpdatePicture", result.idrs_sent)
    print(f"caller took the floor -> videoFastUpdatePicture on channel {channel}: {(first - switch_at) * 1000:.0f} ms; "
          f"-> IDR sent {(idr - first) * 1000:.0f} ms later")
    requested = [e for e in gw.events("video.keyframe.requested") if e.get("method") == "h245_fast_update"]
    assert requested, gw.events("video.keyframe.requested")

    if fast_start:  # flowControlCommand -> the video leg's governor (-> the REMB cap toward the core)
        flow = gw.wait_for_event("h323.flow_control", meeting=meeting)
        assert flow["applied"] is True and flow["target_bps"] == 384_000, flow
        assert any(e["target_bps"] == 384_000 and e["limited_by"] == "h245"
                   for e in gw.events("video.bitrate.target")), gw.events("video.bitrate.target")

    # Release: the gateway's video leg goes with the call.
    gw.wait_for_event("call.ended", timeout=10, meeting=meeting)
    gw.wait_for_event("bridge.leg.down", timeout=10, leg="video")

    # tshark: every PDU the gateway sent decodes, none is malformed, the video channels show.
    h245_port = result.h245_address[1] if result.h245_address else None
    summary, verbose = gateway_pdus(cap.path, port, h245_port)
    assert summary, f"no gateway frames captured ({cap.stderr})"
    assert "Malformed" not in verbose and "Expert Info (Error" not in verbose
    assert "videoData" in verbose and "0.0.8.241.0.0.1" in verbose, "no H.264 video in the gateway's H.245"
    if not fast_start:
        assert "receiveVideoCapability" in verbose, "the TCS shows no video capability"


def test_the_callers_close_of_its_video_channel_closes_the_video_leg_only(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    """Slow start on a separate H.245 connection: after 2 s of media the caller closes its H.264
    channel (CloseLogicalChannel); the gateway acks it and closes the call's video leg, and the
    call goes on (audio) until the caller releases it."""
    port = free_tcp_port()
    gw = gateway_factory(config={"h323": {"listen": f"{HOST}:{port}"}})
    result = H323Caller(HOST, port, "3204", fast_start=False, tunnelling=False, video=RED, seconds=4.0,
                        timeout=40, close_video_after=2.0).run()
    assert result.connected and result.error is None, result
    assert "closeLogicalChannelAck" in result.h245, result.h245
    closed = gw.wait_for_event("h323.channel_closed", meeting="3204")
    assert closed["media"] == "video" and closed["video_leg_closed"] is True, closed
    down = gw.wait_for_event("bridge.leg.down", leg="video")
    ended = gw.wait_for_event("call.ended", timeout=10, meeting="3204")
    assert ended["by"] == "remote" and down["timestamp"] <= ended["timestamp"], (down, ended)
    print(f"video leg down at {down['timestamp']} after {down['access_units']} access units from the "
          f"caller; call ended at {ended['timestamp']}")
    assert down["access_units"] > 0 and result.rtp_in > 0
