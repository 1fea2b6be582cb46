"""Where a relayed packet's Python time goes: each step of the media path timed alone, no sockets.

``python -m bench micro`` times, per 172-byte RTP packet, the pieces the relays in
bench/relays.py are made of (SRTP protect, today's ``RtpPacket.parse`` and
``RtpInbound.receive``, the prototype's whole ``datagram_received`` with a no-op
send). What the socket benchmark measures on top of their sum is the event loop
and the kernel.

``python -m bench micro --passthrough`` times one G.711 packet each way through the two
media paths a call can take: the transcoding path's per-packet work (G.711 decode,
resample to 48 kHz, aiortc's Opus encode and SRTP protect toward the core; Opus decode,
resample to 8 kHz, G.711 encode toward the caller) against the fast path's
(:mod:`bridge.fastpath`: accept, re-head, protect, with no-op sends). It leaves out what
only the transcoding path also pays (aiortc's tracks, its jitter buffer and the thread
hand-offs py-spy found), so the ratio it prints is a lower bound of the saving.
"""

from __future__ import annotations

import os
import struct
import timeit
from collections.abc import Callable
from typing import Any


def _packet(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160, 0x10000000) + b"\xff" * 160


def measure(number: int = 20_000) -> dict[str, float]:
    """Microseconds per call of each step (best of 5 runs of ``number`` calls)."""
    from bench.relays import (
        BridgeRelay,
        FastPathRelay,
        FloorRelay,
        _PassthroughDecoder,
        outbound_session,
    )
    from bridge.legacy_leg import LegCounters, RtpInbound
    from bridge.rtp import RtpPacket

    packets = [_packet(i) for i in range(number)]
    addr = ("127.0.0.1", 40000)

    def per_packet(make: Callable[[], Callable[[bytes], Any]]) -> float:
        best = float("inf")
        for _ in range(5):
            fn, it = make(), iter(packets)

            def one(fn: Callable[[bytes], Any] = fn, it: Any = it) -> None:
                fn(next(it))

            t = timeit.timeit(one, number=number)
            best = min(best, t)
        return best / number * 1e6

    def sendto_noop(data: bytes, addr: Any) -> None:
        return None

    def relay(cls: Any) -> Callable[[bytes], Any]:
        r = cls(outbound_session(os.urandom(30)), ("127.0.0.1", 9))
        r.sendto = sendto_noop
        return lambda d: r.datagram_received(d, addr)

    def inbound() -> Callable[[bytes], Any]:
        ib = RtpInbound(remote_address="127.0.0.1", payload_type=0, decoder=_PassthroughDecoder(),  # type: ignore[arg-type]
                        counters=LegCounters())
        return lambda d: ib.receive(d, addr)

    return {
        "call overhead (lambda: None)": per_packet(lambda: (lambda d: None)),
        "pylibsrtp protect": per_packet(lambda: outbound_session(os.urandom(30)).protect),
        "bridge.rtp.RtpPacket.parse": per_packet(lambda: RtpPacket.parse),
        "bridge RtpInbound.receive (no decode)": per_packet(inbound),
        "floor relay datagram_received": per_packet(lambda: relay(FloorRelay)),
        "fastpath datagram_received": per_packet(lambda: relay(FastPathRelay)),
        "bridge adapter datagram_received": per_packet(lambda: relay(BridgeRelay)),
    }


