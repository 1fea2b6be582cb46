"""The forwarding rule, the decoder bookkeeping and the tap, without peers or sockets.

The meeting-level tests drive a real :class:`Meeting` with fake aiortc receivers (objects
holding the private decoder queue the tap replaces) and check what reaches the decoder queue,
what reaches the subscriber's track, and the ``core.audio.forwarding`` events.
"""

from __future__ import annotations

import queue
from collections.abc import MutableMapping
from typing import Any

import pytest
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from gateway.core.forwarding import (
    DECODER_QUEUE_ATTRIBUTE,
    AudioCodec,
    DecoderGate,
    Route,
    audio_route,
    install_decoder_gate,
    publishers_to_decode,
)
from gateway.core.meeting import Meeting, Participant
from tests.support.core_server import loop_and_reactor, run

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
OPUS_PT96 = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=96)
PCMU = RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, channels=1, payloadType=0)
PCMA = RTCRtpCodecParameters(mimeType="audio/PCMA", clockRate=8000, channels=1, payloadType=8)
O, U = AudioCodec.of(OPUS), AudioCodec.of(PCMU)


@pytest.fixture(scope="module", autouse=True)
def reactor() -> object:
    return loop_and_reactor()[1]


# -- the rule -----------------------------------------------------------------------------------


def test_exactly_one_audible_publisher_in_the_same_codec_is_forwarded() -> None:
    assert audio_route({"a": O}, set(), None, O) == Route("a", "one_publisher")
    # The subscriber's own publisher does not count: two callers of one meeting hear each other.
    assert audio_route({"a": O, "b": O}, set(), "b", O) == Route("a", "one_publisher")


def test_payload_type_may_differ_but_name_rate_and_channels_may_not() -> None:
    assert AudioCodec.of(OPUS) == AudioCodec.of(OPUS_PT96)
    assert audio_route({"a": U}, set(), None, AudioCodec.of(PCMA)) == Route(None, "codec_mismatch")
    assert audio_route({"a": O}, set(), None, U) == Route(None, "codec_mismatch")
    assert audio_route({"a": AudioCodec("opus", 48000, 1)}, set(), None, O).reason == "codec_mismatch"


@pytest.mark.parametrize(("publishers", "muted", "exclude", "codec", "reason"), [
    ({}, set(), None, O, "no_publisher"),
    ({"a": O}, set(), "a", O, "no_publisher"),
    ({"a": O, "b": O}, set(), None, O, "several_publishers"),
    ({"a": O, "b": O, "c": O}, set(), "a", O, "several_publishers"),
    ({"a": O, "b": O}, {"a"}, "b", O, "muted"),
    ({"a": None}, set(), None, O, "codec_unknown"),
    ({"a": O}, set(), None, None, "codec_unknown"),
])
def test_everything_else_is_mixed(publishers: dict[str, AudioCodec | None], muted: set[str], exclude: str | None,
                                  codec: AudioCodec | None, reason: str) -> None:
    assert audio_route(publishers, muted, exclude, codec) == Route(None, reason)


def test_a_muted_publisher_among_several_still_needs_the_mix() -> None:
    # Muting one of two audible publishers leaves one audible voice, but the mix stays: the rule
    # counts publishers, so a mute never silently reroutes a subscriber to someone else's frames.
    assert audio_route({"a": O, "b": O}, {"a"}, None, O) == Route(None, "several_publishers")


codecs = st.sampled_from([O, U, None])
ids = st.sampled_from(["a", "b", "c", "d"])


@settings(max_examples=300, deadline=None)
@given(publishers=st.dictionaries(ids, codecs, max_size=4), muted=st.sets(ids),
       exclude=st.none() | ids, subscriber=codecs)
def test_rule_property(publishers: dict[str, AudioCodec | None], muted: set[str], exclude: str | None,
                       subscriber: AudioCodec | None) -> None:
    route = audio_route(publishers, muted, exclude, subscriber)
    audible = [p for p in publishers if p != exclude]
    expected = (len(audible) == 1 and audible[0] not in muted and subscriber is not None
                and publishers[audible[0]] == subscriber)
    assert route.forwarding == expected
    if route.forwarding:
        assert route.publisher == audible[0] and route.publisher != exclude


# -- what still needs decoding ------------------------------------------------------------------


