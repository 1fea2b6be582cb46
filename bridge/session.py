"""One call's media: a legacy RTP leg and a WebRTC leg into a meeting of the conference core.

Two steps, because the SIP answer must name our RTP port before the media runs:

1. ``MediaSession.allocate(...)`` (sync) binds the RTP/RTCP port pair from the
   configured range and builds both legs; ``session.local_port`` is then known.
   It raises :class:`bridge.ports.NoFreePort` (or ``KeyError`` for a codec we do
   not carry) before anything reaches the core.
2. ``await session.start()`` joins the core (WHIP publish + WHEP subscribe,
   waits for DTLS-SRTP to connect) and then starts the legacy leg's socket and
   20 ms clock. It raises :class:`bridge.whip_client.CoreError` subclasses; the
   caller still owns ``close()`` afterwards (close is idempotent).

``MediaSession.open(...)`` does both for callers that do not need the port early.

The caller's audio flows legacy leg -> decode -> WebRTC track (resampled to
48 kHz); the meeting's audio flows WHEP track -> mono at the codec rate ->
the legacy leg's bounded FIFO -> encode on the leg's clock.  On the G.711 fast path
(``passthrough="auto"``) packets are relayed instead (:mod:`bridge.fastpath`), and the WebRTC
leg's figures come from the relays (:func:`fast_path_rtp`): aiortc counts none of those packets,
so only the WHIP connection's getStats (the core's receiver reports) is still polled.

With ``video=`` (:class:`bridge.video_leg.VideoLegParams`) a second port pair carries the room
system's main video: H.264 access units are passed through untranscoded into a WHIP video
track, and the core's keyframe requests go back to the room system as RTCP PLI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from bridge.codecs import codec_by_name
from bridge.fastpath import PASSTHROUGH_CODECS, CoreToLegacy, LegacyToCore
from bridge.legacy_leg import LegacyAudioLeg
from bridge.ports import PortAllocator
from bridge.srtp import SdesSrtp
from bridge.stats import CallStats, call_stats, webrtc_rtp_stats
from bridge.video_leg import LegacyVideoLeg, VideoLegParams
from bridge.webrtc_leg import WebRtcLeg
from bridge.whip_client import WhipClient

log = structlog.get_logger("bridge.session")

#: Seconds between polls of the WebRTC leg's getStats() (what CallStats shows for that leg).
WEBRTC_STATS_INTERVAL = 2.0


def allocate_legacy_leg(
    *,
    media_address: str,
    port_allocator: PortAllocator,
    encoding: str,
    payload_type: int,
    remote_address: str,
    remote_port: int,
    telephone_event_pt: int | None = None,
    srtp_suite: str | None = None,
    srtp_remote_key: bytes | None = None,
    srtp_local_key: bytes | None = None,
) -> LegacyAudioLeg:
    """Bind a legacy port pair and build its leg (no WebRTC side yet); see :meth:`MediaSession.allocate`."""
    codec = codec_by_name(encoding)
    srtp = None
    if srtp_suite is not None:
        if srtp_remote_key is None or srtp_local_key is None:
            raise ValueError("srtp_suite needs both srtp_remote_key and srtp_local_key")
        srtp = SdesSrtp(srtp_suite, remote_key=srtp_remote_key, local_key=srtp_local_key)
    # ``media_address`` is what the SDP names; behind a 1:1 NAT (``media.public_address``) it is
    # not the address the allocator binds, so the two are not required to match.
    del media_address
    lease = port_allocator.allocate()
    try:
        return LegacyAudioLeg(lease=lease, codec=codec, payload_type=payload_type,
                              remote_address=remote_address, remote_port=remote_port,
                              telephone_event_pt=telephone_event_pt, srtp=srtp)
    except BaseException:
        lease.release()
        raise


def fast_path_rtp(polled: dict[str, Any], to_core: LegacyToCore, to_legacy: CoreToLegacy | None,
                  codec: str) -> dict[str, Any]:
    """The WebRTC leg's RTP figures on the fast path: packets and payload octets from the relays
    (aiortc counts none of them, see :mod:`bridge.fastpath`), the core's receiver reports (loss,
    jitter, round trip) from the last ``polled`` getStats summary, and the G.711 codec carried."""
    outbound = {**(polled.get("outbound") or {}),
                "packets": to_core.packets - to_core.send_errors, "bytes": to_core.sent_bytes}
    inbound = ({"packets": to_legacy.received, "bytes": to_legacy.received_bytes}
               if to_legacy is not None else {})
    return {**polled, "codec": codec, "inbound": inbound, "outbound": outbound}


class MediaSession:
    """A call's two legs, wired to each other. Build with :meth:`allocate` or :meth:`open`."""

    def __init__(self, *, meeting: str, legacy: LegacyAudioLeg, webrtc: WebRtcLeg, display_name: str,
                 video: LegacyVideoLeg | None = None) -> None:
        self.meeting = meeting
        self.legacy = legacy
        self.webrtc = webrtc
        #: The room system's main video leg (None: an audio-only call).
        self.video = video
        #: Shown in the core's roster (sent as ``?name=``); never logged (privacy).
        self.display_name = display_name
        #: Called once with a reason if the WebRTC side ends on its own (failed, removed by the core).
        #: Informational: the owner decides (hang up the call) and calls :meth:`close`.
        self.on_ended: Callable[[str], None] | None = None
        #: Called with each DTMF digit the caller sends (RFC 4733), e.g. "5", "#".
        self.on_dtmf: Callable[[str], None] | None = None
        self._started = False
        self._closed = False
        #: The WebRTC leg's last getStats() summary (polled: getStats is a coroutine, stats() is not).
        self._webrtc_rtp: dict[str, Any] = {}
        self._stats_task: asyncio.Task[None] | None = None
        self._opened_at: float | None = None
        #: The fast path's relays once it runs (:meth:`start`); None on the transcoding path.
        self.to_core: LegacyToCore | None = None
        self.to_legacy: CoreToLegacy | None = None
        legacy.on_audio = webrtc.feed
        legacy.inbound.on_dtmf = self._dtmf
        webrtc.on_audio = legacy.push_audio
        webrtc.on_ended = self._webrtc_ended
        if video is not None:
            video.on_access_unit = webrtc.enable_video().push
            webrtc.on_keyframe_request = video.request_keyframe
            webrtc.on_video = video.send_access_unit
            video.on_core_keyframe = webrtc.request_core_keyframe

    @classmethod
    def allocate(
        cls,
        *,
        reactor: Any,
        meeting: str,
        core_url: str,
        media_address: str,
        port_allocator: PortAllocator,
        encoding: str,
        payload_type: int,
        remote_address: str,
        remote_port: int,
        telephone_event_pt: int | None = None,
        display_name: str = "",
        http: WhipClient | None = None,
        srtp_suite: str | None = None,
        srtp_remote_key: bytes | None = None,
        srtp_local_key: bytes | None = None,
        video: VideoLegParams | None = None,
        passthrough: str = "off",
    ) -> MediaSession:
        """Bind the legacy port pair and build both legs; nothing is sent yet.

        ``media_address`` must be the address ``port_allocator`` binds on (it is
        checked, since the SIP answer will name it).  ``srtp_suite`` with both keys
        (the peer's and ours, key||salt as in the SDES ``a=crypto``, RFC 4568) makes
        the legacy leg SDES-SRTP; raises :class:`bridge.srtp.SrtpError` for bad keys.
        ``video`` binds a second port pair for the main video (see :attr:`video_port`).
        ``passthrough`` is ``media.passthrough`` (``auto``: G.711 takes the fast path,
        :mod:`bridge.fastpath`).
        """
        legacy = allocate_legacy_leg(
            media_address=media_address, port_allocator=port_allocator, encoding=encoding,
            payload_type=payload_type, remote_address=remote_address, remote_port=remote_port,
            telephone_event_pt=telephone_event_pt, srtp_suite=srtp_suite,
            srtp_remote_key=srtp_remote_key, srtp_local_key=srtp_local_key)
        video_leg: LegacyVideoLeg | None = None
        try:
            if video is not None:
                video_lease = port_allocator.allocate()
                try:
                    video_leg = LegacyVideoLeg(lease=video_lease, params=video)
                except BaseException:
                    video_lease.release()
                    raise
            session = cls.around_legacy(legacy, reactor=reactor, meeting=meeting, core_url=core_url,
                                        display_name=display_name, http=http, video=video_leg,
                                        passthrough=passthrough)
        except BaseException:
            if video_leg is not None:
                video_leg.close()
            legacy.close()
            raise
        return session

    @classmethod
    def around_legacy(cls, legacy: LegacyAudioLeg, *, reactor: Any, meeting: str, core_url: str,
                      display_name: str = "", http: WhipClient | None = None,
                      video: LegacyVideoLeg | None = None, passthrough: str = "off") -> MediaSession:
        """A session for a legacy leg that already exists (and may already run, e.g. an IVR
        answered the call on it first): the same RTP port and keys carry on into the meeting.
        ``passthrough="auto"`` asks for the fast path when the leg's codec is G.711."""
        webrtc = WebRtcLeg(reactor=reactor, core_url=core_url, meeting=meeting,
                           legacy_rate=legacy.codec.sample_rate, http=http, display_name=display_name)
        if passthrough == "auto" and legacy.codec.name in PASSTHROUGH_CODECS:
            webrtc.passthrough_codec = legacy.codec.name
        return cls(meeting=meeting, legacy=legacy, webrtc=webrtc, display_name=display_name,
                   video=video)

    @classmethod
    async def open(cls, **kwargs: Any) -> MediaSession:
        """:meth:`allocate` then :meth:`start`; on a failed start the session is closed before raising."""
        session = cls.allocate(**kwargs)
        try:
            await session.start()
        except BaseException:
            await session.close()
            raise
        return session

    @property
    def local_port(self) -> int:
        return self.legacy.local_port

    @property
    def video_port(self) -> int | None:
        """The main video's RTP port (None for an audio-only session)."""
        return self.video.local_port if self.video is not None else None

    @property
    def core_resource_ids(self) -> tuple[str, ...]:
        """The core's ids of this call's WHIP and WHEP resources (empty before the join)."""
        return tuple(r.resource_id for r in (self.webrtc.whip, self.webrtc.whep) if r is not None)

    async def start(self) -> None:
        """Join the core, then start the legacy leg. Raises CoreError subclasses on failure."""
        if self._closed:
            raise RuntimeError("media session already closed")
        if self._started:
            return
        self._started = True
        self._opened_at = asyncio.get_running_loop().time()
        await self.webrtc.join()
        if self._closed:  # closed while joining (caller hung up)
            return
        if self.webrtc.path == "passthrough":
            self._start_relay()
        if not self.legacy.started:  # an IVR may have started it already
            await self.legacy.start()
        if self._closed:
            return
        self._stats_task = asyncio.ensure_future(self._poll_webrtc_stats())
        if self.video is not None and not self.video.started:
            await self.video.start()

    def _start_relay(self) -> None:
        """Wire the fast path: the caller's packets to the WHIP sender, the WHEP receiver's to
        the legacy leg (whose 20 ms clock stops); see :mod:`bridge.fastpath`."""
        assert self.webrtc.audio_sender is not None and self.webrtc.whip_payload_type is not None
        assert self.webrtc.whep_payload_type is not None
        core_codec = self.webrtc.passthrough_codec  # what the core answered; a re-INVITE may
        # move the leg to the other G.711 law, which the relays then translate per packet.
        self.to_core = LegacyToCore(self.webrtc.audio_sender, payload_type=self.webrtc.whip_payload_type,
                                    core_codec=core_codec, legacy_codec=lambda: self.legacy.codec.name)
        self.to_legacy = CoreToLegacy(self.legacy, core_payload_type=self.webrtc.whep_payload_type,
                                      core_codec=core_codec)
        self.webrtc.on_core_rtp = self.to_legacy
        self.legacy.relay(self.to_core)
        log.info("bridge.fastpath.started", meeting=self.meeting, codec=self.legacy.codec.name,
                 path="passthrough")

    async def _poll_webrtc_stats(self) -> None:
        """Refresh the WebRTC leg's RTP figures every ``WEBRTC_STATS_INTERVAL`` seconds."""
        while not self._closed:
            try:
                # The leg keeps its peer connections private; reading them here is the one place.
                # On the fast path the WHEP side's getStats has nothing of ours (bridge.fastpath,
                # "Statistics"): only the WHIP side's, for the core's receiver reports.
                sub = None if self.to_core is not None else getattr(self.webrtc, "_sub", None)
                self._webrtc_rtp = await webrtc_rtp_stats(getattr(self.webrtc, "_pub", None), sub)
            except Exception as exc:  # noqa: BLE001 - statistics must never end a call
                log.debug("bridge.session.stats_failed", error=type(exc).__name__)
            await asyncio.sleep(WEBRTC_STATS_INTERVAL)

    def _webrtc_ended(self, reason: str) -> None:
        if not self._closed and self.on_ended is not None:
            self.on_ended(reason)

    def _dtmf(self, digit: str) -> None:
        log.info("bridge.dtmf", meeting=self.meeting)  # the digit itself may be a PIN: not logged
        if self.on_dtmf is not None:
            self.on_dtmf(digit)

    async def close(self) -> None:
        """Tear down both legs and release the port pair. Idempotent; safe before/while starting."""
        if self._closed:
            return
        self._closed = True
        if self._stats_task is not None:
            self._stats_task.cancel()
        self.legacy.close()
        if self.video is not None:
            self.video.close()
        try:
            await self.webrtc.leave()
        finally:
            duration = (asyncio.get_running_loop().time() - self._opened_at) if self._opened_at else 0.0
            s = self.stats()
            log.info("bridge.session.closed", meeting=self.meeting, codec=s["codec"],
                     legacy_encryption=s["legacy"]["encryption"],
                     legacy_srtp_dropped=s["legacy"]["dropped_srtp_auth"] + s["legacy"]["dropped_srtp_replay"],
                     seconds=round(duration, 1),
                     legacy_in=s["legacy"]["packets_in"], legacy_out=s["legacy"]["packets_out"],
                     legacy_dropped=s["legacy"]["dropped"], webrtc_in=s["webrtc"]["frames_in"],
                     webrtc_out=s["webrtc"]["frames_out"])

    def stats(self) -> dict[str, Any]:
        """Per-leg counters and encryption: ``{"codec", "local_port", "legacy": {...}, "webrtc": {...}}``;
        ``webrtc["rtp"]`` holds the last getStats() summary and ``"call"`` the same figures as
        :class:`bridge.stats.CallStats` (``as_dict()``), one shape for both legs."""
        out: dict[str, Any] = {
            "codec": self.legacy.codec.name,
            "path": self.webrtc.path,
            "local_port": self.local_port,
            "closed": self._closed,
            "legacy": self.legacy.stats(),
            "webrtc": {**self.webrtc.stats(), "rtp": self._webrtc_rtp if self.to_core is None
                       else fast_path_rtp(self._webrtc_rtp, self.to_core, self.to_legacy,
                                          self.webrtc.passthrough_codec or self.legacy.codec.name)},
            **({"video": self.video.stats()} if self.video is not None else {}),
            **({"passthrough": self._relay_stats()} if self.to_core is not None else {}),
        }
        out["call"] = call_stats(out).as_dict()
        return out

    def _relay_stats(self) -> dict[str, int]:
        """The fast path's packet counts; ``decoded_frames`` counts decode work on either leg
        (0 when the relay carries all the audio)."""
        assert self.to_core is not None and self.to_legacy is not None
        return {
            "to_core": self.to_core.packets, "to_legacy": self.to_legacy.packets,
            "dropped_late": self.to_core.rewriter.dropped_late + self.to_legacy.rewriter.dropped_late,
            "source_changes": self.to_core.rewriter.source_changes + self.to_legacy.rewriter.source_changes,
            "send_errors": self.to_core.send_errors,
            "transcoded": sum(r.law.transcoded for r in (self.to_core, self.to_legacy) if r.law is not None),
            "decoded_frames": (self.webrtc.frames_received + self.legacy.jitter.counters.buffered
                               + self.legacy.jitter.counters.concealed),
        }

    def call_stats(self) -> CallStats:
        """Both legs' packets, bytes, loss, jitter, RTT, codec, encryption and drops."""
        return call_stats(self.stats())
