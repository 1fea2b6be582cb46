"""The WebRTC leg: the caller joins a meeting of the conference core as a WHIP publisher plus a
WHEP subscriber to the meeting's mix minus itself, over DTLS-SRTP (aiortc).

Two peer connections instead of one sendrecv: that is how WHIP/WHEP split
publish and play, and it lets the core treat the gateway exactly like a browser
(its page does the same), with no gateway-specific API.

Audio toward the core: :class:`CallerAudioTrack` is fed the caller's decoded
PCM, resamples it to 48 kHz and hands aiortc 20 ms frames on its own clock (as
aiortc's ``AudioStreamTrack`` paces silence), silence when the caller's side is
quiet, so the Opus stream never stalls on legacy-side loss.

Audio from the core: a task reads the WHEP track's frames (48 kHz Opus decoded
by aiortc), downmixes to mono, resamples to the legacy codec's rate and hands
the PCM to ``on_audio`` (the legacy leg's bounded outbound FIFO).

On the G.711 fast path (``passthrough_codec``) neither runs: the WHIP sender has no track and
is quieted (:func:`bridge.fastpath.quiet_idle_sender`: aiortc would otherwise wake it every
20 ms for nothing: docs/performance.md has the before/after figures), and the
WHEP receiver's packets are tapped before aiortc's jitter buffer (:func:`bridge.fastpath.tap_rtp`).
"""

from __future__ import annotations

