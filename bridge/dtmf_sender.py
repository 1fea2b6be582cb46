"""RFC 4733 telephone-events *toward* a legacy endpoint, re-timed onto our own outbound stream.

The audio a legacy caller hears is always re-encoded by its leg's packetiser
(:class:`bridge.legacy_leg.RtpOutbound`) on that leg's own 20 ms clock, so a digit
that came from someone else (another caller, the control API) has no timestamp
that means anything on this stream. Gateways that copy the sender's event
packets through a transcoding bridge emit events whose timestamps belong to
another stream's clock, which receivers drop or misread. :class:`DtmfSender`
instead asks, on every tick of *this* stream, "is there an event packet to send
now?", and builds it from this stream's timestamp:

* the event's RTP timestamp is the stream's timestamp on the tick the event
  starts, and stays the same for every packet of the event (RFC 4733 2.5.1.2);
* the first packet carries the marker bit (2.5.1.1);
* the duration is measured on the stream's clock: ``now - start + one packet``,
  so it grows by one packet time (160 at 8 kHz for 20 ms) per packet, and frames
  the leg's clock skipped still count;
* the end packet (E bit) goes out three times with the same final duration
  (2.5.1.4), one per tick so that a short loss burst cannot take all three;
* then at least ``min_gap_ms`` of audio before the next queued digit.

**Audio is suppressed while an event is sent** (RFC 4733 2.5.1.3 allows either):
each event packet takes the place of the audio packet of its tick, so the
sequence numbers run on without a gap, receivers that would otherwise play
both (or detect the event twice, once in band) cannot, and the audio encoder
simply does not run for those frames, which keeps a stateful encoder (G.722
ADPCM) in step with the far decoder that never sees them.

**Long events** (2.5.1.5 segments events longer than the 16-bit duration field):
a digit needs none of that, so :meth:`DtmfSender.queue` refuses a duration that
would not fit in one segment (:data:`MAX_DURATION_MS`) with :class:`DtmfError`;
should a stall of the leg's clock still push an event past 0xFFFF ticks, its end
packet carries 0xFFFF (clamped, never wrapped).

Sans-IO: no clock of its own, no sockets; the packetiser calls :meth:`tick` with
its current timestamp once per packet it is about to send.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from bridge.rtp import DTMF_DIGITS, TelephoneEvent

#: How long each digit sounds when the caller does not say (ITU-T Q.24 wants >= 40 ms).
DEFAULT_DURATION_MS = 160
MIN_DURATION_MS = 40
#: The longest digit we send as one event: 0xFFFF ticks at 8 kHz is 8.19 s; 5 s keeps clear of it
#: at every clock rate up to 13 kHz, and no keypad press lasts that long.
MAX_DURATION_MS = 5000
#: Silence (audio) between two digits on the wire, so the receiver sees two presses.
DEFAULT_GAP_MS = 80
#: RFC 4733 2.3.4: volume in -dBm0, 0..63; 10 is what most phones send.
DEFAULT_VOLUME = 10
#: How many copies of the end packet (RFC 4733 2.5.1.4).
END_COPIES = 3
#: Digits that may wait; more is refused (a control API caller cannot queue a novel).
MAX_QUEUED = 64
_DURATION_MAX = 0xFFFF


class DtmfError(ValueError):
    """DTMF that cannot be sent as asked (not a keypad digit, a duration out of range, a full queue)."""


@dataclass(frozen=True, slots=True)
class EventPacket:
    """What the packetiser puts on the wire in place of this tick's audio packet."""

    payload_type: int
    timestamp: int
    marker: bool
    event: TelephoneEvent

    @property
    def payload(self) -> bytes:
        return bytes(self.event)


def validate_digits(digits: str) -> str:
    """``digits`` upper-cased if every one is a keypad key (0-9 * # A-D), else :class:`DtmfError`."""
    text = digits.upper()
    if not text:
        raise DtmfError("no digits to send")
    bad = sorted({ch for ch in digits if ch.upper() not in DTMF_DIGITS})
    if bad:
        raise DtmfError(f"not DTMF keys: {''.join(bad)!r} (allowed: {DTMF_DIGITS})")
    return text


