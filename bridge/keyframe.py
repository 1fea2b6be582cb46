"""One keyframe-request translator between a legacy room system and the conference core, sans-IO.

A keyframe request can arrive from either side and must leave toward the *other* side in a form
that side understands:

* **core side -> legacy peer.** aiortc sends PLI/FIR on the WHIP leg when the core needs a fresh
  picture of this participant (a subscriber joined, the voice-activated switch moved to this
  speaker), and our own depacketizer loses the picture (:attr:`bridge.h264_rtp.H264Depacketizer.
  needs_keyframe`). Toward the room system that becomes RTCP PLI if it negotiated
  ``a=rtcp-fb:* nack pli``, else RTCP FIR if ``ccm fir`` (RFC 5104 4.3.1), else SIP INFO
  ``picture_fast_update`` (RFC 5168) -- or, for H.323, H.245 ``videoFastUpdatePicture``.
* **legacy peer -> core side.** The room system asks by RTCP PLI/FIR, SIP INFO
  (:class:`sip.info.KeyframeRequest`) or H.245; what we send it comes from the core (or a local
  encoder), so the answer is "force a keyframe" there.

Requests are coalesced per direction: one inside ``min_interval`` (250 ms) of the last one sent
is suppressed and counted -- an encoder asked twice while it is still producing the IDR makes two
(RFC 5104 4.3.1.2), and a broken decoder keeps asking until its IDR arrives anyway. A SIP room
system that negotiated no RTCP feedback at all cannot tell us it lost our picture (INFO is
optional and many never send it), so :meth:`KeyframeTranslator.tick` forces a keyframe toward
it every ``fallback_interval`` seconds (10 s) unless one went out meanwhile.

The translator decides; the caller does the I/O: each :class:`KeyframeAction` names the side and
method, and :meth:`KeyframeAction.rtcp` builds the PLI/FIR bytes for the RTCP ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import structlog

from bridge.rtcp_feedback import FirSequencer, Pli

log = structlog.get_logger("bridge.keyframe")

#: Requests toward one side closer together than this are coalesced into the first (seconds).
MIN_INTERVAL = 0.25
#: Keyframe refresh toward a legacy peer that has no way to ask (seconds).
FALLBACK_INTERVAL = 10.0


class Side(StrEnum):
    """Which side a request comes from or goes to."""

    LEGACY = "legacy"
    CORE = "core"


class Method(StrEnum):
    """How a keyframe is asked for (values are the ``method`` of the log events)."""

    RTCP_PLI = "rtcp_pli"
    RTCP_FIR = "rtcp_fir"
    SIP_INFO = "sip_info"
    H245 = "h245_fast_update"
    FORCE_KEYFRAME = "force_keyframe"


@dataclass(frozen=True)
class LegacyKeyframeCaps:
    """What the room system understands as a keyframe request.

    ``pli``/``fir`` come from the negotiated ``a=rtcp-fb`` (:func:`caps_from_feedback`,
    :func:`caps_from_sdp`); ``sip_info`` is any SIP dialog (RFC 5168 needs no negotiation);
    ``h245`` any H.323 call (:func:`h323_caps`).
    """

    pli: bool = False
    fir: bool = False
    sip_info: bool = False
    h245: bool = False

    @property
    def method(self) -> Method | None:
        """The best way to ask this peer for a keyframe, or None when there is none."""
        if self.pli:
            return Method.RTCP_PLI
        if self.fir:
            return Method.RTCP_FIR
        if self.h245:
            return Method.H245
        if self.sip_info:
            return Method.SIP_INFO
        return None

    @property
    def peer_can_ask(self) -> bool:
        """Whether the peer has a negotiated way to ask *us* for a keyframe (RTCP feedback or
        H.245). SIP INFO does not count: it is never negotiated, so we cannot rely on it."""
        return self.pli or self.fir or self.h245


def caps_from_feedback(feedback: Iterable[str], *, sip_info: bool = True) -> LegacyKeyframeCaps:
    """Caps from negotiated ``rtcp-fb`` values such as ``sip.offer_answer.VideoChoice.feedback``
    (``"nack pli"``, ``"ccm fir"``; a bare ``"nack"`` is retransmission, not a keyframe request)."""
    kinds = {" ".join(f.lower().split()) for f in feedback}
    return LegacyKeyframeCaps(pli="nack pli" in kinds, fir="ccm fir" in kinds, sip_info=sip_info)


class _MediaLike(Protocol):
    proto: str

    def attribute_values(self, name: str) -> list[str]: ...


def caps_from_sdp(media_description: _MediaLike, payload_type: int | None = None) -> LegacyKeyframeCaps:
    """Caps from one SDP video section's ``a=rtcp-fb`` lines for ``payload_type`` or ``*``
    (any payload type when None). Feedback only exists in AVPF profiles (RFC 4585 4.2), the same
    rule ``sip.offer_answer`` answers by; the gateway normally passes the negotiated
    ``VideoChoice.feedback`` to :func:`caps_from_feedback` instead."""
    if not media_description.proto.upper().endswith("AVPF"):
        return caps_from_feedback(())
    kinds = []
    for value in media_description.attribute_values("rtcp-fb"):
        fmt, _, kind = value.strip().partition(" ")
        if payload_type is None or fmt in (str(payload_type), "*"):
            kinds.append(kind)
    return caps_from_feedback(kinds)


def h323_caps() -> LegacyKeyframeCaps:
    """An H.323 endpoint: H.245 ``videoFastUpdatePicture`` both ways."""
    return LegacyKeyframeCaps(h245=True)


@dataclass(frozen=True)
class KeyframeAction:
    """Ask ``toward`` for a keyframe by ``method``; ``reason`` is why (for logs and counters)."""

    toward: Side
    method: Method
    reason: str

    def rtcp(self, sender_ssrc: int, media_ssrc: int, fir: FirSequencer) -> bytes | None:
        """The RTCP packet for an ``rtcp_pli``/``rtcp_fir`` action (None for other methods).
        ``fir`` keeps the FIR command sequence number, one increment per request (5104 4.3.1.1)."""
        if self.method is Method.RTCP_PLI:
            return Pli(sender_ssrc, media_ssrc).to_bytes()
        if self.method is Method.RTCP_FIR:
            return fir.fir(media_ssrc).to_bytes()
        return None


@dataclass
class KeyframeTranslator:
    """Turns keyframe needs on one side into requests toward the other (see the module doc).

    ``clock`` is any monotonic seconds clock (the loop's ``time``); ``call`` labels log events.
    ``fallback_interval=None`` disables the periodic refresh.
    """

    caps: LegacyKeyframeCaps
    clock: Callable[[], float]
    min_interval: float = MIN_INTERVAL
    fallback_interval: float | None = FALLBACK_INTERVAL
    call: str = ""
    #: Requests sent, by ``"<toward>/<method>"``.
    sent: Counter[str] = field(default_factory=Counter)
    #: Requests coalesced into an earlier one, by the side they would have gone to.
    suppressed: Counter[str] = field(default_factory=Counter)
    #: Needs with nowhere to go (a legacy peer with no method at all).
    unanswerable: int = 0
    _last: dict[Side, float] = field(default_factory=dict, repr=False)
    _fallback_due: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.fallback_interval is not None and not self.caps.peer_can_ask:
            self._fallback_due = self.clock() + self.fallback_interval

    @property
    def fallback_active(self) -> bool:
        """Whether the periodic refresh toward the legacy peer runs (it cannot ask by itself)."""
        return self._fallback_due is not None

    def from_core(self, reason: str = "core_request") -> list[KeyframeAction]:
        """The core side needs a keyframe of the legacy peer's video: aiortc's PLI/FIR on the
        WebRTC leg (``core_pli``/``core_fir``), a voice-activated switch to this participant
        (``vas_switch``), or our depacketizer lost the picture (``picture_lost``)."""
        method = self.caps.method
        if method is None:
            self.unanswerable += 1
            log.debug("video.keyframe.unanswerable", call=self.call, reason=reason)
            return []
        return self._request(Side.LEGACY, method, reason)

    def from_legacy(self, reason: str = "legacy_request") -> list[KeyframeAction]:
        """The legacy peer asked for a keyframe of what we send it (its RTCP PLI/FIR, SIP INFO
        ``picture_fast_update``, H.245 ``videoFastUpdatePicture``): force one on the core side."""
        return self._request(Side.CORE, Method.FORCE_KEYFRAME, reason)

    def tick(self) -> list[KeyframeAction]:
        """Call on a timer (e.g. every second): the periodic refresh for a peer that cannot ask."""
        if self._fallback_due is None or self.clock() < self._fallback_due:
            return []
        return self._request(Side.CORE, Method.FORCE_KEYFRAME, "periodic_fallback")

    def next_deadline(self) -> float | None:
        """When :meth:`tick` will next have something to do (clock time), or None."""
        return self._fallback_due

    def _request(self, toward: Side, method: Method, reason: str) -> list[KeyframeAction]:
        now = self.clock()
        last = self._last.get(toward)
        if last is not None and now - last < self.min_interval:
            self.suppressed[toward.value] += 1
            log.debug("video.keyframe.suppressed", call=self.call, toward=toward.value, reason=reason,
                      suppressed=self.suppressed[toward.value])
            return []
        self._last[toward] = now
        if toward is Side.CORE and self._fallback_due is not None and self.fallback_interval is not None:
            self._fallback_due = now + self.fallback_interval
        self.sent[f"{toward.value}/{method.value}"] += 1
        log.info("video.keyframe.requested", call=self.call, toward=toward.value, method=method.value,
                 reason=reason, suppressed=self.suppressed[toward.value])
        return [KeyframeAction(toward, method, reason)]