import asyncio
import fractions
import queue
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import av
import numpy as np
import structlog
from aiortc import (
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from bridge.audio_jitter import use_low_delay_jitter_buffer
from bridge.codecs import PcmFifo, Resampler, downmix, silence
from bridge.fastpath import (
    negotiated_payload_type,
    prefer_audio_codec,
    quiet_idle_sender,
    tap_rtp,
)
from bridge.h264_rtp import AccessUnit, is_keyframe, split_annexb
from bridge.ice import rtc_configuration
from bridge.pacing import FramePacer, mono_s16_frame
from bridge.whip_client import (
    CoreError,
    CoreProtocolError,
    CoreUnreachable,
    WhipClient,
    WhipResource,
)

log = structlog.get_logger("bridge.webrtc_leg")


class CoreLeft(CoreError):
    """:meth:`WebRtcLeg.leave` was called (the caller hung up) before the join completed."""

WEBRTC_RATE = 48000
PTIME = 0.020
#: Caller audio queued toward aiortc beyond this is dropped oldest-first.
INBOUND_MAX_MS = 200
#: Seconds allowed for ICE + DTLS of both peer connections after the answers arrive.
CONNECT_TIMEOUT = 10.0


class CallerAudioTrack(MediaStreamTrack):
    """The caller's audio as an aiortc track: 20 ms s16 mono 48 kHz frames on a steady clock."""

    kind = "audio"

    def __init__(self, source_rate: int) -> None:
        super().__init__()
        self._resampler = Resampler(source_rate, WEBRTC_RATE)
        self._samples = int(WEBRTC_RATE * PTIME)
        self._fifo = PcmFifo(WEBRTC_RATE * INBOUND_MAX_MS // 1000, target_samples=self._samples,
                             name="bridge.caller_audio")
        self._silence = silence(self._samples)
        self._pacer = FramePacer(WEBRTC_RATE, self._samples)
        self.frames_sent = 0
        self.silent_frames = 0

    @property
    def overflow_samples(self) -> int:
        return self._fifo.dropped_samples

    def feed(self, pcm: np.ndarray) -> None:
        """Caller PCM at ``source_rate`` (any length)."""
        self._fifo.push(self._resampler.process(pcm))

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        pts = await self._pacer.next_pts()
        pcm = self._fifo.pop(self._samples)
        if pcm is None:
            pcm = self._silence
            self.silent_frames += 1
        self.frames_sent += 1
        return mono_s16_frame(pcm, pts, WEBRTC_RATE)


#: RTP video clock (RFC 6184 8.2.1): access-unit timestamps and packet pts are in 1/90000 s.
VIDEO_TIME_BASE = fractions.Fraction(1, 90_000)
#: How far pts moves when the room system's RTP clock jumps backwards (a new SSRC, a re-offer to
#: a new port): one frame at 30 fps. Not zero: a picture stamped like the one before it would be
#: merged into that frame by the receiver (RTP frames are told apart by timestamp).
VIDEO_RESTART_STEP = 3000
#: Access units queued toward aiortc; past this the sender has stalled and the queue restarts
#: at the next keyframe (dropping a P picture would break every picture after it anyway).
VIDEO_QUEUE_UNITS = 30


class RoomVideoTrack(MediaStreamTrack):
    """The room system's H.264 as an aiortc track of pre-encoded frames (video passthrough).

    ``recv()`` returns an ``av.Packet`` holding one Annex B access unit: aiortc's
    ``RTCRtpSender`` then skips its encoder and only packs the packet (``H264Encoder.pack``:
    RFC 6184 STAP-A/FU-A), so the core receives the room system's pictures bit for bit.
    Until the first keyframe, and after the queue overflowed, non-IDR access units are
    dropped (a decoder cannot start on them) and ``on_keyframe_needed`` is called.
    """

    kind = "video"
    POLL_SECONDS = 0.5

    def __init__(self, depth: int = VIDEO_QUEUE_UNITS) -> None:
        super().__init__()
        self._queue: deque[av.Packet] = deque()
        self._depth = depth
        self._arrived = asyncio.Event()
        self._last_ts: int | None = None
        self._pts = 0
        self._waiting_keyframe = True
        self.on_keyframe_needed: Callable[[str], None] | None = None
        self.units_in = 0
        self.units_out = 0
        self.dropped_units = 0

    def push(self, unit: AccessUnit) -> None:
        """One access unit from the room system (RTP timestamp at 90 kHz)."""
        self.units_in += 1
        if self._last_ts is not None:
            # Unwrap the 32-bit RTP clock; a step backwards (a new SSRC) moves pts one frame.
            step = (unit.timestamp - self._last_ts) & 0xFFFFFFFF
            self._pts += step if step < 0x80000000 else VIDEO_RESTART_STEP
        self._last_ts = unit.timestamp
        if len(self._queue) >= self._depth:
            self.dropped_units += len(self._queue)
            self._queue.clear()
            self._waiting_keyframe = True
        if self._waiting_keyframe and not unit.keyframe:
            self.dropped_units += 1
            if self.on_keyframe_needed is not None:
                self.on_keyframe_needed("no_keyframe_yet")
            return
        self._waiting_keyframe = False
        packet = av.Packet(unit.annexb())
        packet.pts = packet.dts = self._pts
        packet.time_base = VIDEO_TIME_BASE
        self._queue.append(packet)
        self._arrived.set()

    async def recv(self) -> av.Packet:  # type: ignore[override]
        """The next access unit as an ``av.Packet`` (waits for the room system, never forever)."""
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if self._queue:
                self.units_out += 1
                return self._queue.popleft()
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), self.POLL_SECONDS)
            except TimeoutError:
                pass


def prefer_h264(transceiver: RTCRtpTransceiver) -> None:
    """Offer only H.264 on ``transceiver``: the room system's H.264 is passed through as is,
    so the core must not negotiate anything else (aiortc would otherwise put VP8 first)."""
    codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"]
    transceiver.setCodecPreferences(codecs)


