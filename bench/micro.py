"""Where a relayed packet's Python time goes: each step of the media path timed alone, no sockets.

``python -m bench micro`` times, per 172-byte RTP packet, the pieces the relays in
bench/relays.py are made of (SRTP protect, today's ``RtpPacket.parse`` and
``RtpInbound.receive``, the prototype's whole ``datagram_received`` with a no-op
send). What the socket benchmark measures on top of their sum is the event loop
and the kernel.
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


def table(result: dict[str, float]) -> str:
    rows = ["| step (no sockets, no loop) | us per packet |", "| --- | --- |"]
    rows += [f"| {name} | {us:.2f} |" for name, us in result.items()]
    return "\n".join(rows)
