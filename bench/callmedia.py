"""One caller's G.711 audio for the calls benchmark and SIP tests: a tone out, what comes back kept.

The gateway decodes every call, mixes it in the core as Opus and encodes the mix back
(bridge/webrtc_leg.py), so no payload byte survives the round trip and a timestamp
written into the payload (as the media benchmark does, bench/rtpload.py) cannot be read
on the far side. Latency is measured on the audio itself instead: the caller sends a
tone in bursts (``burst_ms`` on, the rest of each ``period_ms`` silent), each burst
starting on a packet boundary whose send time is recorded; the far caller finds each
burst's onset in the decoded audio it receives, and the onset's arrival time minus the
burst's send time is the mouth-to-ear latency of that burst through gateway and core.
Bursts cycle through ``codes`` tone frequencies, and an onset only counts for a burst of
its own frequency, so a latency longer than the period is still matched to the right
burst (up to ``codes`` periods) instead of to the next one.

Loss is counted on the packets the gateway sends to the caller (those missing against
its 50 packet/s clock over the window), because the packets the caller sends are
decoded and mixed, not forwarded; bursts never heard are counted apart. Everything runs on the caller's asyncio
loop; the sender keeps a drift-free 20 ms schedule on ``loop.time()``.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bridge.codecs import codec_by_name
from bridge.rtp import RtpError, RtpPacket

FRAME_S = 0.020
SAMPLES = 160  # 20 ms at 8 kHz
#: Spacing of the burst code frequencies: wide against the 50 Hz bins of a 20 ms FFT at 8 kHz.
CODE_STEP_HZ = 150.0
#: How long after a burst's send time its onset may still arrive to be counted, at the window's end.
ARRIVAL_GRACE_S = 1.5


@dataclass
class Received:
    """What one caller got back: per packet the arrival time, sequence number and PCM."""

    arrivals: list[float] = field(default_factory=list)
    sequences: list[int] = field(default_factory=list)
    pcm: list[np.ndarray] = field(default_factory=list)
    dropped: int = 0  # datagrams that were not RTP with the negotiated payload type


class CallAudio(asyncio.DatagramProtocol):
    """A caller's RTP socket: send a bursty G.711 tone to the gateway, keep what it sends back."""

    def __init__(self, encoding: str = "PCMU", tone_hz: float = 1000.0, *,
                 burst_ms: int = 100, period_ms: int = 1000, amplitude: float = 0.3,
                 codes: int = 4) -> None:
        self.codec = codec_by_name(encoding)
        self.tone_hz = tone_hz
        #: Burst k is a tone of ``burst_hz(k)``: ``codes`` frequencies in turn tell bursts apart
        #: on the far side even when the latency exceeds the period (up to ``codes`` periods).
        self.codes = max(1, codes)
        self.burst_frames = max(1, burst_ms // 20)
        self.period_frames = max(self.burst_frames + 1, period_ms // 20)
        self.amplitude = amplitude
        self.received = Received()
        #: Send time (loop.time()) of the first packet of each burst.
        self.burst_sent: list[float] = []
        self.packets_sent = 0
        self._encoder = self.codec.encoder()
        self._decoder = self.codec.decoder()
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self._ssrc = secrets.randbits(32)
        self._silence = self._encoder.encode(np.zeros(SAMPLES, dtype=np.int16))

    @classmethod
    async def bind(cls, host: str, **options: Any) -> tuple[CallAudio, int]:
        """Bind a UDP socket on ``host`` (any port); returns the protocol and its port."""
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: cls(**options), local_addr=(host, 0))
        return protocol, transport.get_extra_info("sockname")[1]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        now = asyncio.get_running_loop().time()
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            self.received.dropped += 1
            return
        if packet.payload_type != self.codec.payload_type or len(packet.payload) != SAMPLES:
            self.received.dropped += 1
            return
        self.received.arrivals.append(now)
        self.received.sequences.append(packet.sequence_number)
        self.received.pcm.append(self._decoder.decode(packet.payload))

    def start(self, remote: tuple[str, int]) -> None:
        """Start sending to ``remote`` (the port the gateway's SDP answer names)."""
        self._task = asyncio.get_running_loop().create_task(self._send_loop(remote))

    async def stop(self) -> None:
        """Stop sending and close the socket."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()

    def burst_hz(self, burst: int) -> float:
        """The tone of burst number ``burst``."""
        return self.tone_hz + (burst % self.codes) * CODE_STEP_HZ

    def _frame(self, index: int) -> bytes:
        if index % self.period_frames >= self.burst_frames:
            return self._silence
        n = np.arange(index * SAMPLES, (index + 1) * SAMPLES)
        hz = self.burst_hz(index // self.period_frames)
        pcm = np.sin(2 * np.pi * hz * n / 8000) * self.amplitude * 32767
        return self._encoder.encode(pcm.astype(np.int16))

    async def _send_loop(self, remote: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        index = 0
        while True:
            payload = self._frame(index)
            packet = RtpPacket(self.codec.payload_type, index & 0xFFFF, index * SAMPLES, self._ssrc,
                               payload, marker=index == 0)
            if self._transport is None or self._transport.is_closing():
                return
            if index % self.period_frames == 0:
                self.burst_sent.append(loop.time())
            self._transport.sendto(bytes(packet), remote)
            self.packets_sent += 1
            index += 1
            delay = start + index * FRAME_S - loop.time()
            if delay < -1.0:  # stalled for a second: skip ahead instead of bursting to catch up
                skipped = int(-delay / FRAME_S)
                index += skipped
                delay += skipped * FRAME_S
            await asyncio.sleep(max(0.0, delay))

    def audio(self) -> np.ndarray:
        """Every received sample in arrival order (for a tone check)."""
        if not self.received.pcm:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self.received.pcm)


@dataclass(frozen=True)
class Measured:
    """One direction of one call over a window: packets, loss and per-burst latency."""

    expected: int
    received: int
    lost: int
    latencies_ms: list[float]
    bursts_sent: int
    bursts_heard: int

    @property
    def loss(self) -> float:
        return self.lost / self.expected if self.expected else 0.0


def measure(sender: CallAudio, receiver: CallAudio, window: tuple[float, float], *,
            threshold_dbfs: float = -30.0) -> Measured:
    """Loss of the gateway's stream into ``receiver`` and latency of ``sender``'s bursts to it,
    over ``window`` (loop.time() from, to).

    Expected packets are the window's length at 50 packets/s (the gateway sends on its own
    20 ms clock); lost ones are the sequence numbers missing between the first and last
    packet inside the window plus any shortfall at its edges.
    """
    t0, t1 = window
    rx = receiver.received
    idx = [i for i, t in enumerate(rx.arrivals) if t0 <= t < t1]
    expected = round((t1 - t0) / FRAME_S)
    got = len(idx)
    lost = max(0, expected - got)
    onsets = _onsets(receiver, 32768 * 10 ** (threshold_dbfs / 20))
    sent = [(k, t) for k, t in enumerate(sender.burst_sent) if t0 <= t < t1 - ARRIVAL_GRACE_S]
    horizon = sender.codes * sender.period_frames * FRAME_S
    latencies: list[float] = []
    j = 0
    for k, t in sent:
        hz = sender.burst_hz(k)
        while j < len(onsets) and onsets[j][0] < t:
            j += 1
        # The first onset after the send with this burst's tone, within the codes' horizon;
        # none (a burst lost, or one whose tone was mangled) leaves it unheard.
        for i in range(j, len(onsets)):
            at, heard_hz = onsets[i]
            if at - t >= horizon:
                break
            if abs(heard_hz - hz) < CODE_STEP_HZ / 2:
                latencies.append((at - t) * 1000)
                j = i + 1
                break
    return Measured(expected=expected, received=got, lost=lost, latencies_ms=latencies,
                    bursts_sent=len(sent), bursts_heard=len(latencies))


def _onsets(receiver: CallAudio, level: float) -> list[tuple[float, float]]:
    """(time, frequency) of each burst heard: a packet louder than ``level`` after a quiet one;
    its time is the packet's arrival plus the offset of its first loud sample, its frequency
    the spectral peak of that packet and the two after it."""
    rx = receiver.received
    out: list[tuple[float, float]] = []
    quiet = True
    for i, pcm16 in enumerate(rx.pcm):
        pcm = pcm16.astype(np.float64)
        loud = float(np.sqrt(np.mean(pcm ** 2))) > level
        if loud and quiet:
            first = int(np.argmax(np.abs(pcm) > level))
            block = np.concatenate(rx.pcm[i:i + 3]).astype(np.float64)
            mags = np.abs(np.fft.rfft(block * np.hanning(block.size)))
            freqs = np.fft.rfftfreq(block.size, 1 / 8000)
            mags[freqs < 100] = 0
            out.append((rx.arrivals[i] + first / 8000, float(freqs[int(mags.argmax())])))
        quiet = not loud
    return out


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0-100) of ``values``, None when empty (as bench/rtpload.py)."""
    if not values:
        return None
    data = sorted(values)
    return data[min(len(data) - 1, max(0, round(q / 100 * (len(data) - 1))))]


