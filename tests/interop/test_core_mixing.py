"""The embedded core with real aiortc peers on loopback: N-1 mixing, leaving, meeting teardown.

Two publishers send 440 Hz and 1000 Hz over WHIP; WHEP subscribers record what
the core sends them and the FFT judges it. The client is tests/support's own
aiortc WHIP/WHEP client, not the bridge's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from tests.support import webrtc_client as wc
from tests.support.audio import analyse, assert_tone
from tests.support.core_server import (
    CoreServer,
    loop_and_reactor,
    run,
    serving_core,
    start_core_server,
)

pytestmark = pytest.mark.interop

RATE = 48_000
SETTLE_SECONDS = 1.0
"""Audio to ignore after all peers connect (jitter buffers filling, first Opus frames)."""


@pytest.fixture(scope="module")
def server() -> Iterator[CoreServer]:
    yield from serving_core()


async def connected(*pcs: object) -> None:
    await asyncio.gather(*(wc.wait_connected(pc) for pc in pcs))  # type: ignore[arg-type]


def test_subscriber_hears_everyone_but_the_excluded_publisher(server: CoreServer) -> None:
    async def scenario() -> tuple[np.ndarray, np.ndarray]:
        a = await wc.publish(server.base_url, "mix", audio=wc.ToneTrack.sine(440))
        b = await wc.publish(server.base_url, "mix", audio=wc.ToneTrack.sine(1000))
        minus_a = await wc.subscribe(server.base_url, "mix", exclude=a.participant_id)
        everyone = await wc.subscribe(server.base_url, "mix", video=False)
        try:
            await connected(a.pc, b.pc, minus_a.session.pc, everyone.session.pc)
            await asyncio.sleep(SETTLE_SECONDS)
            everyone.clear()
            heard_minus_a = await minus_a.record(2.0)
            return heard_minus_a, everyone.audio()
        finally:
            for peer in (minus_a, everyone, a, b):
                await peer.close()

    heard_minus_a, heard_all = run(scenario())

    minus_a = assert_tone(heard_minus_a, RATE, 1000, min_dbfs=-30, skip_seconds=0)
    assert minus_a.level_at(440) < -40, f"440 Hz leaked into the N-1 mix at {minus_a.level_at(440):.1f} dB"

    everything = analyse(heard_all, RATE)
    print(f"minus A: peak {minus_a.peak_hz:.0f} Hz, {minus_a.rms_dbfs:.1f} dBFS, 440 Hz at {minus_a.level_at(440):.1f} dB; "
          f"everyone: {everything.rms_dbfs:.1f} dBFS, 440 Hz {everything.level_at(440):.1f} dB, "
          f"1000 Hz {everything.level_at(1000):.1f} dB")
    assert everything.rms_dbfs > -30
    assert everything.level_at(440) > -6 and everything.level_at(1000) > -6, (
        f"both tones expected: 440 Hz {everything.level_at(440):.1f} dB, 1000 Hz {everything.level_at(1000):.1f} dB")


def test_leaving_removes_participants_and_the_empty_meeting(server: CoreServer) -> None:
    async def scenario() -> None:
        core = server.core
        a = await wc.publish(server.base_url, "leave-me", audio=wc.ToneTrack.sine(440))
        sub = await wc.subscribe(server.base_url, "leave-me", exclude=a.participant_id)
        assert core.meeting_ids() == ["leave-me"]
        kinds = sorted(p.kind for p in core.roster("leave-me"))
        assert kinds == ["whep", "whip"]

        # The publisher's Location is not a subscriber's: DELETE on the wrong kind is 404.
        wrong = await wc.http_request("DELETE", sub.session.url.replace("/whep/", "/whip/"))
        assert wrong.status == 404

        assert (await a.delete()).status == 200
        assert [p.kind for p in core.roster("leave-me")] == ["whep"]
        assert (await a.delete()).status == 404  # already gone
        await a.pc.close()

        assert (await sub.session.delete()).status == 200
        await sub.close(delete=False)
        assert core.meeting("leave-me") is None and core.roster("leave-me") == []

    run(scenario())


def test_whip_response_follows_the_contract(server: CoreServer) -> None:
    async def scenario() -> None:
        pub = await wc.publish(server.base_url, "contract", audio=wc.ToneTrack.sine(440))
        try:
            assert pub.url.startswith(f"{server.base_url}/whip/contract/")
            answer = pub.answer
            assert "a=candidate:" in answer and "127.0.0.1" in answer  # complete, non-trickle
            assert "a=fingerprint:" in answer  # DTLS-SRTP, never plain RTP
            await connected(pub.pc)
            preflight = await wc.http_request("OPTIONS", f"{server.base_url}/whep/contract")
            assert preflight.status == 204
            assert "POST" in preflight.headers["access-control-allow-methods"]
            refused = await wc.http_request("POST", f"{server.base_url}/whep/contract", b"v=0\r\n",
                                            {"Content-Type": "text/plain"})
            assert refused.status == 415
        finally:
            await pub.close()

    run(scenario())


def test_publisher_that_disappears_is_dropped(server: CoreServer) -> None:
    """A publisher that closes its peer connection without DELETE leaves when DTLS/ICE closes."""

    async def scenario() -> None:
        pub = await wc.publish(server.base_url, "vanish", audio=wc.ToneTrack.sine(440))
        await connected(pub.pc)
        await pub.close(delete=False)  # sends DTLS close_notify
        for _ in range(200):
            if server.core.meeting("vanish") is None:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"meeting still has {server.core.roster('vanish')}")

    run(scenario())


def test_active_speaker_video_never_shows_the_excluded_publisher(server: CoreServer) -> None:
    """A (loud, red) and B (quiet, blue) publish video: the full feed shows A, the feed minus A shows B."""

    async def scenario() -> tuple[object, object, int]:
        a = await wc.publish(server.base_url, "video", audio=wc.ToneTrack.sine(440, amplitude=0.5),
                             video=wc.ColourTrack((220, 30, 30)))
        b = await wc.publish(server.base_url, "video", audio=wc.ToneTrack.sine(1000, amplitude=0.01),
                             video=wc.ColourTrack((30, 30, 220)))
        full = await wc.subscribe(server.base_url, "video")
        minus_a = await wc.subscribe(server.base_url, "video", exclude=a.participant_id)
        try:
            await connected(a.pc, b.pc, full.session.pc, minus_a.session.pc)
            await asyncio.sleep(3.0)
            return full.last_video_rgb(), minus_a.last_video_rgb(), min(full.video_count, minus_a.video_count)
        finally:
            for peer in (full, minus_a, a, b):
                await peer.close()

    full_rgb, minus_a_rgb, frames = run(scenario())
    assert frames > 5, f"only {frames} video frames received"
    assert full_rgb is not None and full_rgb[0] > 150 and full_rgb[2] < 100, f"full feed shows {full_rgb}"
    assert minus_a_rgb is not None and minus_a_rgb[2] > 150 and minus_a_rgb[0] < 100, f"feed minus A shows {minus_a_rgb}"


def test_participant_that_never_connects_is_dropped() -> None:
    """An answered offer whose client never completes ICE is removed after the connect timeout."""

    async def scenario() -> None:
        from aiortc import RTCPeerConnection

        short = await start_core_server(connect_timeout=1.0)
        try:
            pc = RTCPeerConnection(configuration=wc._configuration())
            pc.addTransceiver(wc.ToneTrack.sine(440), direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            result = await wc.http_request("POST", f"{short.base_url}/whip/ghost", pc.localDescription.sdp.encode(),
                                           {"Content-Type": "application/sdp"})
            assert result.status == 201
            await pc.close()  # never applies the answer: the core's ICE checks go unanswered
            assert short.core.meeting("ghost") is not None
            for _ in range(100):
                if short.core.meeting("ghost") is None:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"meeting still has {short.core.roster('ghost')}")
        finally:
            await short.stop()

    run(scenario())


def test_client_that_hangs_up_mid_negotiation_leaves_nothing(server: CoreServer) -> None:
    """The request is cancelled while the core negotiates: the half-made participant is undone, no response."""
    import io

    from aiortc import RTCPeerConnection
    from twisted.python.failure import Failure
    from twisted.web.resource import getChildForRequest
    from twisted.web.test.requesthelper import DummyRequest

    from gateway.core.http import build_core_resource

    async def scenario() -> DummyRequest:
        pc = RTCPeerConnection(configuration=wc._configuration())
        pc.addTransceiver(wc.ToneTrack.sine(440), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        await pc.close()
        root = build_core_resource(server.core, reactor=loop_and_reactor()[1])
        request = DummyRequest([b"whip", b"hangup"])
        request.method = b"POST"
        request.content = io.BytesIO(pc.localDescription.sdp.encode())
        request.requestHeaders.setRawHeaders(b"content-type", [b"application/sdp"])
        getChildForRequest(root, request).render(request)
        while server.core.meeting("hangup") is None:  # the participant is registered before negotiating
            await asyncio.sleep(0)
        request.processingFailed(Failure(ConnectionError("client went away")))
        for _ in range(100):
            await asyncio.sleep(0.01)
        return request

    request = run(scenario())
    assert server.core.meeting("hangup") is None
    assert request.responseCode is None and request.written == []