def check_duration(duration_ms: int) -> int:
    """``duration_ms`` if a digit may sound that long (one RFC 4733 segment), else :class:`DtmfError`."""
    if not MIN_DURATION_MS <= duration_ms <= MAX_DURATION_MS:
        raise DtmfError(f"duration must be {MIN_DURATION_MS}..{MAX_DURATION_MS} ms, got {duration_ms}")
    return duration_ms


@dataclass
class _Current:
    code: int
    start: int  # the event's RTP timestamp
    target: int  # duration in ticks at which the event ends
    duration: int = 0
    ends_sent: int = 0


class DtmfSender:
    """Queue of digits turned into RFC 4733 event packets on one outbound stream's clock.

    ``packet_ticks`` is the stream's timestamp step per packet (160 for 20 ms at 8 kHz, also for
    G.722 whose RTP clock is 8 kHz; 960 at 48 kHz); ``clock_rate`` turns milliseconds into ticks.
    """

    def __init__(self, *, payload_type: int, clock_rate: int, packet_ticks: int,
                 volume: int = DEFAULT_VOLUME, min_gap_ms: int = DEFAULT_GAP_MS) -> None:
        if not 0 <= volume <= 63:
            raise DtmfError(f"volume must be 0..63 (-dBm0), got {volume}")
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.packet_ticks = packet_ticks
        self.volume = volume
        self.gap_ticks = self._ticks(min_gap_ms)
        self._queue: deque[tuple[int, int]] = deque()
        self._current: _Current | None = None
        #: Stream timestamp where the last event's tone ended (start + final duration); the gap
        #: to the next digit counts from there. None: no event yet.
        self._last_end: int | None = None
        #: Events whose end went out all three times.
        self.events_sent = 0

    def _ticks(self, ms: int) -> int:
        return -(-ms * self.clock_rate // 1000)  # ceil: never shorter than asked

    @property
    def pending(self) -> int:
        """Digits queued or being sent."""
        return len(self._queue) + (self._current is not None)

    @property
    def busy(self) -> bool:
        return self.pending > 0

    def queue(self, digits: str, duration_ms: int = DEFAULT_DURATION_MS) -> int:
        """Queue ``digits`` (0-9 * # A-D, case-insensitive) to sound ``duration_ms`` each; returns
        how many were queued. All or nothing: :class:`DtmfError` queues none."""
        text = validate_digits(digits)
        check_duration(duration_ms)
        if len(self._queue) + len(text) > MAX_QUEUED:
            raise DtmfError(f"at most {MAX_QUEUED} digits may wait, {len(self._queue)} already do")
        target = min(self._ticks(duration_ms), _DURATION_MAX)
        self._queue.extend((DTMF_DIGITS.index(ch), target) for ch in text)
        return len(text)

    def tick(self, timestamp: int) -> EventPacket | None:
        """The event packet to send in place of audio at stream timestamp ``timestamp``, or None
        (send audio). Call once per packet the stream sends, with that packet's timestamp."""
        cur = self._current
        if cur is None:
            if not self._queue or not self._gap_over(timestamp):
                return None
            code, target = self._queue.popleft()
            cur = self._current = _Current(code=code, start=timestamp, target=target)
            cur.duration = self.packet_ticks
            return self._packet(cur, marker=True, end=cur.duration >= cur.target)
        if cur.duration < cur.target:  # still sounding: the duration follows the stream's clock
            elapsed = (timestamp - cur.start) & 0xFFFFFFFF
            cur.duration = min(elapsed + self.packet_ticks, _DURATION_MAX)
            return self._packet(cur, marker=False, end=cur.duration >= cur.target)
        return self._packet(cur, marker=False, end=True)  # a retransmission of the end

    def _packet(self, cur: _Current, *, marker: bool, end: bool) -> EventPacket:
        if end:
            cur.ends_sent += 1
            if cur.ends_sent >= END_COPIES:
                self._current = None
                self._last_end = (cur.start + cur.duration) & 0xFFFFFFFF
                self.events_sent += 1
        return EventPacket(payload_type=self.payload_type, timestamp=cur.start, marker=marker,
                           event=TelephoneEvent(event=cur.code, end=end, volume=self.volume,
                                                duration=cur.duration))

    def _gap_over(self, timestamp: int) -> bool:
        if self._last_end is None:
            return True
        since = (timestamp - self._last_end) & 0xFFFFFFFF
        return since < 0x80000000 and since >= self.gap_ticks
