"""How fast we may send video to a room system: the SDP cap, REMB/TMMBR and H.245 flow control.

A room system states its receive limit up to three ways, and the encoder feeding it must obey
the smallest (it never gets more than it asked for):

* the SDP of its video line (:func:`cap_from_sdp`): ``b=TIAS`` (RFC 3890, bit/s of RTP payload,
  preferred) or ``b=AS`` (RFC 8866 5.8, kbit/s *including* IP/UDP/RTP headers);
* RTCP while the call runs: REMB (an estimate of what the path carries) and TMMBR (RFC 5104
  4.2.1, a hard request we must acknowledge with TMMBN);
* H.323: H.245 ``flowControlCommand`` with ``maximumBitRate`` in units of 100 bit/s.

Everything here is an RTP *payload* rate, which is what an encoder is configured with. Totals that
include headers (``b=AS``, REMB, TMMBR) lose the IP/UDP/RTP overhead of full-size packets:
``total * 1188 / (1188 + overhead)`` -- 1188 payload bytes being the packetizer's 1200-byte RTP
packets (:data:`bridge.h264_rtp.RTP_HEADER` included) and the overhead 40 bytes for IPv4 (60 for
IPv6) unless the message states it (TMMBR's measured overhead) or ``a=maxprate`` gives the packet
rate (RFC 3890 6.4: ``AS - maxprate * headers``). Full-size packets are the right assumption for
video: at the rates these caps bind, nearly every packet is an FU-A fragment of MTU size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from bridge.h264_rtp import RTP_HEADER
from bridge.rtcp_feedback import Remb, Tmmbn, Tmmbr

log = structlog.get_logger("bridge.bitrate")

#: RTP payload bytes of a full-size video packet (the packetizer's default 1200-byte MTU).
FULL_PAYLOAD = 1200 - RTP_HEADER
#: IP + UDP + RTP header bytes per packet.
HEADERS_IPV4 = 20 + 8 + RTP_HEADER
HEADERS_IPV6 = 40 + 8 + RTP_HEADER
#: Our own ceiling when the caller sets none (bit/s of payload): what we send when the peer
#: states no limit, and never exceeded whatever a REMB says the path could carry.
CEILING_BPS = 2_000_000


def payload_share(total_bps: int, overhead_bytes: int = HEADERS_IPV4) -> int:
    """The payload part of a header-inclusive rate, assuming full-size packets (rounded down)."""
    return max(0, total_bps) * FULL_PAYLOAD // (FULL_PAYLOAD + max(0, overhead_bytes))


class _MediaLike(Protocol):
    bandwidths: list[str]

    @property
    def connection_address(self) -> str | None: ...

    def attribute(self, name: str) -> str | None: ...


def cap_from_sdp(media_description: _MediaLike) -> int | None:
    """The payload bit rate a video line allows, or None when it states none.

    ``b=TIAS`` wins when present (it is already a payload rate); otherwise ``b=AS`` less the
    headers: with ``a=maxprate`` exactly (RFC 3890 6.4), else the full-size-packet rule. IPv6
    headers when the line's address is IPv6. Zero or malformed values are ignored.
    """
    tias: int | None = None
    as_kbps: int | None = None
    for line in media_description.bandwidths:
        kind, _, value = line.partition(":")
        value = value.strip()
        if not value.isdigit() or int(value) == 0:
            continue
        if kind.strip().upper() == "TIAS":
            tias = int(value) if tias is None else min(tias, int(value))
        elif kind.strip().upper() == "AS":
            as_kbps = int(value) if as_kbps is None else min(as_kbps, int(value))
    if tias is not None:
        return tias
    if as_kbps is None:
        return None
    address = media_description.connection_address or ""
    headers = HEADERS_IPV6 if ":" in address else HEADERS_IPV4
    maxprate = _maxprate(media_description.attribute("maxprate"))
    if maxprate is not None:
        return max(0, as_kbps * 1000 - int(maxprate * headers * 8))
    return payload_share(as_kbps * 1000, headers)


def _maxprate(value: str | None) -> float | None:
    try:
        rate = float(value) if value is not None else None
    except ValueError:
        return None
    return rate if rate is not None and 0 < rate < 1e6 else None


@dataclass
class BitrateGovernor:
    """The encoder target toward one room system: the least of every limit it stated and our
    own ``ceiling_bps``.

    Feed it the peer's REMB/TMMBR (:meth:`feedback`) and H.245 flow control
    (:meth:`flow_control`); read :attr:`target_bps`, or pass ``on_change`` to hear each change
    (the encoder is re-configured there). ``ssrc`` is our video SSRC toward the peer: TMMBR
    entries for other sources are not ours to obey, and it is the sender of our TMMBN.
    """

    ssrc: int
    sdp_cap_bps: int | None = None
    ceiling_bps: int = CEILING_BPS
    on_change: Callable[[int], None] | None = None
    call: str = ""
    remb_bps: int | None = None
    tmmbr_bps: int | None = None
    h245_bps: int | None = None
    _target: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._target = self._compute()[0]

    @property
    def target_bps(self) -> int:
        """What the encoder should produce now (payload bit/s)."""
        return self._target

    def feedback(self, message: object) -> Tmmbn | None:
        """Take any parsed RTCP feedback; REMB and TMMBR move the target, the rest is ignored.
        Returns the TMMBN to send back for a TMMBR addressed to us (RFC 5104 4.2.1.2)."""
        if isinstance(message, Remb):
            self.remb(message)
        elif isinstance(message, Tmmbr):
            return self.tmmbr(message)
        return None

    def remb(self, message: Remb) -> int:
        """The peer's receive estimate (a header-inclusive total)."""
        self.remb_bps = payload_share(message.bitrate_bps)
        return self._update("remb")

    def tmmbr(self, message: Tmmbr) -> Tmmbn | None:
        """A TMMBR: obey the entry for our SSRC (0 pauses, RFC 5104 4.2.1.2) and return the TMMBN
        naming the bounding set -- with one requester, its own tuple. None if no entry is ours."""
        mine = [e for e in message.entries if e[0] == self.ssrc]
        if not mine:
            return None
        _, total, overhead = min(mine, key=lambda e: e[1])
        self.tmmbr_bps = payload_share(total, overhead)
        self._update("tmmbr")
        return Tmmbn(self.ssrc, ((message.sender_ssrc, total, overhead),))

    def flow_control(self, maximum_bit_rate_100bps: int | None) -> int:
        """H.245 ``flowControlCommand``: ``maximumBitRate`` (units of 100 bit/s, the channel's
        media rate), or None for ``noRestriction``."""
        self.h245_bps = None if maximum_bit_rate_100bps is None else max(0, maximum_bit_rate_100bps) * 100
        return self._update("h245")

    def _compute(self) -> tuple[int, str]:
        limits = [(v, name) for v, name in ((self.sdp_cap_bps, "sdp"), (self.remb_bps, "remb"),
                                            (self.tmmbr_bps, "tmmbr"), (self.h245_bps, "h245"))
                  if v is not None]
        return min([(self.ceiling_bps, "ceiling"), *limits])

    def _update(self, trigger: str) -> int:
        target, limited_by = self._compute()
        if target != self._target:
            self._target = target
            log.info("video.bitrate.target", call=self.call, target_bps=target, limited_by=limited_by,
                     trigger=trigger)
            if self.on_change is not None:
                self.on_change(target)
        return self._target
