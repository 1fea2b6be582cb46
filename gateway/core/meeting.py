"""One meeting: its participants, the publishers' audio FIFOs, the 20 ms mixer clock, the video switch.

A meeting exists while it has participants; the core drops it (and with it
every sample, energy and frame it held) when the last one leaves. All of it
runs on the one asyncio loop, so no locks: state changes happen between awaits.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal

import av
import numpy as np
import structlog
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from gateway.core.forwarding import (
    AudioCodec,
    DecoderGate,
    Route,
    audio_route,
    install_decoder_gate,
    publishers_to_decode,
)
from gateway.core.mixer import (
    BLOCK_SAMPLES,
    SAMPLE_RATE,
    TICK_SECONDS,
    SampleFifo,
    block_energy,
    mix_minus,
)
from gateway.core.speaker import smooth
from gateway.core.tracks import MixAudioTrack, SwitchedVideoTrack
from gateway.core.video import VideoSwitch

log = structlog.get_logger("gateway.core")

ParticipantKind = Literal["whip", "whep"]

CLOCK_RESYNC_SECONDS = 0.2
"""If the loop stalls longer than this, the clock skips the missed ticks instead of bursting them."""


@dataclass(frozen=True)
class ParticipantInfo:
    """What the roster shows about a participant (no addresses: those stay out of state and logs)."""

    id: str
    kind: ParticipantKind
    display_name: str | None
    created: float
    """Wall-clock join time (``time.time()``), for display only."""
    exclude: str | None = None
    leg: str = "webrtc"
    """``webrtc`` for a browser (or any WHIP client); ``sip``/``h323`` for a gateway's legacy caller."""
    encryption: str = "dtls-srtp"
    """How the media is protected *before* it reaches the gateway: a browser is ``dtls-srtp`` end to
    end to the gateway; a legacy caller's leg is ``plain`` or ``sdes-srtp`` (what the gateway says)."""


@dataclass
class Participant:
    """A WHIP publisher or WHEP subscriber and everything that must be torn down when it leaves."""

    id: str
    kind: ParticipantKind
    pc: RTCPeerConnection
    display_name: str | None = None
    exclude: str | None = None
    created: float = field(default_factory=time.time)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    audio: MixAudioTrack | None = None
    video: SwitchedVideoTrack | None = None
    has_audio_reader: bool = False
    leg: str = "webrtc"
    encryption: str = "dtls-srtp"
    gate: DecoderGate | None = None
    """A publisher's tap between its audio jitter buffer and decoder (:mod:`gateway.core.forwarding`)."""
    codec: AudioCodec | None = None
    """The audio codec a publisher sends (seen on its first frame) or a subscriber is sent in."""
    route: Route = field(default_factory=lambda: Route(None, "codec_unknown"))
    """How a subscriber's audio is made: forwarded from one publisher or mixed."""

    def info(self) -> ParticipantInfo:
        return ParticipantInfo(self.id, self.kind, self.display_name, self.created, self.exclude,
                               self.leg, self.encryption)


