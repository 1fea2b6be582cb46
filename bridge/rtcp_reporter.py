"""One RTP session's RTCP, sans-IO: what we report (SR/RR + SDES) and what the peer reports back.

The leg owns the sockets and the timer; this object only turns counters into compound packets
(``build``) and incoming compounds into figures (``receive``): the round-trip time (RFC 3550
6.4.1, from a report block about our SSRC echoing our last SR) and the loss and jitter *the peer*
sees on what we send. Packet types it does not interpret (feedback: RTPFB/PSFB, APP, XR) come
back from ``receive`` raw for ``bridge.rtcp_feedback``.

Two clocks are injected: ``now`` (monotonic seconds, for DLSR and statistics) passed to each
call, and ``wallclock`` (Unix seconds) for the NTP timestamps in our SRs and the arrival time
RTT is computed from -- both sides of the RTT sum use the same wall clock, so its offset cancels.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from bridge.rtcp import (
    Bye,
    RawRtcp,
    ReceiverReport,
    ReceiverStatistics,
    ReportBlock,
    SenderReport,
    SourceDescription,
    build_compound,
    ntp_from_unix,
    parse_compound,
    report_interval,
    round_trip_time,
)

log = structlog.get_logger("bridge.rtcp")


@dataclass(frozen=True, slots=True)
class SenderSnapshot:
    """What our RTP sender has done so far: RFC 3550 6.4.1 sender info."""

    packet_count: int
    octet_count: int
    rtp_timestamp: int


class RtcpReporter:
    """Our side of RTCP for one RTP stream with SSRC ``ssrc`` (``clock_rate`` is its RTP clock)."""

    def __init__(self, *, ssrc: int, cname: str, clock_rate: int,
                 wallclock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self.ssrc = ssrc
        self.cname = cname
        self.clock_rate = clock_rate
        self._wallclock = wallclock
        self._rng = rng or random.Random()
        self._last_packet_count = 0
        #: Latest round trip from the peer's report blocks, in seconds (None: not known yet).
        self.rtt: float | None = None
        #: The peer's view of our stream (its last report block about ``ssrc``).
        self.remote_block: ReportBlock | None = None
        self.sr_sent = 0
        self.rr_sent = 0
        self.reports_received = 0
        self.bye_received = False

    def next_interval(self) -> float:
        """Seconds until the next report (RFC 3550 6.3.1 randomised 5 s minimum)."""
        return report_interval(self._rng)

    def build(self, now: float, *, sent: SenderSnapshot | None,
              rx: ReceiverStatistics | None, bye: bool = False) -> bytes:
        """Our next compound: SR when we sent RTP since the last report (else RR), a report block
        about the peer's stream if we receive one, SDES CNAME, and BYE when leaving."""
        blocks = (rx.report_block(now),) if rx is not None and rx.received else ()
        first: SenderReport | ReceiverReport
        if sent is not None and sent.packet_count != self._last_packet_count:
            first = SenderReport(self.ssrc, ntp_from_unix(self._wallclock()), sent.rtp_timestamp,
                                 sent.packet_count, sent.octet_count, blocks)
            self._last_packet_count = sent.packet_count
            self.sr_sent += 1
        else:
            first = ReceiverReport(self.ssrc, blocks)
            self.rr_sent += 1
        packets: list[SenderReport | ReceiverReport | SourceDescription | Bye] = [
            first, SourceDescription.cname(self.ssrc, self.cname)]
        if bye:
            packets.append(Bye((self.ssrc,)))
        return build_compound(packets)

    def receive(self, data: bytes, now: float, rx: ReceiverStatistics | None) -> list[RawRtcp]:
        """Take in one plain compound from the peer; returns the packets left for others
        (feedback). Raises :class:`bridge.rtcp.RtcpError` for malformed input."""
        arrival_ntp = ntp_from_unix(self._wallclock())
        raw: list[RawRtcp] = []
        for packet in parse_compound(data):
            if isinstance(packet, SenderReport | ReceiverReport):
                self.reports_received += 1
                if isinstance(packet, SenderReport) and rx is not None and packet.ssrc == rx.ssrc:
                    rx.sender_report_received(packet, now)
                for block in packet.reports:
                    if block.ssrc != self.ssrc:
                        continue
                    self.remote_block = block
                    rtt = round_trip_time(block, arrival_ntp)
                    if rtt is not None:
                        self.rtt = rtt
            elif isinstance(packet, Bye):
                self.bye_received = True
                log.info("bridge.rtcp.bye", sources=len(packet.ssrcs))
            elif isinstance(packet, RawRtcp):
                raw.append(packet)
        return raw

    @property
    def rtt_ms(self) -> float | None:
        return None if self.rtt is None else self.rtt * 1000.0

    @property
    def remote_jitter_ms(self) -> float | None:
        """Jitter the peer measures on our stream, in ms."""
        return None if self.remote_block is None else self.remote_block.jitter * 1000.0 / self.clock_rate