def pairs_figures(pairs: list[tuple[CallAudio, CallAudio]], window: tuple[float, float]) -> dict[str, Any]:
    """Audio figures of two-party meetings over ``window``, both directions of every pair: loss,
    bursts heard, latency p50/p99, and p99 *added* latency (each burst's latency above the lowest
    of its own call and direction: each path has a standing delay of its own), with those floors.
    The keys are the calls benchmark's step keys (bench/calls.py); the video benchmark uses them."""
    expected = lost = bursts_sent = bursts_heard = 0
    latencies: list[float] = []
    added: list[float] = []
    floors: list[float] = []
    for a, b in pairs:
        for tx, rx in ((a, b), (b, a)):
            m = measure(tx, rx, window)
            expected += m.expected
            lost += m.lost
            bursts_sent += m.bursts_sent
            bursts_heard += m.bursts_heard
            latencies += m.latencies_ms
            if m.latencies_ms:
                floors.append(min(m.latencies_ms))
                added += [x - floors[-1] for x in m.latencies_ms]
    return {"packets_expected": expected, "packets_lost": lost,
            "loss_pct": round(100 * lost / expected, 4) if expected else 0.0,
            "bursts_sent": bursts_sent, "bursts_heard": bursts_heard,
            "burst_miss_pct": round(100 * (bursts_sent - bursts_heard) / bursts_sent, 4) if bursts_sent else 0.0,
            "latency_p50_ms": percentile(latencies, 50), "latency_p99_ms": percentile(latencies, 99),
            "added_p99_ms": percentile(added, 99),
            "call_floor_ms_min": min(floors, default=None), "call_floor_ms_max": max(floors, default=None)}
