"""The Python systems under test: RTP in, SRTP (AES_CM_128_HMAC_SHA1_80) out, one process.

Run as ``python -m bench.relays --path PATH --loop LOOP --streams N --sink HOST:PORT``.
It binds one UDP port per stream on 127.0.0.1 (as a gateway does per call), prints
one JSON line ``{"ports": [...], "keys": [hex, ...], "ssrc_xor": int}`` (the keys
are the SRTP master key+salt of each stream's outbound session, as an SDES answer
would carry them), then relays until SIGTERM.

Paths:

``floor``
    The floor of the language: ``datagram_received -> session.protect -> sendto``.
``bridge``
    Today's gateway receive path: ``bridge.legacy_leg.RtpInbound`` (source latching,
    ``RtpPacket.parse``, payload-type and sequence checks, counters) with a passthrough
    "decoder" instead of G.711 decode, then header rewrite, protect, send (the adapter that
    measured the receive path before ``bridge.fastpath`` existed).
``bridge-fastpath``
    The shipped fast path (``bridge.fastpath``, ``media.passthrough: auto``) toward the core:
    ``RtpInbound`` then ``LegacyToCore``, protect and send as aiortc's ``_send_rtp`` does.
``fastpath``
    The lower bound for a Python passthrough (here in bench/ only): the same checks inline
    on the raw bytes (no dataclass, no payload
    copy), SSRC/sequence/timestamp rewrite with ``struct.pack_into``, protect, send.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import struct
from collections.abc import Callable
from typing import Any, cast

from pylibsrtp import Policy, Session

Address = tuple[Any, ...]
#: The rewriting paths give each outbound stream a new SSRC (in XOR this), as a gateway leg does.
SSRC_XOR = 0x5A5A5A5A
_SEQ_TS = struct.Struct("!HI")
_REWRITE = struct.Struct("!HII")


def outbound_session(key: bytes) -> Session:
    """One stream's SRTP sender (AES_CM_128_HMAC_SHA1_80, pylibsrtp's default profile)."""
    return Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))


class FloorRelay(asyncio.DatagramProtocol):
    """The whole relay of the language floor: protect and send, nothing else."""

    def __init__(self, session: Session, sink: Address) -> None:
        self.protect = session.protect
        self.sink = sink
        self.sendto: Callable[[bytes, Address], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sendto = transport.sendto  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.sendto(self.protect(data), self.sink)  # type: ignore[misc]


class FastPathRelay(asyncio.DatagramProtocol):
    """Prototype passthrough leg: latch, check, rewrite the header, protect, send."""

    def __init__(self, session: Session, sink: Address, *, payload_type: int = 0,
                 out_ssrc_xor: int = SSRC_XOR, seq_offset: int = 1000, ts_offset: int = 123456) -> None:
        self.protect = session.protect
        self.sink = sink
        self.payload_type = payload_type
        self.ssrc_xor = out_ssrc_xor
        self.seq_offset = seq_offset
        self.ts_offset = ts_offset
        self.latched: Address | None = None
        self.last_seq = -1
        self.out_ssrc = 0
        self.packets = 0
        self.dropped = 0
        self.sendto: Callable[[bytes, Address], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sendto = transport.sendto  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if addr != self.latched:
            if self.latched is not None or addr[0] != "127.0.0.1":
                self.dropped += 1
                return
            self.latched = addr
            self.out_ssrc = int.from_bytes(data[8:12], "big") ^ self.ssrc_xor
        if len(data) < 12 or data[0] & 0xC0 != 0x80 or data[1] & 0x7F != self.payload_type:
            self.dropped += 1  # RTCP, telephone-event and junk leave the fast path
            return
        seq, ts = _SEQ_TS.unpack_from(data, 2)
        if self.last_seq >= 0 and ((seq - self.last_seq - 1) & 0xFFFF) >= 0x7FFF:
            self.dropped += 1  # duplicate or reordered behind a newer one
            return
        self.last_seq = seq
        buf = bytearray(data)
        _REWRITE.pack_into(buf, 2, (seq + self.seq_offset) & 0xFFFF, (ts + self.ts_offset) & 0xFFFFFFFF,
                           self.out_ssrc)
        self.packets += 1
        self.sendto(self.protect(bytes(buf)), self.sink)  # type: ignore[misc]


class _PassthroughDecoder:
    """Stands in for the G.711 decoder: the payload goes through untouched."""

    def decode(self, payload: bytes) -> bytes:
        return payload


class BridgeRelay(asyncio.DatagramProtocol):
    """Today's ``bridge.legacy_leg.RtpInbound`` receive path, without decode, feeding SRTP."""

    def __init__(self, session: Session, sink: Address) -> None:
        from bridge.legacy_leg import LegCounters, RtpInbound

        self.inbound = RtpInbound(remote_address="127.0.0.1", payload_type=0,
                                  decoder=_PassthroughDecoder(),  # type: ignore[arg-type]
                                  counters=LegCounters())
        self.protect = session.protect
        self.sink = sink
        self.sendto: Callable[[bytes, Address], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sendto = transport.sendto  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if self.inbound.receive(data, addr) is None:
            return
        seq, ts = _SEQ_TS.unpack_from(data, 2)
        buf = bytearray(data)
        _REWRITE.pack_into(buf, 2, (seq + 1000) & 0xFFFF, (ts + 123456) & 0xFFFFFFFF,
                           int.from_bytes(data[8:12], "big") ^ SSRC_XOR)
        self.sendto(self.protect(bytes(buf)), self.sink)  # type: ignore[misc]


class _SrtpSendingTransport:
    """Stands in for aiortc's ``RTCDtlsTransport`` under the fast path's WHIP sender: its
    ``_send_rtp`` coroutine protects and sends, as aiortc's does with its DTLS-keyed session."""

    def __init__(self, protect: Callable[[bytes], bytes], sink: Address) -> None:
        self.protect = protect
        self.sink = sink
        self.sendto: Callable[[bytes, Address], None] | None = None

    async def _send_rtp(self, data: bytes) -> None:
        self.sendto(self.protect(data), self.sink)  # type: ignore[misc]


class _Sender:
    """Stands in for aiortc's ``RTCRtpSender``: its SSRC (set at the first packet: the sink
    expects ``in ^ SSRC_XOR``, as for the other rewriting paths) and its DTLS transport."""

    def __init__(self, transport: _SrtpSendingTransport) -> None:
        self._ssrc: int | None = None
        self.transport = transport


class BridgeFastPathRelay(asyncio.DatagramProtocol):
    """The shipped fast path toward the core (``bridge.fastpath``, ``media.passthrough: auto``):
    ``RtpInbound`` accepts the packet and hands it to :class:`bridge.fastpath.LegacyToCore`,
    which rewrites it and schedules the sender transport's ``_send_rtp`` (protect + send)."""

    def __init__(self, session: Session, sink: Address) -> None:
        from bridge.fastpath import LegacyToCore
        from bridge.legacy_leg import LegCounters, RtpInbound

        self._transport = _SrtpSendingTransport(session.protect, sink)
        self.inbound = RtpInbound(remote_address="127.0.0.1", payload_type=0,
                                  decoder=_PassthroughDecoder(),  # type: ignore[arg-type]
                                  counters=LegCounters())
        self._sender = _Sender(self._transport)
        self.inbound.on_passthrough = LegacyToCore(self._sender, payload_type=0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport.sendto = transport.sendto  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if self._sender._ssrc is None and len(data) >= 12:
            self._sender._ssrc = int.from_bytes(data[8:12], "big") ^ SSRC_XOR
        self.inbound.receive(data, addr)


PATHS: dict[str, Callable[[Session, Address], asyncio.DatagramProtocol]] = {
    "floor": FloorRelay, "fastpath": FastPathRelay, "bridge": BridgeRelay,
    "bridge-fastpath": BridgeFastPathRelay,
}


def _bind_ports(n: int) -> list[Any]:
    import socket

    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        socks.append(s)
    return socks


def _announce(socks: list[Any], keys: list[bytes], ssrc_xor: int) -> None:
    print(json.dumps({"ports": [s.getsockname()[1] for s in socks], "keys": [k.hex() for k in keys],
                      "ssrc_xor": ssrc_xor, "pid": os.getpid()}), flush=True)


def run_asyncio(path: str, loop_kind: str, n: int, sink: Address) -> None:
    """Relay on asyncio's default loop or uvloop until SIGTERM."""
    if loop_kind == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    protocol = PATHS[path]
    socks = _bind_ports(n)
    keys = [os.urandom(30) for _ in range(n)]

    async def setup() -> None:
        for sock, key in zip(socks, keys, strict=True):
            session = outbound_session(key)
            def factory(s: Session = session) -> asyncio.DatagramProtocol:
                return protocol(s, sink)

            await loop.create_datagram_endpoint(factory, sock=sock)

    loop.run_until_complete(setup())
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    _announce(socks, keys, 0 if path == "floor" else SSRC_XOR)
    loop.run_forever()


def run_twisted(path: str, n: int, sink: Address) -> None:
    """The floor relay on Twisted's epoll reactor until SIGTERM."""
    if path != "floor":
        raise SystemExit("only the floor relay runs on Twisted here")
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor as installed
    from twisted.internet.protocol import DatagramProtocol

    reactor: Any = installed

    class TwistedFloorRelay(DatagramProtocol):
        def __init__(self, session: Session) -> None:
            self.protect = session.protect

        def datagramReceived(self, datagram: bytes, addr: Address) -> None:
            cast(Any, self.transport).write(self.protect(datagram), sink)

    keys = [os.urandom(30) for _ in range(n)]
    ports = [reactor.listenUDP(0, TwistedFloorRelay(outbound_session(k)), interface="127.0.0.1")
             for k in keys]
    print(json.dumps({"ports": [p.getHost().port for p in ports], "keys": [k.hex() for k in keys],
                      "ssrc_xor": 0, "pid": os.getpid()}), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
    reactor.run(installSignalHandlers=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.relays", description=__doc__.split("\n")[0])
    parser.add_argument("--path", choices=sorted(PATHS), default="floor")
    parser.add_argument("--loop", choices=("asyncio", "uvloop", "twisted"), default="asyncio")
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--sink", required=True, help="HOST:PORT the SRTP goes to")
    args = parser.parse_args(argv)
    host, port = args.sink.rsplit(":", 1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.streams + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), max(hard, want)), max(hard, want)))
    sink = (host, int(port))
    if args.loop == "twisted":
        run_twisted(args.path, args.streams, sink)
    else:
        run_asyncio(args.path, args.loop, args.streams, sink)


if __name__ == "__main__":
    main()