def measure_paths(number: int = 5_000) -> dict[str, float]:
    """Microseconds per 20 ms G.711 packet, each direction, on the transcoding and the fast path."""
    import fractions

    import av
    import numpy as np
    from aiortc.codecs.opus import OpusDecoder, OpusEncoder
    from aiortc.jitterbuffer import JitterFrame

    from bench.relays import BridgeFastPathRelay, outbound_session
    from bridge.codecs import PCMU, Resampler, downmix
    from bridge.fastpath import CoreToLegacy
    from bridge.legacy_leg import RtpOutbound

    addr = ("127.0.0.1", 40000)
    tone = (np.sin(2 * np.pi * 1000 * np.arange(160) / 8000) * 8000).astype(np.int16)
    g711 = PCMU.encoder().encode(tone)
    rounds = 3  # best of; each round its own packets (SRTP refuses to protect an index twice)
    packets = [struct.pack("!BBHII", 0x80, 0, i & 0xFFFF, i * 160, 0x10000000) + g711
               for i in range(rounds * number)]

    def best_of(fn: Callable[[int], Any]) -> float:
        best = float("inf")
        for r in range(rounds):
            start = timeit.default_timer()
            for i in range(r * number, (r + 1) * number):
                fn(i)
            best = min(best, timeit.default_timer() - start)
        return best / number * 1e6

    # Transcoding path, toward the core: decode, resample, Opus encode (aiortc's), protect.
    decoder, up, encoder = PCMU.decoder(), Resampler(8000, 48000), OpusEncoder()
    protect = outbound_session(os.urandom(30)).protect
    pts = [0]

    def transcode_to_core(i: int) -> None:
        pcm = up.process(decoder.decode(packets[i][12:]))
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, pts[0], fractions.Fraction(1, 48000)
        pts[0] += pcm.size
        for payload in encoder.encode(frame)[0]:
            protect(packets[i][:12] + payload)

    # ... and toward the caller: Opus decode (aiortc's), resample, G.711 encode, packetise.
    opus = OpusEncoder()
    frame48 = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.int16), format="s16", layout="mono")
    frame48.sample_rate, frame48.pts, frame48.time_base = 48000, 0, fractions.Fraction(1, 48000)
    opus_payload = opus.encode(frame48)[0][0]
    opus_decoder, down = OpusDecoder(), Resampler(48000, 8000)
    outbound = RtpOutbound(payload_type=0, timestamp_step=160, encoder=PCMU.encoder())

    def transcode_to_caller(i: int) -> None:
        for f in opus_decoder.decode(JitterFrame(opus_payload, i * 960)):
            assert isinstance(f, av.AudioFrame)
            mono = downmix(f.to_ndarray(), len(f.layout.channels), f.format.is_planar)
            outbound.packet(down.process(mono)[:160])

    to_core = BridgeFastPathRelay(outbound_session(os.urandom(30)), ("127.0.0.1", 9))
    to_core._transport.sendto = lambda data, address: None

    class _Leg:
        sending = True

        def __init__(self) -> None:
            self.outbound = RtpOutbound(payload_type=0, timestamp_step=160, encoder=PCMU.encoder())
            self._protect = outbound_session(os.urandom(30)).protect

        def send_relayed(self, data: bytes, *, next_sequence: int, next_timestamp: int) -> None:
            self.outbound.sequence_number, self.outbound.timestamp = next_sequence, next_timestamp
            self._protect(data)

    to_caller = CoreToLegacy(_Leg(), core_payload_type=0)

    class _CorePacket:
        __slots__ = ("marker", "payload", "payload_type", "sequence_number", "ssrc", "timestamp")

        def __init__(self, i: int) -> None:
            self.payload_type, self.sequence_number, self.timestamp = 0, i & 0xFFFF, i * 160
            self.ssrc, self.marker, self.payload = 0x2000, 0, g711

    core_packets = [_CorePacket(i) for i in range(rounds * number)]
    return {
        "transcode: caller -> core (decode, resample, Opus encode, protect)": best_of(transcode_to_core),
        "transcode: core -> caller (Opus decode, resample, G.711 encode, packetise)": best_of(transcode_to_caller),
        "passthrough: caller -> core (RtpInbound, LegacyToCore, protect)":
            best_of(lambda i: to_core.datagram_received(packets[i], addr)),
        "passthrough: core -> caller (CoreToLegacy, protect)": best_of(lambda i: to_caller(core_packets[i])),
    }


def table(result: dict[str, float]) -> str:
    rows = ["| step (no sockets, no loop) | us per packet |", "| --- | --- |"]
    rows += [f"| {name} | {us:.2f} |" for name, us in result.items()]
    return "\n".join(rows)


def path_summary(result: dict[str, float]) -> str:
    """CPU per call (50 packets/s each way) on both paths and their ratio, from :func:`measure_paths`."""
    transcode = sum(v for k, v in result.items() if k.startswith("transcode"))
    passthrough = sum(v for k, v in result.items() if k.startswith("passthrough"))
    per_call = {name: us * 50 / 1e6 * 100 for name, us in (("transcode", transcode), ("passthrough", passthrough))}
    return (f"per call (50 pps each way): transcode {per_call['transcode']:.3f} % of a core, passthrough "
            f"{per_call['passthrough']:.3f} % of a core; passthrough costs {passthrough / transcode:.3f} x "
            f"the transcoding path's per-packet work ({transcode / passthrough:.1f} x less)")
