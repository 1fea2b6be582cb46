"""An independent aiortc WHIP/WHEP client for tests: publish a tone, subscribe and record.

Deliberately shares no code with ``bridge`` (the gateway's own WebRTC leg): the
tests must judge the core with a second implementation. HTTP is plain urllib in
a worker thread, so the twisted.web server on the same asyncio loop keeps
serving while the client waits.
"""

from __future__ import annotations

import asyncio
import fractions
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urljoin

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from tests.support.audio import tone

RATE = 48_000
FRAME_SAMPLES = 960


@dataclass(frozen=True)
class HttpResult:
    """A finished HTTP exchange (any status; urllib's HTTPError is turned into a result)."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


async def http_request(method: str, url: str, body: bytes | None = None,
                       headers: dict[str, str] | None = None, timeout: float = 30.0) -> HttpResult:
    """One HTTP request from a worker thread; header names lower-cased."""

    def call() -> HttpResult:
        request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return HttpResult(response.status, {k.lower(): v for k, v in response.headers.items()},
                                  response.read())
        except urllib.error.HTTPError as error:
            return HttpResult(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())

    return await asyncio.to_thread(call)


class WhipError(RuntimeError):
    """The server refused an offer (carries the HTTP result for the assertion message)."""

    def __init__(self, result: HttpResult) -> None:
        super().__init__(f"HTTP {result.status}: {result.text.strip()}")
        self.result = result


class ToneTrack(MediaStreamTrack):
    """Audio from numpy samples (mono int16 at 48 kHz), looped, paced in real time, 20 ms stereo frames (L=R)."""

    kind = "audio"

    def __init__(self, samples: np.ndarray) -> None:
        super().__init__()
        self._samples = np.asarray(samples, dtype=np.int16)
        if self._samples.size < FRAME_SAMPLES:
            raise ValueError("need at least one frame of samples")
        self._pos = 0
        self._pts = 0
        self._start: float | None = None

    @classmethod
    def sine(cls, frequency: float, amplitude: float = 0.3) -> ToneTrack:
        """A whole-second sine, so looping it is seamless for integer frequencies."""
        return cls(tone(frequency, 1.0, rate=RATE, amplitude=amplitude))

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            delay = self._start + self._pts / RATE - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        idx = (self._pos + np.arange(FRAME_SAMPLES)) % self._samples.size
        self._pos = (self._pos + FRAME_SAMPLES) % self._samples.size
        # Stereo with L=R, as a browser's mono microphone reaches the Opus encoder: aiortc's
        # encoder is always stereo and would upmix a mono frame at -3 dB. Written here rather
        # than borrowed from bridge.pacing, so the test peer stays independent of the gateway.
        frame = av.AudioFrame(format="s16", layout="stereo", samples=FRAME_SAMPLES)
        frame.planes[0].update(np.repeat(self._samples[idx], 2).tobytes())
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME_SAMPLES
        return frame


class ColourTrack(MediaStreamTrack):
    """Small solid-colour video (so a subscriber can tell which publisher it is shown), ~15 fps."""

    kind = "video"

    def __init__(self, rgb: tuple[int, int, int], width: int = 160, height: int = 120, fps: int = 15) -> None:
        super().__init__()
        image = np.zeros((height, width, 3), dtype=np.uint8)
        image[:, :] = rgb
        self._image = image
        self._fps = fps
        self._count = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            delay = self._start + self._count / self._fps - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        frame = av.VideoFrame.from_ndarray(self._image, format="rgb24")
        frame.pts = self._count * (90_000 // self._fps)
        frame.time_base = fractions.Fraction(1, 90_000)
        self._count += 1
        return frame


def _configuration() -> RTCConfiguration:
    # No STUN: the machine reaches none. Host candidates come from bridge.ice.use_host_addresses,
    # which the core server helper has already set to 127.0.0.1 for this process.
    return RTCConfiguration(iceServers=[])


@dataclass
class _Session:
    pc: RTCPeerConnection
    url: str
    """Absolute URL of the created resource (from Location)."""
    answer: str

    @property
    def participant_id(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[1]

    async def delete(self) -> HttpResult:
        return await http_request("DELETE", self.url)

    async def close(self, delete: bool = True) -> None:
        """DELETE the resource (unless told not to) and close the peer connection."""
        if delete:
            await self.delete()
        await self.pc.close()


async def _negotiate(pc: RTCPeerConnection, endpoint: str) -> _Session:
    await pc.setLocalDescription(await pc.createOffer())  # gathers: the offer is complete
    result = await http_request("POST", endpoint, pc.localDescription.sdp.encode(),
                                {"Content-Type": "application/sdp"})
    if result.status != 201:
        await pc.close()
        raise WhipError(result)
    location = result.headers.get("location")
    if not location or result.headers.get("content-type", "").split(";")[0] != "application/sdp":
        await pc.close()
        raise AssertionError(f"201 without Location or SDP content type: {result.headers}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=result.text, type="answer"))
    return _Session(pc=pc, url=urljoin(endpoint, location), answer=result.text)


async def publish(base_url: str, meeting: str, audio: MediaStreamTrack | None = None,
                  video: MediaStreamTrack | None = None) -> _Session:
    """WHIP-publish ``audio`` (and ``video``) to ``meeting``; returns once the answer is applied."""
    pc = RTCPeerConnection(configuration=_configuration())
    for track in (audio, video):
        if track is not None:
            pc.addTransceiver(track, direction="sendonly")
    return await _negotiate(pc, f"{base_url}/whip/{meeting}")


@dataclass
class Subscriber:
    """A WHEP subscriber recording everything it receives."""

    session: _Session
    chunks: list[np.ndarray] = field(default_factory=list)
    video_frames: list[av.VideoFrame] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    keep_video: int = 1
    video_count: int = 0

    @property
    def participant_id(self) -> str:
        return self.session.participant_id

    def audio(self) -> np.ndarray:
        """Everything received so far as mono int16 at 48 kHz."""
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.int16)

    def clear(self) -> None:
        """Forget what was recorded (to measure a later stretch alone)."""
        self.chunks.clear()

    async def record(self, seconds: float) -> np.ndarray:
        """Forget the past, wait ``seconds`` of loop time, return what arrived meanwhile."""
        self.clear()
        await asyncio.sleep(seconds)
        return self.audio()

    def last_video_rgb(self) -> tuple[int, int, int] | None:
        """Mean colour of the newest received video frame (None before any)."""
        if not self.video_frames:
            return None
        rgb = self.video_frames[-1].to_ndarray(format="rgb24")
        return tuple(int(c) for c in rgb.reshape(-1, 3).mean(axis=0))  # type: ignore[return-value]

    async def close(self, delete: bool = True) -> None:
        for task in self.tasks:
            task.cancel()
        await self.session.close(delete)

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        try:
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)  # a remote audio track yields decoded frames
                for out in resampler.resample(frame):
                    self.chunks.append(out.to_ndarray().reshape(-1).copy())
        except MediaStreamError:
            pass

    async def _read_video(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.VideoFrame)  # a remote video track yields decoded frames
                self.video_count += 1
                self.video_frames.append(frame)
                del self.video_frames[:-self.keep_video]
        except MediaStreamError:
            pass


async def subscribe(base_url: str, meeting: str, exclude: str | None = None,
                    video: bool = True) -> Subscriber:
    """WHEP-subscribe (recvonly audio, and video unless told not) to ``meeting`` minus ``exclude``."""
    pc = RTCPeerConnection(configuration=_configuration())
    pc.addTransceiver("audio", direction="recvonly")
    if video:
        pc.addTransceiver("video", direction="recvonly")
    holder: list[Subscriber] = []
    pending: list[MediaStreamTrack] = []

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if holder:
            _start_reader(holder[0], track)
        else:
            pending.append(track)

    endpoint = f"{base_url}/whep/{meeting}" + (f"?exclude={exclude}" if exclude else "")
    session = await _negotiate(pc, endpoint)
    subscriber = Subscriber(session=session)
    holder.append(subscriber)
    for track in pending:
        _start_reader(subscriber, track)
    return subscriber


def _start_reader(subscriber: Subscriber, track: MediaStreamTrack) -> None:
    reader = subscriber._read_audio(track) if track.kind == "audio" else subscriber._read_video(track)
    subscriber.tasks.append(asyncio.ensure_future(reader))


async def wait_connected(pc: RTCPeerConnection, timeout: float = 20.0) -> None:
    """Wait until ICE+DTLS are up (``connectionState == "connected"``)."""
    async def poll() -> None:
        while pc.connectionState != "connected":
            if pc.connectionState in ("failed", "closed"):
                raise ConnectionError(f"peer connection {pc.connectionState}")
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)
