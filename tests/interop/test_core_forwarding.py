"""The embedded core forwards instead of mixing when a subscriber hears exactly one publisher.

Two aiortc publishers (440 Hz and 1000 Hz over WHIP) and two WHEP subscribers, each excluding
one publisher, as the gateway connects two callers: each subscriber hears only the other, so
the core sends it that publisher's Opus frames unchanged and decodes nothing. The FFT judges
what arrives; the core's own counters (``Meeting.stats()["audio"]``) show whether its decoders
ran. A third publisher makes mixing necessary, its leaving makes it unnecessary again, and a
muted publisher is heard as silence.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any, Self

import numpy as np
import pytest

from tests.support import webrtc_client as wc
from tests.support.audio import analyse, assert_tone
from tests.support.core_server import (
    CoreServer,
    run,
    serving_core,
)

pytestmark = pytest.mark.interop

RATE = 48_000
SETTLE_SECONDS = 1.0
"""Audio to ignore after peers connect or a route switches (jitter buffers, FIFO prebuffer)."""
RECORD_SECONDS = 2.0
A_HZ, B_HZ, C_HZ = 440, 1000, 1700


@pytest.fixture(scope="module")
def server() -> Iterator[CoreServer]:
    yield from serving_core()


class Pair:
    """Publishers A and B with subscribers "to A" (minus B: hears A) and "to B" (minus A: hears B)."""

    def __init__(self, server: CoreServer, meeting: str) -> None:
        self.server, self.meeting_id = server, meeting
        self.peers: list[Any] = []

    async def __aenter__(self) -> Self:
        url, m = self.server.base_url, self.meeting_id
        self.a = await wc.publish(url, m, audio=wc.ToneTrack.sine(A_HZ))
        self.b = await wc.publish(url, m, audio=wc.ToneTrack.sine(B_HZ))
        self.to_a = await wc.subscribe(url, m, exclude=self.b.participant_id, video=False)
        self.to_b = await wc.subscribe(url, m, exclude=self.a.participant_id, video=False)
        self.peers = [self.to_a, self.to_b, self.a, self.b]
        await asyncio.gather(*(wc.wait_connected(pc) for pc in
                               (self.a.pc, self.b.pc, self.to_a.session.pc, self.to_b.session.pc)))
        await asyncio.sleep(SETTLE_SECONDS)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for peer in self.peers:
            await peer.close()

    def audio_stats(self) -> dict[str, Any]:
        meeting = self.server.core.meeting(self.meeting_id)
        assert meeting is not None
        return meeting.stats()["audio"]  # type: ignore[no-any-return]

    def decoded(self) -> dict[str, int]:
        return dict(self.audio_stats()["decoded_frames"])

    async def record_both(self) -> tuple[np.ndarray, np.ndarray, dict[str, int], dict[str, int]]:
        """Both subscribers' audio over ``RECORD_SECONDS`` and the frames decoded / tapped meanwhile."""
        before, tapped_before = self.decoded(), dict(self.audio_stats()["encoded_frames"])
        self.to_a.clear()
        self.to_b.clear()
        await asyncio.sleep(RECORD_SECONDS)
        heard_a, heard_b = self.to_a.audio(), self.to_b.audio()
        after, tapped_after = self.decoded(), dict(self.audio_stats()["encoded_frames"])
        decoded = {pid: after[pid] - before.get(pid, 0) for pid in after}
        tapped = {pid: tapped_after[pid] - tapped_before.get(pid, 0) for pid in tapped_after}
        return heard_a, heard_b, decoded, tapped


