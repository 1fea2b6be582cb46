"""An Opus legacy leg (RFC 7587) across the real embedded core: 48 kHz RTP both ways.

No SIP peer packaged here speaks Opus through the gateway yet (pjsua2's wheel has no Opus; baresip
has ``opus.so`` but tests/support/baresip.py loads only G.711/G.722), so the far end is the
project's own RTP endpoint (tests/interop/test_bridge_webrtc_leg.py's ``LegacyEndpoint``, encoding
with libopus) and the other participant a real aiortc peer over WHIP/WHEP (DTLS-SRTP).
What is measured: the tones both ways (FFT), and the RTP the gateway sends: payload type as
negotiated, timestamps stepping by 960 per 20 ms, mono Opus packets.
"""

from __future__ import annotations

import asyncio
from itertools import pairwise
from typing import Any

import numpy as np
import pytest

from bridge.ports import PortAllocator
from bridge.rtp import RtpPacket
from bridge.session import MediaSession
from tests.interop.test_bridge_webrtc_leg import (
    LegacyEndpoint,
    WebPeer,
    session_args,
)
from tests.support.audio import assert_tone
from tests.support.core_server import core_server, loop_and_reactor, run

pytestmark = pytest.mark.interop


def test_opus_leg_crosses_the_core_both_ways() -> None:
    _, reactor = loop_and_reactor()

    async def scenario() -> dict[str, Any]:
        async with core_server() as server:
            peer = WebPeer(server.base_url, reactor, frequency=440)
            await peer.join()
            endpoint = LegacyEndpoint("OPUS", frequency=1000)
            allocator = PortAllocator(44000, 44999, address="127.0.0.1")
            session = MediaSession.allocate(**session_args(server.base_url, reactor, endpoint, allocator))
            await session.start()
            peer.heard.clear()
            await endpoint.talk(session.local_port, seconds=3.0)
            for _ in range(100):
                if session.stats()["legacy"]["packets_in"] >= 150:
                    break
                await asyncio.sleep(0.02)
            stats = session.stats()
            await session.close()
            await peer.leave()
            return {"peer": peer, "endpoint": endpoint, "stats": stats}

    r = run(scenario(), timeout=60)
    stats, peer, endpoint = r["stats"], r["peer"], r["endpoint"]

    heard_by_peer = np.concatenate(peer.heard)
    to_peer = assert_tone(heard_by_peer, 48000, 1000, min_dbfs=-35, skip_seconds=1.0)
    heard_by_endpoint = endpoint.heard()
    spectrum = assert_tone(heard_by_endpoint, 48000, 440, min_dbfs=-35, skip_seconds=1.0)
    assert spectrum.level_at(1000) < -20, "the caller hears itself"

    packets = [RtpPacket.parse(d) for d in endpoint.received]
    steps = {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in pairwise(packets)}
    print(f"[OPUS] peer hears {to_peer.peak_hz:.0f} Hz at {to_peer.rms_dbfs:.1f} dBFS; endpoint hears "
          f"{spectrum.peak_hz:.0f} Hz at {spectrum.rms_dbfs:.1f} dBFS, own 1 kHz at {spectrum.level_at(1000):.0f} dB; "
          f"{len(packets)} packets, timestamp steps {sorted(steps)}, "
          f"{8 * sum(len(p.payload) for p in packets) / max(1, len(packets)) * 50 / 1000:.1f} kbit/s")
    legacy = stats["legacy"]
    print({k: v for k, v in legacy.items() if k.startswith("dropped")})
    assert stats["codec"] == "OPUS"
    # Every packet accepted, except those the jitter buffer found too late (a stalled loop on a
    # busy machine delivers a burst); nothing refused as malformed, foreign or undecodable.
    assert legacy["packets_in"] + legacy["dropped_late"] == 150 and legacy["packets_in"] >= 100, legacy
    assert legacy["dropped"] == legacy["dropped_late"], legacy
    assert len(packets) > 100 and {p.payload_type for p in packets} == {endpoint.codec.payload_type}
    # 960 ticks of the 48 kHz clock per 20 ms; a multiple only where the clock skipped frames.
    assert 960 in steps and all(s % 960 == 0 for s in steps), steps
    assert not any(p.payload[0] & 0x04 for p in packets), "stereo Opus sent despite sprop-stereo=0"