class Meeting:
    """Participants of one meeting id and the media engine that mixes and switches between them."""

    def __init__(self, meeting_id: str, *, speaker_hold: float = 1.0) -> None:
        self.id = meeting_id
        self.created = time.time()
        self.participants: dict[str, Participant] = {}
        self.speaker_hold = speaker_hold
        self._fifos: dict[str, SampleFifo] = {}
        self.energies: dict[str, float] = {}
        self.video = VideoSwitch(self.energies)
        self._clock: asyncio.Task[None] | None = None
        self.ticks = 0
        self.late_ticks = 0
        """Ticks skipped because the loop stalled for longer than ``CLOCK_RESYNC_SECONDS``."""
        #: Publishers an operator muted: their FIFO is still drained, their block mixed as silence.
        self.muted: set[str] = set()
        #: Publisher -> the subscribers' tracks its encoded audio frames are forwarded to.
        self._forward_to: dict[str, list[MixAudioTrack]] = {}

    # -- membership -------------------------------------------------------------------------------

    def add(self, participant: Participant) -> None:
        """Register a participant (before negotiation, so the meeting cannot end under it)."""
        self.participants[participant.id] = participant
        if participant.kind == "whep":
            participant.audio = MixAudioTrack()
            participant.video = SwitchedVideoTrack(self.video, participant.exclude, hold=self.speaker_hold)
        if self._clock is None:
            self._clock = asyncio.ensure_future(self._run_clock())
        self.reroute()

    def remove(self, participant_id: str) -> Participant | None:
        """Forget a participant synchronously and stop its tracks; the caller closes its peer connection."""
        participant = self.participants.pop(participant_id, None)
        if participant is None:
            return None
        for task in participant.tasks:
            task.cancel()
        for track in (participant.audio, participant.video):
            if track is not None:
                track.stop()
        self._fifos.pop(participant_id, None)
        self.muted.discard(participant_id)
        self.energies.pop(participant_id, None)
        self.video.remove_source(participant_id)
        if not self.participants:
            self.stop_clock()
        self.reroute()
        return participant

    @property
    def empty(self) -> bool:
        return not self.participants

    def stop_clock(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None

    def set_muted(self, participant_id: str, muted: bool) -> bool:
        """Mute (or unmute) a WHIP publisher's contribution to every mix; False: no such publisher."""
        participant = self.participants.get(participant_id)
        if participant is None or participant.kind != "whip":
            return False
        (self.muted.add if muted else self.muted.discard)(participant_id)
        log.info("core.participant.muted" if muted else "core.participant.unmuted",
                 meeting=self.id, participant=participant_id)
        self.reroute()
        return True

    # -- forwarding instead of mixing ---------------------------------------------------------------

    def tap_audio(self, participant: Participant, receiver: object) -> bool:
        """Put the forwarding tap on a publisher's audio receiver (before its connection starts).

        Only the first audio receiver is tapped: it is the one whose track feeds the mix."""
        if participant.kind != "whip" or participant.gate is not None:
            return False
        participant.gate = install_decoder_gate(
            receiver, lambda codec, frame: self._on_encoded(participant, codec, frame))
        self.reroute()
        return participant.gate is not None

    def set_send_codec(self, participant: Participant, codec: RTCRtpCodecParameters) -> None:
        """A subscriber's audio sender was negotiated with ``codec`` (what forwarding must match)."""
        if participant.audio is None:
            return
        participant.audio.use_codec(codec)
        participant.codec = AudioCodec.of(codec)
        self.reroute()

    def _on_encoded(self, publisher: Participant, codec: RTCRtpCodecParameters, frame: JitterFrame) -> None:
        """One encoded frame from a publisher's jitter buffer (on the loop, before any decoding)."""
        if self.participants.get(publisher.id) is not publisher:
            return
        seen = AudioCodec.of(codec)
        if seen != publisher.codec:
            publisher.codec = seen
            self.reroute()
        targets = self._forward_to.get(publisher.id)
        if targets:
            timestamp = frame.timestamp * SAMPLE_RATE // seen.clock_rate
            for track in targets:
                track.forward(frame.data, timestamp)

    def reroute(self) -> None:
        """Re-decide every subscriber's route and which publishers still need decoding."""
        publishers = {p.id: p.codec for p in self.participants.values() if p.gate is not None}
        forward_to: dict[str, list[MixAudioTrack]] = {}
        for p in self.participants.values():
            if p.audio is None:
                continue
            route = audio_route(publishers, self.muted, p.exclude, p.codec)
            if route.forwarding != p.route.forwarding or route.publisher != p.route.publisher:
                log.info("core.audio.forwarding", meeting=self.id, subscriber=p.id,
                         forwarding=route.forwarding, publisher=route.publisher or p.route.publisher,
                         reason=route.reason)
            p.route = route
            p.audio.set_forwarding(route.forwarding)
            if route.publisher is not None:
                forward_to.setdefault(route.publisher, []).append(p.audio)
        self._forward_to = forward_to
        subscribers = [(p.exclude, p.route) for p in self.participants.values() if p.audio is not None]
        decode = publishers_to_decode(publishers, self.muted, subscribers, self.video.sources())
        for p in self.participants.values():
            if p.gate is not None:
                p.gate.decode = p.id in decode

    # -- publishers' incoming media -----------------------------------------------------------------

    def attach_incoming(self, participant: Participant, track: MediaStreamTrack) -> None:
        """Start the task that consumes one received track.

        Every received track must be drained, even ones we do not use: aiortc's
        receive queue is unbounded. A publisher's first audio track feeds its
        FIFO, its first video track feeds the switch; anything else (a WHEP
        client sending media, a second audio track) is read and discarded.
        """
        if participant.kind == "whip" and track.kind == "audio" and not participant.has_audio_reader:
            participant.has_audio_reader = True
            coro = self._read_audio(participant.id, track)
        elif participant.kind == "whip" and track.kind == "video" and participant.id not in self.video.sources():
            self.video.add_source(participant.id)
            self.reroute()  # a second video source makes the speaker choice need audio energies
            coro = self._read_video(participant.id, track)
        else:
            coro = _drain(track)
        participant.tasks.append(asyncio.ensure_future(coro))

    async def _read_audio(self, participant_id: str, track: MediaStreamTrack) -> None:
        """Downmix a publisher's decoded audio to mono 48 kHz int16 and append it to its FIFO."""
        fifo = SampleFifo()
        self._fifos[participant_id] = fifo
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        try:
            while True:
                frame = await track.recv()
                if not isinstance(frame, av.AudioFrame):
                    continue
                for out in resampler.resample(frame):
                    fifo.write(out.to_ndarray().reshape(-1))
        except MediaStreamError:
            pass
        finally:
            if self._fifos.get(participant_id) is fifo:
                del self._fifos[participant_id]

    async def _read_video(self, participant_id: str, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if isinstance(frame, av.VideoFrame):
                    self.video.deliver(participant_id, frame)
        except MediaStreamError:
            pass
        finally:
            self.video.remove_source(participant_id)
            self.reroute()

    # -- the clock ------------------------------------------------------------------------------------

    async def _run_clock(self) -> None:
        """Tick every 20 ms against ``loop.time()`` so error never accumulates (no ``sleep(0.02)`` chain)."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            next_tick += TICK_SECONDS
            delay = next_tick - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -CLOCK_RESYNC_SECONDS:
                skipped = int(-delay / TICK_SECONDS)
                self.late_ticks += skipped
                next_tick = loop.time()
                log.warning("core.mixer.late", meeting=self.id, skipped_ticks=skipped)
            try:
                self.tick()
            except Exception:
                log.exception("core.mixer.tick_failed", meeting=self.id)

    def tick(self) -> None:
        """Take one block from every publisher, update energies, push each subscriber its N-1 mix."""
        self.ticks += 1
        blocks = {pid: fifo.read(BLOCK_SAMPLES) for pid, fifo in self._fifos.items()}
        for pid in self.muted.intersection(blocks):
            blocks[pid] = np.zeros_like(blocks[pid])
        for pid, block in blocks.items():
            self.energies[pid] = smooth(self.energies.get(pid, 0.0), block_energy(block))
        subscribers = [p for p in self.participants.values() if p.audio is not None and not p.route.forwarding]
        if not subscribers:
            return
        mixes = mix_minus(blocks, {p.exclude for p in subscribers})
        for p in subscribers:
            assert p.audio is not None
            p.audio.push(mixes.get(p.exclude, mixes[None]))

    def stats(self) -> dict[str, object]:
        """Counters for the control API and tests (no names or addresses)."""
        return {
            "participants": len(self.participants),
            "publishers_with_audio": len(self._fifos),
            "ticks": self.ticks,
            "late_ticks": self.late_ticks,
            "fifo": {pid: {"queued": len(f), "dropped": f.dropped, "underruns": f.underruns}
                     for pid, f in self._fifos.items()},
            "audio": {
                "decoded_frames": {p.id: p.gate.decoded for p in self.participants.values() if p.gate},
                "encoded_frames": {p.id: p.gate.frames for p in self.participants.values() if p.gate},
                "forwarding": {p.id: p.route.publisher for p in self.participants.values()
                               if p.audio is not None and p.route.forwarding},
                "forwarded_frames": {p.id: p.audio.forwarded_frames for p in self.participants.values()
                                     if p.audio is not None},
            },
        }


async def _drain(track: MediaStreamTrack) -> None:
    """Read and discard a track nobody needs, so its receive queue stays empty."""
    try:
        while True:
            await track.recv()
    except MediaStreamError:
        pass