def record_rtp(subscriber: wc.Subscriber) -> list[tuple[int, int]]:
    """(sequence number, timestamp) of every RTP packet the subscriber's audio receiver gets from
    now on; the receiver goes on as before (aiortc looks ``_handle_rtp_packet`` up per packet)."""
    seen: list[tuple[int, int]] = []
    receiver = next(t.receiver for t in subscriber.session.pc.getTransceivers() if t.kind == "audio")
    original = receiver._handle_rtp_packet

    async def handle(packet: Any, arrival_time_ms: int) -> None:
        seen.append((packet.sequence_number, packet.timestamp))
        await original(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle
    return seen


def _only(heard: np.ndarray, frequency: float, absent: tuple[float, ...], label: str) -> None:
    spectrum = assert_tone(heard, RATE, frequency, min_dbfs=-30, skip_seconds=0)
    leaks = {f: round(spectrum.level_at(f), 1) for f in absent}
    print(f"{label}: peak {spectrum.peak_hz:.0f} Hz at {spectrum.rms_dbfs:.1f} dBFS, others {leaks} dB")
    assert all(level < -40 for level in leaks.values()), f"{label}: other tones leaked: {leaks}"


def test_two_party_meeting_is_forwarded_both_ways_without_decoding(server: CoreServer) -> None:
    async def scenario() -> tuple[Pair, tuple[np.ndarray, np.ndarray, dict[str, int], dict[str, int]], dict[str, Any]]:
        async with Pair(server, "fwd-pair") as pair:
            return pair, await pair.record_both(), pair.audio_stats()

    pair, (heard_a, heard_b, decoded, tapped), stats = run(scenario())
    a, b = pair.a.participant_id, pair.b.participant_id
    print(f"forwarding {stats['forwarding']}; over {RECORD_SECONDS} s decoded {decoded}, tapped {tapped}, "
          f"forwarded so far {stats['forwarded_frames']}")
    _only(heard_a, A_HZ, (B_HZ,), "subscriber minus B")
    _only(heard_b, B_HZ, (A_HZ,), "subscriber minus A")
    assert stats["forwarding"] == {pair.to_a.participant_id: a, pair.to_b.participant_id: b}
    assert decoded == {a: 0, b: 0}, f"the core decoded while forwarding: {decoded}"
    assert min(tapped.values()) >= 0.8 * RECORD_SECONDS * 50, f"too few frames reached the tap: {tapped}"


def test_third_publisher_switches_to_mixing_and_leaving_switches_back(server: CoreServer) -> None:
    async def scenario() -> dict[str, Any]:
        async with Pair(server, "fwd-three") as pair:
            rtp = record_rtp(pair.to_a)
            c = await wc.publish(server.base_url, "fwd-three", audio=wc.ToneTrack.sine(C_HZ))
            pair.peers.append(c)
            await wc.wait_connected(c.pc)
            await asyncio.sleep(SETTLE_SECONDS)
            mixed = await pair.record_both(), pair.audio_stats()["forwarding"]
            await c.close()
            await asyncio.sleep(SETTLE_SECONDS)
            forwarded = await pair.record_both(), pair.audio_stats()["forwarding"]
            return {"pair": pair, "c": c.participant_id, "mixed": mixed, "forwarded": forwarded, "rtp": rtp}

    result = run(scenario())
    pair, c = result["pair"], result["c"]
    a, b = pair.a.participant_id, pair.b.participant_id
    (heard_a, heard_b, decoded, _), routes = result["mixed"]
    print(f"three publishers: routes {routes}, decoded over {RECORD_SECONDS} s {decoded}")
    assert routes == {}
    for heard, wanted, absent, label in ((heard_a, (A_HZ, C_HZ), B_HZ, "minus B"), (heard_b, (B_HZ, C_HZ), A_HZ, "minus A")):
        spectrum = analyse(heard, RATE)
        levels = {f: round(spectrum.level_at(f), 1) for f in (*wanted, absent)}
        print(f"mixed, subscriber {label}: {spectrum.rms_dbfs:.1f} dBFS, tone levels {levels} dB")
        assert spectrum.rms_dbfs > -30
        assert all(levels[f] > -6 for f in wanted) and levels[absent] < -40, f"{label}: {levels}"
    assert decoded[a] > 50 and decoded[b] > 50 and decoded[c] > 50, f"mixing needs every publisher decoded: {decoded}"

    (heard_a, heard_b, decoded, _), routes = result["forwarded"]
    print(f"after C left: routes {routes}, decoded over {RECORD_SECONDS} s {decoded}")
    assert routes == {pair.to_a.participant_id: a, pair.to_b.participant_id: b}
    _only(heard_a, A_HZ, (B_HZ, C_HZ), "after C left, subscriber minus B")
    _only(heard_b, B_HZ, (A_HZ, C_HZ), "after C left, subscriber minus A")
    assert decoded == {a: 0, b: 0}, f"the core decoded while forwarding: {decoded}"

    # Forward -> mix -> forward on one sender: what the subscriber received is one RTP stream,
    # sequence numbers consecutive and timestamps moving on by whole 20 ms frames.
    rtp = result["rtp"]
    seq_steps = {(b_[0] - a_[0]) & 0xFFFF for a_, b_ in itertools.pairwise(rtp)}
    ts_steps = [(b_[1] - a_[1]) & 0xFFFFFFFF for a_, b_ in itertools.pairwise(rtp)]
    longer = [step for step in ts_steps if step != 960]
    print(f"subscriber minus B: {len(rtp)} RTP packets across both switches, sequence steps {seq_steps}, "
          f"timestamp steps other than 960: {longer}")
    assert len(rtp) > 2 * (SETTLE_SECONDS + RECORD_SECONDS) * 50 * 0.8  # both switches covered
    assert seq_steps == {1}
    assert all(0 < step < 48_000 and step % 960 == 0 for step in ts_steps), longer
    assert len(longer) <= len(ts_steps) // 100, f"timestamp gaps: {longer}"


def test_muting_the_forwarded_publisher_gives_silence_and_unmuting_restores_it(server: CoreServer) -> None:
    async def scenario() -> dict[str, Any]:
        async with Pair(server, "fwd-mute") as pair:
            meeting = server.core.meeting("fwd-mute")
            assert meeting.set_muted(pair.b.participant_id, True)
            await asyncio.sleep(SETTLE_SECONDS)
            muted = await pair.record_both(), pair.audio_stats()["forwarding"]
            assert meeting.set_muted(pair.b.participant_id, False)
            await asyncio.sleep(SETTLE_SECONDS)
            unmuted = await pair.record_both(), pair.audio_stats()["forwarding"]
            return {"pair": pair, "muted": muted, "unmuted": unmuted}

    result = run(scenario())
    pair = result["pair"]
    a, b = pair.a.participant_id, pair.b.participant_id
    (heard_a, heard_b, decoded, _), routes = result["muted"]
    silent = analyse(heard_b, RATE)
    print(f"B muted: routes {routes}, subscriber minus A at {silent.rms_dbfs:.1f} dBFS over {heard_b.size} samples, "
          f"decoded {decoded}")
    assert routes == {pair.to_a.participant_id: a}, "only the muted publisher's listener stops forwarding"
    assert heard_b.size > RATE, "the muted publisher's listener still receives a stream"
    assert silent.rms_dbfs < -60, f"muted publisher still heard at {silent.rms_dbfs:.1f} dBFS"
    _only(heard_a, A_HZ, (B_HZ,), "B muted, subscriber minus B")
    assert decoded == {a: 0, b: 0}, f"a muted publisher mixes as silence, undecoded: {decoded}"

    (heard_a, heard_b, _, _), routes = result["unmuted"]
    assert routes == {pair.to_a.participant_id: a, pair.to_b.participant_id: b}
    _only(heard_b, B_HZ, (A_HZ,), "B unmuted, subscriber minus A")
