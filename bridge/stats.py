"""Per-call media statistics, one shape for both legs: :class:`CallStats`.

The legacy leg's figures come from its own pieces (``LegacyAudioLeg.stats()``: LegCounters,
the jitter buffer, RTCP: jitter we measure, RTT and the peer's view of our stream); the WebRTC
leg's from aiortc's ``RTCPeerConnection.getStats()`` (``inbound-rtp`` on the WHEP connection we
receive the meeting on; ``outbound-rtp`` and ``remote-inbound-rtp`` -- the core's receiver
reports: loss, jitter, round trip -- on the WHIP connection we publish on). getStats is a
coroutine, so :func:`webrtc_rtp_stats` is polled by the session and its last answer cached;
:func:`call_stats` itself is a pure function over plain dicts, unit-tested without sockets.

Directions are seen from the gateway: ``inbound`` is what the leg receives (from the room system,
or from the core), ``outbound`` what it sends; ``outbound`` loss and jitter are what the far end
reported about our stream (RTCP receiver reports), None until it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

LegName = Literal["legacy", "webrtc"]

#: aiortc reports jitter in RTP timestamp units of the stream's clock (Opus: 48 kHz).
WEBRTC_AUDIO_CLOCK = 48000
#: The legacy leg's dropped_* counters, by reason (as LegCounters names them).
DROP_REASONS = ("wrong_source", "bad_packet", "wrong_pt", "late", "srtp_auth", "srtp_replay")


@dataclass(frozen=True)
class DirectionStats:
    packets: int = 0
    bytes: int = 0
    #: Packets lost (cumulative; RFC 3550 A.3 expected - received) and the fraction of expected.
    lost: int | None = None
    loss_fraction: float | None = None
    jitter_ms: float | None = None


@dataclass(frozen=True)
class LegStats:
    leg: LegName
    encryption: str
    codec: str | None
    inbound: DirectionStats
    outbound: DirectionStats
    rtt_ms: float | None = None
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CallStats:
    """What the application reads about one call's media (see the module docstring)."""

    legacy: LegStats
    webrtc: LegStats

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _loss(lost: int | None, received: int) -> float | None:
    if lost is None:
        return None
    expected = received + max(0, lost)
    return round(max(0, lost) / expected, 4) if expected else 0.0


def _int(d: Mapping[str, Any], key: str) -> int:
    value = d.get(key, 0)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def legacy_leg_stats(legacy: Mapping[str, Any]) -> LegStats:
    """The legacy leg's figures from its ``stats()`` dict."""
    rtcp = legacy.get("rtcp") or {}
    received = _int(legacy, "packets_in")
    lost = _int(legacy, "packets_lost")
    return LegStats(
        leg="legacy",
        encryption=str(legacy.get("encryption", "plain")),
        codec=legacy.get("codec"),
        inbound=DirectionStats(packets=received, bytes=_int(legacy, "bytes_in"), lost=lost,
                               loss_fraction=_loss(lost, received), jitter_ms=legacy.get("jitter_ms")),
        outbound=DirectionStats(packets=_int(legacy, "packets_out"), bytes=_int(legacy, "bytes_out"),
                                lost=rtcp.get("remote_cumulative_lost"),
                                loss_fraction=rtcp.get("remote_fraction_lost"),
                                jitter_ms=rtcp.get("remote_jitter_ms")),
        rtt_ms=legacy.get("rtt_ms"),
        dropped={r: _int(legacy, f"dropped_{r}") for r in DROP_REASONS},
    )


def webrtc_leg_stats(webrtc: Mapping[str, Any]) -> LegStats:
    """The WebRTC leg's figures from its ``stats()`` dict plus the cached getStats summary
    under ``"rtp"`` (see :func:`webrtc_rtp_stats`)."""
    rtp = webrtc.get("rtp") or {}
    inbound = rtp.get("inbound") or {}
    outbound = rtp.get("outbound") or {}
    received = _int(inbound, "packets")
    lost = inbound.get("lost")
    return LegStats(
        leg="webrtc",
        encryption=str(webrtc.get("encryption", "dtls-srtp")),
        codec=rtp.get("codec", "opus"),
        inbound=DirectionStats(packets=received, bytes=_int(inbound, "bytes"), lost=lost,
                               loss_fraction=_loss(lost, received), jitter_ms=inbound.get("jitter_ms")),
        outbound=DirectionStats(packets=_int(outbound, "packets"), bytes=_int(outbound, "bytes"),
                                lost=outbound.get("lost"), loss_fraction=outbound.get("loss_fraction"),
                                jitter_ms=outbound.get("jitter_ms")),
        rtt_ms=rtp.get("rtt_ms"),
    )


def call_stats(session_stats: Mapping[str, Any]) -> CallStats:
    """:class:`CallStats` from ``MediaSession.stats()``'s ``legacy`` and ``webrtc`` parts."""
    return CallStats(legacy=legacy_leg_stats(session_stats.get("legacy") or {}),
                     webrtc=webrtc_leg_stats(session_stats.get("webrtc") or {}))


def summarise_webrtc_report(publish: Any, subscribe: Any) -> dict[str, Any]:
    """Pick the audio figures out of two aiortc ``RTCStatsReport``s (WHIP ``publish``, WHEP
    ``subscribe``; either may be None). Plain dicts out, so the session can cache them."""
    out: dict[str, Any] = {"inbound": {}, "outbound": {}}
    for report, wanted in ((subscribe, ("inbound-rtp",)), (publish, ("outbound-rtp", "remote-inbound-rtp"))):
        for s in (report or {}).values():
            kind, typ = getattr(s, "kind", None), getattr(s, "type", None)
            if kind != "audio" or typ not in wanted:
                continue
            if typ == "inbound-rtp":
                out["inbound"] = {"packets": s.packetsReceived, "lost": s.packetsLost,
                                  "jitter_ms": round(s.jitter * 1000.0 / WEBRTC_AUDIO_CLOCK, 2)}
            elif typ == "outbound-rtp":
                out["outbound"].update(packets=s.packetsSent, bytes=s.bytesSent)
            else:  # remote-inbound-rtp: the core's receiver report about what we publish
                # aiortc passes the RR's 8-bit fixed-point fraction through as is (RFC 3550 6.4.1).
                out["outbound"].update(lost=s.packetsLost, loss_fraction=round(s.fractionLost / 256.0, 4),
                                       jitter_ms=round(s.jitter * 1000.0 / WEBRTC_AUDIO_CLOCK, 2))
                if s.roundTripTime is not None:
                    out["rtt_ms"] = round(s.roundTripTime * 1000.0, 2)
    return out


async def webrtc_rtp_stats(publish: Any, subscribe: Any) -> dict[str, Any]:
    """``getStats()`` of both peer connections (None for one not made yet), summarised."""
    pub = await publish.getStats() if publish is not None else None
    sub = await subscribe.getStats() if subscribe is not None else None
    return summarise_webrtc_report(pub, sub)