def test_forwarding_subscribers_need_nothing_decoded() -> None:
    fwd_a, fwd_b = Route("a", "one_publisher"), Route("b", "one_publisher")
    assert publishers_to_decode(["a", "b"], set(), [("b", fwd_a), ("a", fwd_b)], set()) == set()


def test_a_mixing_subscriber_needs_every_publisher_it_hears_decoded() -> None:
    mixing = Route(None, "several_publishers")
    assert publishers_to_decode(["a", "b", "c"], set(), [("a", mixing)], set()) == {"b", "c"}
    assert publishers_to_decode(["a", "b", "c"], {"b"}, [(None, mixing)], set()) == {"a", "c"}
    assert publishers_to_decode(["a"], set(), [], set()) == set()  # nobody listens


def test_the_speaker_choice_needs_energies_only_between_two_video_sources() -> None:
    fwd = Route("a", "one_publisher")
    # One video source to show: nothing to compare, no decoding.
    assert publishers_to_decode(["a", "b"], set(), [("b", fwd)], {"a", "b"}) == set()
    # A subscriber without exclude chooses between a and b: both energies are needed.
    assert publishers_to_decode(["a", "b"], set(), [("b", fwd), (None, Route("a", "x"))], {"a", "b"}) == {"a", "b"}


@settings(max_examples=300, deadline=None)
@given(publishers=st.sets(ids), muted=st.sets(ids), video=st.sets(ids),
       subscribers=st.lists(st.tuples(st.none() | ids, st.none() | ids), max_size=4))
def test_decoding_property(publishers: set[str], muted: set[str], video: set[str],
                           subscribers: list[tuple[str | None, str | None]]) -> None:
    pairs = [(exclude, Route(src, "r")) for exclude, src in subscribers]
    decode = publishers_to_decode(publishers, muted, pairs, video)
    assert decode <= publishers - muted
    for pid in publishers - muted:
        mixed_hearer = any(not route.forwarding and exclude != pid for exclude, route in pairs)
        if mixed_hearer:
            assert pid in decode
        if not pairs or all(exclude == pid for exclude, _ in pairs):
            assert pid not in decode  # nobody hears it


# -- the tap ------------------------------------------------------------------------------------


class FakeReceiver:
    """Holds what the tap replaces on aiortc's RTCRtpReceiver: its decoder input queue."""

    def __init__(self) -> None:
        setattr(self, DECODER_QUEUE_ATTRIBUTE, queue.Queue())

    @property
    def decoder_queue(self) -> queue.Queue[Any]:
        return getattr(self, DECODER_QUEUE_ATTRIBUTE)  # type: ignore[no-any-return]


def test_gate_hands_every_frame_to_the_tap_and_only_some_to_the_decoder() -> None:
    seen: list[int] = []
    receiver = FakeReceiver()
    gate = install_decoder_gate(receiver, lambda codec, frame: seen.append(frame.timestamp))
    assert isinstance(gate, DecoderGate) and receiver.decoder_queue is gate
    gate.put((OPUS, JitterFrame(b"x", 0)))
    gate.decode = False
    gate.put((OPUS, JitterFrame(b"y", 960)))
    gate.put(None)  # end of stream always reaches the decoder thread
    assert seen == [0, 960] and (gate.frames, gate.decoded) == (2, 1)
    assert gate.get()[1].timestamp == 0 and gate.get() is None and gate.empty()


def test_gate_survives_a_failing_tap_and_refuses_a_receiver_it_does_not_know() -> None:
    def boom(codec: object, frame: object) -> None:
        raise RuntimeError("tap bug")

    gate = install_decoder_gate(FakeReceiver(), boom)
    assert gate is not None
    with capture_logs() as logs:
        gate.put((OPUS, JitterFrame(b"x", 0)))
    assert gate.get()[1].data == b"x"  # decoding goes on
    assert [e["event"] for e in logs] == ["core.audio.tap_failed"]
    with capture_logs() as logs:
        assert install_decoder_gate(object(), boom) is None
    assert [e["event"] for e in logs] == ["core.audio.tap_unsupported"]


# -- the meeting re-evaluates on join, leave, mute, unmute and codec --------------------------