def hook_keyframe_requests(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Route the core's PLI/FIR for ``sender`` to ``callback``.

    aiortc's ``RTCRtpSender._handle_rtcp_packet`` answers PLI and FIR by calling
    ``self._send_keyframe()``, which only sets a flag for its own encoder; a sender fed
    pre-encoded packets never encodes, so the request would be lost.  Replacing that one
    method on this sender instance is the narrowest hook aiortc offers (no subclassing of
    the sender the peer connection creates, no change to any other sender)."""
    setattr(sender, "_send_keyframe", callback)  # noqa: B010


def cap_remb(receiver: Any, cap_bps: Callable[[], int | None]) -> None:
    """Never let ``receiver`` report more than ``cap_bps()`` to the sender (None: no cap).

    We pass the core's H.264 through to the room system, so the only encoder that can obey the
    room system's limit is the core's, and the only thing aiortc's sender there listens to is
    REMB: ``RTCRtpSender._handle_rtcp_packet`` sets its encoder's ``target_bitrate`` from it.
    Our WHEP receiver sends that REMB with whatever its ``RemoteBitrateEstimator.add`` returns
    (``(bitrate, ssrcs)`` or None); wrapping ``add`` on this one receiver's estimator instance
    clamps the reported bitrate to ``min(estimate, cap)`` and leaves the estimator itself, every
    other receiver and aiortc's timing of REMBs untouched -- a lower cap (a TMMBR) takes effect
    with the next REMB (at most ``AimdRateControl.feedback_interval``, 1 s, later).

    The cap is a payload rate and REMB a total; the difference (headers, ~3 % at full-size
    packets) is left as margin for the encoder's rate control. aiortc's H.264 encoder never
    goes below its ``MIN_BITRATE`` (500 kbit/s), whatever the REMB: a tighter cap than that is
    reported but cannot be met by an aiortc core."""
    estimator = getattr(receiver, "_RTCRtpReceiver__remote_bitrate_estimator", None)
    if estimator is None:  # audio receiver, or an aiortc without the estimator
        return
    estimate = estimator.add

    def add(*args: Any, **kwargs: Any) -> tuple[int, list[int]] | None:
        remb = estimate(*args, **kwargs)
        cap = cap_bps()
        if remb is None or cap is None or remb[0] <= cap:
            return remb  # type: ignore[no-any-return]
        return cap, remb[1]

    estimator.add = add


class EncodedFrameTap:
    """Stands in for an aiortc ``RTCRtpReceiver``'s decoder queue: complete H.264 frames go to
    ``on_unit`` as :class:`AccessUnit` instead of to the decoder thread (passthrough).

    aiortc reassembles each frame in its jitter buffer (NACKs included) and then hands
    ``(codec, JitterFrame)`` to a per-receiver decoder thread through this queue; the frame's
    data is already Annex B (aiortc's H.264 depayloader writes start codes). Taking it here --
    on the loop thread, in ``_handle_rtp_packet`` -- skips the decode (and the worker-thread
    hop) without touching any other receiver: a global ``get_decoder`` patch would also hit the
    embedded core's receivers in the same process. The decoder thread still blocks on this
    queue, and aiortc's stop (``None``) is passed on to it so it ends.
    """

    def __init__(self, on_unit: Callable[[AccessUnit], None]) -> None:
        self.on_unit = on_unit
        self._inner: queue.Queue[Any] = queue.Queue()
        self.frames = 0

    def put(self, item: Any) -> None:
        if item is None:
            self._inner.put(None)
            return
        _codec, frame = item
        nals = split_annexb(bytes(frame.data))
        if not nals:
            return
        self.frames += 1
        self.on_unit(AccessUnit(nals=nals, timestamp=frame.timestamp, keyframe=is_keyframe(nals)))

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.get(*args, **kwargs)


def tap_encoded_frames(receiver: Any, on_unit: Callable[[AccessUnit], None]) -> EncodedFrameTap:
    """Install an :class:`EncodedFrameTap` on ``receiver`` (before ``setRemoteDescription``,
    which starts its decoder thread on the queue it finds)."""
    tap = EncodedFrameTap(on_unit)
    receiver._RTCRtpReceiver__decoder_queue = tap  # aiortc's private, name-mangled attribute
    return tap


class WebRtcLeg:
    """One caller's presence in a meeting of the core: WHIP publish + WHEP subscribe (exclude self).

    ``on_audio`` receives the meeting's audio as mono int16 at ``legacy_rate``;
    ``on_ended(reason)`` is called once if the core side goes away on its own
    (a peer connection failed or was closed by the core, or the WHEP track ended),
    never because of :meth:`leave`.
    """

    def __init__(self, *, reactor: Any, core_url: str, meeting: str, legacy_rate: int,
                 on_audio: Callable[[np.ndarray], None] | None = None,
                 on_ended: Callable[[str], None] | None = None,
                 http: WhipClient | None = None, connect_timeout: float = CONNECT_TIMEOUT,
                 display_name: str = "") -> None:
        #: Sent to the core as ``?name=`` (its roster shows it); never logged here.
        self.display_name = display_name
        #: Extra WHIP query parameters describing this publisher (``leg=sip&enc=plain``), so the
        #: core's page can show how the caller's media reached the gateway.  Set before ``join()``.
        self.publish_params: dict[str, str] = {}
        self.core_url = core_url.rstrip("/")
        self.meeting = meeting
        self.legacy_rate = legacy_rate
        self.on_audio = on_audio
        self.on_ended = on_ended
        self.track = CallerAudioTrack(legacy_rate)
        #: The room system's video toward the core (see :meth:`enable_video`), or None.
        self.video_track: RoomVideoTrack | None = None
        #: Called with a reason when the core asks for a keyframe of the published video
        #: (RTCP PLI/FIR it sent to our WHIP sender); the video leg asks the room system.
        self.on_keyframe_request: Callable[[str], object] | None = None
        self.keyframe_requests_in = 0
        #: The meeting's switched video (H.264 access units, undecoded) for the room system;
        #: set with :meth:`enable_video` before :meth:`join` to subscribe to video.
        self.on_video: Callable[[AccessUnit], None] | None = None
        self._video_tap: EncodedFrameTap | None = None
        #: The room system's receive limit (payload bit/s, None: none), read at each REMB our
        #: WHEP video receiver sends the core (see :func:`cap_remb`); set before :meth:`join`.
        self.video_bitrate_cap: Callable[[], int | None] | None = None
        self._video_receiver: Any = None
        self.keyframe_requests_out = 0
        self._http = http or WhipClient(reactor)
        self._connect_timeout = connect_timeout
        self._pub: RTCPeerConnection | None = None
        self._sub: RTCPeerConnection | None = None
        self.whip: WhipResource | None = None
        self.whep: WhipResource | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._leaving = False
        self._ended = False
        self.frames_received = 0
        self._connected: dict[str, asyncio.Event] = {}
        #: Set before :meth:`join` to ``"PCMU"``/``"PCMA"`` to ask the core for that codec both
        #: ways with no track of ours (the fast path, :mod:`bridge.fastpath`); after the join,
        #: ``path`` says whether the core agreed (``passthrough``) or not (``transcode``).
        self.passthrough_codec: str | None = None
        self.path = "transcode"
        #: On the fast path: the WHIP sender the relay sends on, the payload types the core
        #: answered, and where the WHEP receiver's raw RTP packets go.
        self.audio_sender: RTCRtpSender | None = None
        self.whip_payload_type: int | None = None
        self.whep_payload_type: int | None = None
        self.on_core_rtp: Callable[[Any], None] | None = None

    def feed(self, pcm: np.ndarray) -> None:
        """The caller's decoded audio (mono int16 at ``legacy_rate``) to publish."""
        self.track.feed(pcm)

    def enable_video(self) -> RoomVideoTrack:
        """Publish a video track too (H.264 passthrough); call before :meth:`join`."""
        if self.video_track is None:
            self.video_track = RoomVideoTrack()
            self.video_track.on_keyframe_needed = self._keyframe_wanted
        return self.video_track

    def _keyframe_wanted(self, why: str) -> None:
        if self.on_keyframe_request is not None:
            self.on_keyframe_request(why)

    def _video_unit(self, unit: AccessUnit) -> None:
        if self.on_video is not None:
            self.on_video(unit)

    def request_core_keyframe(self) -> bool:
        """Ask the core for a keyframe of the meeting's video (RTCP PLI on the WHEP receiver,
        which aiortc's sender in the core turns into a forced IDR); False before any video came."""
        receiver = self._video_receiver
        if receiver is None or self._leaving:
            return False
        sources = receiver.getSynchronizationSources()
        if not sources:
            return False
        self.keyframe_requests_out += 1
        asyncio.ensure_future(receiver._send_rtcp_pli(sources[0].source))
        return True

    def _core_wants_keyframe(self) -> None:
        """The core asked for a keyframe of our video (see :func:`hook_keyframe_requests`):
        only the room system can make one, since its pictures pass through untouched."""
        self.keyframe_requests_in += 1
        self._keyframe_wanted("core_pli")

    def _watch(self, name: str, pc: RTCPeerConnection) -> None:
        connected = self._connected[name] = asyncio.Event()

        @pc.on("connectionstatechange")
        def _changed() -> None:
            state = pc.connectionState
            if state == "connected":
                connected.set()
            elif state in ("failed", "closed"):
                connected.set()  # wake join(); it checks the state
                self._end(f"{name} peer connection {state}")

    def _end(self, reason: str) -> None:
        if self._leaving or self._ended:
            return
        self._ended = True
        log.info("bridge.leg.down", leg="webrtc", reason=reason)
        if self.on_ended is not None:
            self.on_ended(reason)

    async def join(self) -> None:
        """Publish by WHIP, subscribe by WHEP (excluding our WHIP resource), wait until both connect.

        Raises :class:`CoreRefused`/:class:`CoreUnreachable`/:class:`CoreProtocolError`;
        on any failure whatever was created is torn down before raising.
        """
        meeting = quote(self.meeting, safe="")
        try:
            pub = self._pub = RTCPeerConnection(rtc_configuration())
            self._watch("whip", pub)
            fast = self.passthrough_codec
            if fast is not None:  # no track: the relay sends the caller's packets on this sender
                audio = pub.addTransceiver("audio", direction="sendonly")
                prefer_audio_codec(audio, fast)
                self.audio_sender = audio.sender
                quiet_idle_sender(audio.sender)  # no 20 ms idle loop: see bridge.fastpath
            else:
                pub.addTransceiver(self.track, direction="sendonly")
            if self.video_track is not None:
                video = pub.addTransceiver(self.video_track, direction="sendonly")
                prefer_h264(video)
                hook_keyframe_requests(video.sender, self._core_wants_keyframe)
            await pub.setLocalDescription(await pub.createOffer())  # gathers: complete offer
            named = {"name": self.display_name} if self.display_name else {}
            whip_query = urlencode({**named, **self.publish_params})
            self.whip = await self._created(f"{self.core_url}/whip/{meeting}?{whip_query}".rstrip("?"),
                                            pub.localDescription.sdp)
            await pub.setRemoteDescription(RTCSessionDescription(sdp=self.whip.answer, type="answer"))

            sub = self._sub = RTCPeerConnection(rtc_configuration())
            self._watch("whep", sub)
            heard = sub.addTransceiver("audio", direction="recvonly")
            use_low_delay_jitter_buffer(heard.receiver)  # 20 ms, not aiortc's 80 (bridge.audio_jitter)
            if fast is not None:
                prefer_audio_codec(heard, fast)
                tap_rtp(heard.receiver, self._core_rtp)
            if self.video_track is not None and self.on_video is not None:
                watch = sub.addTransceiver("video", direction="recvonly")
                prefer_h264(watch)
                self._video_receiver = watch.receiver
                if self.video_bitrate_cap is not None:
                    cap_remb(watch.receiver, self.video_bitrate_cap)
                self._video_tap = tap_encoded_frames(watch.receiver, self._video_unit)

            @sub.on("track")
            def _on_track(track: MediaStreamTrack) -> None:
                if track.kind == "audio" and self._pump_task is None and fast is None:
                    self._pump_task = asyncio.ensure_future(self._pump(track))

            await sub.setLocalDescription(await sub.createOffer())
            query = urlencode({"exclude": self.whip.resource_id, **named})
            self.whep = await self._created(f"{self.core_url}/whep/{meeting}?{query}", sub.localDescription.sdp)
            await sub.setRemoteDescription(RTCSessionDescription(sdp=self.whep.answer, type="answer"))
            await self._wait_connected()
            if fast is not None:
                self.whip_payload_type = negotiated_payload_type(self.whip.answer, fast)
                self.whep_payload_type = negotiated_payload_type(self.whep.answer, fast)
                if self.whip_payload_type is None or self.whep_payload_type is None:
                    raise CoreProtocolError(f"the core did not answer {fast} both ways for the fast path")
                self.path = "passthrough"
        except BaseException:
            await self.leave()
            raise
        log.info("bridge.leg.up", leg="webrtc", whip=self.whip.resource_id, whep=self.whep.resource_id,
                 path=self.path)

    def _core_rtp(self, packet: Any) -> None:
        """A raw RTP packet of the WHEP receiver (fast path): on to the relay."""
        if self.on_core_rtp is not None:
            self.on_core_rtp(packet)

    async def _created(self, url: str, offer: str) -> WhipResource:
        """POST an offer; if :meth:`leave` ran meanwhile, delete what the core just created."""
        self._check_not_left()
        resource = await self._http.post_offer(url, offer)
        if self._leaving:
            try:
                await self._http.delete(resource.location)
            except CoreError:
                pass
            self._check_not_left()
        return resource

    def _check_not_left(self) -> None:
        if self._leaving:
            raise CoreLeft("the call left the meeting while joining")

    async def _wait_connected(self) -> None:
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self._connected.values())),
                                   self._connect_timeout)
        except TimeoutError:
            raise CoreUnreachable(f"media to the conference core did not connect within "
                                  f"{self._connect_timeout:g} s (ICE/DTLS)") from None
        for name, pc in (("whip", self._pub), ("whep", self._sub)):
            if pc is None or pc.connectionState != "connected":
                state = pc.connectionState if pc is not None else "missing"
                raise CoreUnreachable(f"{name} media to the conference core is {state}, not connected")

    async def _pump(self, track: MediaStreamTrack) -> None:
        """Meeting audio -> mono -> legacy rate -> ``on_audio``, until the track ends."""
        resampler: Resampler | None = None
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                break
            if not isinstance(frame, av.AudioFrame):
                continue
            self.frames_received += 1
            mono = downmix(frame.to_ndarray(), len(frame.layout.channels), frame.format.is_planar)
            if resampler is None or resampler.in_rate != frame.sample_rate:
                resampler = Resampler(frame.sample_rate, self.legacy_rate)
            pcm = resampler.process(mono)
            if self.on_audio is not None and pcm.size:
                self.on_audio(pcm)
        self._end("the core's audio track ended")

    async def leave(self) -> None:
        """DELETE both resources (best effort) and close both peer connections. Idempotent."""
        if self._leaving:
            return
        self._leaving = True
        self.track.stop()
        if self.video_track is not None:
            self.video_track.stop()
        for resource in (self.whep, self.whip):
            if resource is not None:
                try:
                    await self._http.delete(resource.location)
                except CoreError as exc:
                    log.warning("bridge.webrtc.delete_failed", error=str(exc))
        for pc in (self._sub, self._pub):
            if pc is not None:
                await pc.close()
        if self._pump_task is not None:
            self._pump_task.cancel()
            try:
                await self._pump_task
            except asyncio.CancelledError:
                pass
        if self.whip is not None and not self._ended:
            log.info("bridge.leg.down", leg="webrtc", reason="left")

    def stats(self) -> dict[str, Any]:
        return {
            "encryption": "dtls-srtp",
            "path": self.path,
            "whip_state": self._pub.connectionState if self._pub is not None else "new",
            "whep_state": self._sub.connectionState if self._sub is not None else "new",
            "frames_out": self.track.frames_sent,
            "silent_frames_out": self.track.silent_frames,
            "frames_in": self.frames_received,
            "inbound_overflow_samples": self.track.overflow_samples,
            **({"video_units_out": self.video_track.units_out,
                "video_units_dropped": self.video_track.dropped_units,
                "keyframe_requests_in": self.keyframe_requests_in,
                "video_units_in": self._video_tap.frames if self._video_tap is not None else 0,
                "keyframe_requests_out": self.keyframe_requests_out}
               if self.video_track is not None else {}),
        }
