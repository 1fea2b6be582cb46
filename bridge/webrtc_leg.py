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
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import av
import numpy as np
import structlog
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from bridge.codecs import PcmFifo, Resampler, downmix, silence
from bridge.ice import rtc_configuration
from bridge.pacing import FramePacer, mono_s16_frame
from bridge.whip_client import CoreError, CoreUnreachable, WhipClient, WhipResource

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
        self._fifo = PcmFifo(WEBRTC_RATE * INBOUND_MAX_MS // 1000)
        self._samples = int(WEBRTC_RATE * PTIME)
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

    def feed(self, pcm: np.ndarray) -> None:
        """The caller's decoded audio (mono int16 at ``legacy_rate``) to publish."""
        self.track.feed(pcm)

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
            pub.addTransceiver(self.track, direction="sendonly")
            await pub.setLocalDescription(await pub.createOffer())  # gathers: complete offer
            named = {"name": self.display_name} if self.display_name else {}
            whip_query = urlencode({**named, **self.publish_params})
            self.whip = await self._created(f"{self.core_url}/whip/{meeting}?{whip_query}".rstrip("?"),
                                            pub.localDescription.sdp)
            await pub.setRemoteDescription(RTCSessionDescription(sdp=self.whip.answer, type="answer"))

            sub = self._sub = RTCPeerConnection(rtc_configuration())
            self._watch("whep", sub)
            sub.addTransceiver("audio", direction="recvonly")

            @sub.on("track")
            def _on_track(track: MediaStreamTrack) -> None:
                if track.kind == "audio" and self._pump_task is None:
                    self._pump_task = asyncio.ensure_future(self._pump(track))

            await sub.setLocalDescription(await sub.createOffer())
            query = urlencode({"exclude": self.whip.resource_id, **named})
            self.whep = await self._created(f"{self.core_url}/whep/{meeting}?{query}", sub.localDescription.sdp)
            await sub.setRemoteDescription(RTCSessionDescription(sdp=self.whep.answer, type="answer"))
            await self._wait_connected()
        except BaseException:
            await self.leave()
            raise
        log.info("bridge.leg.up", leg="webrtc", whip=self.whip.resource_id, whep=self.whep.resource_id)

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
            "whip_state": self._pub.connectionState if self._pub is not None else "new",
            "whep_state": self._sub.connectionState if self._sub is not None else "new",
            "frames_out": self.track.frames_sent,
            "silent_frames_out": self.track.silent_frames,
            "frames_in": self.frames_received,
            "inbound_overflow_samples": self.track.overflow_samples,
        }