class Rig:
    """A meeting with fake peers: publishers get a tapped fake receiver, subscribers a codec."""

    def __init__(self) -> None:
        self.meeting = Meeting("m")
        self.receivers: dict[str, FakeReceiver] = {}

    def publisher(self, pid: str) -> Participant:
        p = Participant(id=pid, kind="whip", pc=None)  # type: ignore[arg-type]
        self.meeting.add(p)
        self.receivers[pid] = FakeReceiver()
        assert self.meeting.tap_audio(p, self.receivers[pid])
        return p

    def subscriber(self, pid: str, exclude: str | None, codec: RTCRtpCodecParameters = OPUS) -> Participant:
        p = Participant(id=pid, kind="whep", pc=None, exclude=exclude)  # type: ignore[arg-type]
        self.meeting.add(p)
        self.meeting.set_send_codec(p, codec)
        return p

    def send(self, pid: str, timestamp: int, codec: RTCRtpCodecParameters = OPUS) -> None:
        self.receivers[pid].decoder_queue.put((codec, JitterFrame(b"%s-%d" % (pid.encode(), timestamp), timestamp)))

    def decoded(self, pid: str) -> int:
        return self.receivers[pid].decoder_queue.qsize()

    def routes(self) -> dict[str, str | None]:
        return self.meeting.stats()["audio"]["forwarding"]  # type: ignore[index, return-value]


def test_meeting_switches_between_forwarding_and_mixing() -> None:
    async def scenario() -> list[MutableMapping[str, Any]]:
        rig = Rig()
        with capture_logs() as logs:
            a, b = rig.publisher("a"), rig.publisher("b")
            to_a, to_b = rig.subscriber("to_a", exclude="b"), rig.subscriber("to_b", exclude="a")
            assert rig.routes() == {}  # no codec seen yet: mixed, and decoded
            rig.send("a", 0)
            rig.send("b", 0)
            assert rig.routes() == {"to_a": "a", "to_b": "b"}
            # The first frames were decoded? No: seeing the codec switched decoding off first.
            assert (rig.decoded("a"), rig.decoded("b")) == (0, 0)
            rig.send("a", 960)
            assert to_a.audio is not None and [d for d, _ in to_a.audio._forwarded] == [b"a-0", b"a-960"]

            c = rig.publisher("c")  # join: nobody hears exactly one publisher any more
            assert rig.routes() == {}
            rig.send("a", 1920)
            assert rig.decoded("a") == 1
            assert rig.meeting.remove(c.id) is c  # leave: back to forwarding
            assert rig.routes() == {"to_a": "a", "to_b": "b"}
            rig.send("a", 2880)
            assert rig.decoded("a") == 1

            assert rig.meeting.set_muted("a", True)  # mute: to_a mixes (silence), a is not decoded
            assert rig.routes() == {"to_b": "b"}
            rig.send("a", 3840)
            assert rig.decoded("a") == 1
            assert rig.meeting.set_muted("a", False)
            assert rig.routes() == {"to_a": "a", "to_b": "b"}

            rig.send("b", 960, PCMU)  # b changes codec: to_b (Opus) must mix it
            assert rig.routes() == {"to_a": "a"}
            assert rig.decoded("b") == 1
            assert to_b.audio is not None and not to_b.audio.forwarding
            stats = rig.meeting.stats()["audio"]
            assert stats["encoded_frames"] == {"a": 5, "b": 2}  # type: ignore[index]
            for p in (a, b, to_a, to_b):
                rig.meeting.remove(p.id)
        return logs

    logs = run(scenario())
    switches = [(e["subscriber"], e["forwarding"], e["reason"]) for e in logs if e["event"] == "core.audio.forwarding"]
    assert switches == [
        ("to_a", True, "one_publisher"), ("to_b", True, "one_publisher"),
        ("to_a", False, "several_publishers"), ("to_b", False, "several_publishers"),
        ("to_a", True, "one_publisher"), ("to_b", True, "one_publisher"),
        ("to_a", False, "muted"), ("to_a", True, "one_publisher"),
        ("to_b", False, "codec_mismatch"),
        ("to_a", False, "no_publisher"),  # the teardown: a leaves first
    ]
    assert all(e["meeting"] == "m" and e["publisher"] for e in logs if e["event"] == "core.audio.forwarding")


def test_subscriber_in_another_codec_is_mixed_from_the_start() -> None:
    async def scenario() -> dict[str, str | None]:
        rig = Rig()
        rig.publisher("a")
        rig.subscriber("s", exclude=None, codec=PCMU)
        rig.send("a", 0)
        routes = rig.routes()
        assert rig.decoded("a") == 1
        rig.meeting.stop_clock()
        return routes

    assert run(scenario()) == {}
