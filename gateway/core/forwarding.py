"""Forwarding instead of mixing: the rule that decides it, and the tap that feeds it.

A subscriber that hears exactly one publisher gains nothing from the mixer: decoding that
publisher (aiortc's decoder thread), "mixing" one block and re-encoding it only costs CPU and
20-40 ms. Such a subscriber is sent the publisher's encoded frames as they are (an SFU's 1:1
mode), provided the publisher is not muted and both ends negotiated the same codec. Anything
else is mixed as before.

The rule (:func:`audio_route`) and the decoder bookkeeping (:func:`publishers_to_decode`) are
plain functions of the meeting's state, unit-tested without a loop; the meeting re-evaluates
them on every join, leave, mute, unmute and codec change.

The tap (:class:`DecoderGate`) relies on this aiortc 1.16 contract (aiortc/rtcrtpreceiver.py):
``RTCRtpReceiver._handle_rtp_packet`` depayloads each packet, reassembles a frame in its
jitter buffer and calls ``self.__decoder_queue.put((codec, encoded_frame))`` on the event loop
thread; ``receive()`` hands that same queue object to the ``decoder_worker`` thread, which
calls ``get()`` and ends on ``None``. Replacing the name-mangled
``_RTCRtpReceiver__decoder_queue`` on one receiver *before* ``receive()`` (i.e. between
``setRemoteDescription`` and the connection) puts the gate between the jitter buffer and the
decoder, per instance, with no global patch. Receiver statistics, NACK/PLI and RTCP RR are
untouched because ``_handle_rtp_packet`` still runs in full. ``bridge.webrtc_leg.EncodedFrameTap``
relies on the same contract for the gateway's H.264 passthrough (it never decodes; this gate
decodes while someone needs the audio decoded).
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

log = structlog.get_logger("gateway.core.forwarding")

DECODER_QUEUE_ATTRIBUTE = "_RTCRtpReceiver__decoder_queue"


@dataclass(frozen=True)
class AudioCodec:
    """What must match for a payload to be sent on unchanged (the payload type may differ)."""

    name: str
    clock_rate: int
    channels: int

    @classmethod
    def of(cls, codec: RTCRtpCodecParameters) -> AudioCodec:
        return cls(codec.name.lower(), codec.clockRate, codec.channels or 1)


@dataclass(frozen=True)
class Route:
    """How one subscriber's audio is made: forwarded from ``publisher``, or mixed (None), and why."""

    publisher: str | None
    reason: str

    @property
    def forwarding(self) -> bool:
        return self.publisher is not None


def audio_route(publishers: Mapping[str, AudioCodec | None], muted: Collection[str],
                exclude: str | None, subscriber_codec: AudioCodec | None) -> Route:
    """Forward when exactly one publisher is audible to the subscriber, unmuted, in its codec.

    ``publishers`` are the meeting's audio publishers with the codec they send in (None until
    their first frame shows it); ``exclude`` is the subscriber's own publisher.
    """
    audible = [pid for pid in publishers if pid != exclude]
    if not audible:
        return Route(None, "no_publisher")
    if len(audible) > 1:
        return Route(None, "several_publishers")
    (publisher,) = audible
    if publisher in muted:
        return Route(None, "muted")
    codec = publishers[publisher]
    if codec is None or subscriber_codec is None:
        return Route(None, "codec_unknown")
    if codec != subscriber_codec:
        return Route(None, "codec_mismatch")
    return Route(publisher, "one_publisher")


def publishers_to_decode(publishers: Collection[str], muted: Collection[str],
                         subscribers: Collection[tuple[str | None, Route]],
                         video_sources: Collection[str]) -> set[str]:
    """The publishers whose audio someone still needs decoded.

    ``subscribers`` are (exclude, route) pairs. A publisher is decoded when a *mixing*
    subscriber hears it, or when the active-speaker choice compares its energy: some
    subscriber's video switch has it and at least one other video source to choose between.
    A muted publisher is mixed as silence and weighs nothing for the speaker choice, so it is
    never decoded. Forwarding subscribers need nothing decoded.
    """
    needed: set[str] = set()
    for pid in publishers:
        if pid in muted:
            continue
        for exclude, route in subscribers:
            if pid == exclude:
                continue
            if not route.forwarding or (pid in video_sources and len(set(video_sources) - {exclude}) >= 2):
                needed.add(pid)
                break
    return needed


EncodedFrameSink = Callable[[RTCRtpCodecParameters, JitterFrame], None]


class DecoderGate(queue.Queue):  # type: ignore[type-arg]
    """aiortc's decoder input queue with a tap in front and a switch: see the module docstring.

    Every encoded frame goes to ``on_frame`` (on the event loop thread, synchronously); it
    reaches the decoder thread only while ``decode`` is True. The end-of-stream ``None`` always
    passes, so the decoder thread and the track end as before.
    """

    def __init__(self, on_frame: EncodedFrameSink) -> None:
        super().__init__()
        self.on_frame = on_frame
        self.decode = True
        self.frames = 0
        """Encoded frames seen."""
        self.decoded = 0
        """Encoded frames handed to the decoder thread (a counter for stats and tests)."""

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is not None:
            codec, frame = item
            self.frames += 1
            try:
                self.on_frame(codec, frame)
            except Exception:
                log.exception("core.audio.tap_failed")
            if not self.decode:
                return
            self.decoded += 1
        super().put(item, block, timeout)


def install_decoder_gate(receiver: Any, on_frame: EncodedFrameSink) -> DecoderGate | None:
    """Put a :class:`DecoderGate` on one aiortc receiver (before ``receive()`` starts its decoder).

    Returns None, leaving the receiver as it was, if this aiortc has no such queue (the
    publisher is then always mixed: its codec never becomes known)."""
    current = getattr(receiver, DECODER_QUEUE_ATTRIBUTE, None)
    if not isinstance(current, queue.Queue) or not current.empty():
        log.warning("core.audio.tap_unsupported", reason="aiortc receiver has no idle decoder queue")
        return None
    gate = DecoderGate(on_frame)
    setattr(receiver, DECODER_QUEUE_ATTRIBUTE, gate)
    return gate
