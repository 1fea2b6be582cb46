"""A loopback relay that puts a lossy, jittery path between a SIP caller and the gateway.

Both ends must see only the relay, or they would find each other: the gateway sends to the
caller's SDP address before it latches, and pjsua switches its RTP target to whatever source
it hears from (pjmedia's NAT "probation"). So each side is given a relay address in the SDP:

- the gateway advertises ``media.public_address`` = ``GATEWAY_SIDE`` (127.0.0.2); the relay
  listens there on every port of the gateway's media range, so the caller's RTP to
  127.0.0.2:<G> reaches it;
- :class:`SipRewriter` forwards the caller's SIP to the gateway and rewrites ``c=IN IP4
  127.0.0.1`` in the offer to ``CALLER_SIDE`` (127.0.0.3, same length: Content-Length holds);
  the relay listens on 127.0.0.3:<P>, P+1 (the caller's fixed RTP port, ``rtp_port=``), so the
  gateway's RTP and RTCP to the caller reach it.

Caller -> gateway datagrams leave from 127.0.0.3:<P or P+1> (the SDP-named IP: the gateway's
latching accepts them); gateway -> caller ones leave from 127.0.0.2:<G or G+1>, which is what
the caller was told. Only caller -> gateway RTP is impaired (the gateway's jitter buffer is
under test); RTCP passes untouched both ways. Randomness is seeded so a run can be replayed.
Everything stays on the loopback interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support.gateway_process import GatewayProcess
    from tests.support.pjsua import PjsuaResult

GATEWAY_SIDE = "127.0.0.2"
CALLER_SIDE = "127.0.0.3"
HOST = "127.0.0.1"


@dataclass
class ImpairmentStats:
    received: int = 0
    forwarded: int = 0
    lost: int = 0
    #: Packets sent after one with a higher sequence number (reordered on the way).
    reordered: int = 0
    returned: int = 0
    rtcp: int = 0
    delays: list[float] = field(default_factory=list)


def _is_rtcp(data: bytes) -> bool:
    return len(data) >= 2 and 192 <= data[1] <= 223


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, relay: ImpairmentRelay, side: str, port: int) -> None:
        self.relay, self.side, self.port = relay, side, port

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.side == "gateway":
            self.relay._from_caller(self.port, data)
        else:
            self.relay._from_gateway(self.port, data, addr)


class ImpairmentRelay:
    """``await start()``, then ``close()``. ``loss`` is a probability, ``jitter`` the width in
    seconds of the uniform extra delay on top of ``base_delay``; ``caller_rtp_port`` the even
    RTP port the caller binds on 127.0.0.1."""

    def __init__(self, gateway_ports: range, caller_rtp_port: int, *, loss: float, jitter: float,
                 base_delay: float = 0.01, seed: int = 4) -> None:
        self.gateway_ports, self.caller_port = gateway_ports, caller_rtp_port
        self.loss, self.jitter, self.base_delay = loss, jitter, base_delay
        self.stats = ImpairmentStats()
        self._rng = random.Random(seed)
        self._gw_side: dict[int, asyncio.DatagramTransport] = {}
        self._caller_side: dict[int, asyncio.DatagramTransport] = {}
        self._gateway_port: dict[int, int] = {}  # caller port (P, P+1) -> gateway port (G, G+1)
        self._last_seq: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Every RTP packet the caller sent, as (loop time it reached the relay, datagram): lets a
        #: test find when something the caller said entered the path (end-to-end delay).
        self.caller_rtp: list[tuple[float, bytes]] = []

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        for port in self.gateway_ports:
            t, _ = await loop.create_datagram_endpoint(lambda p=port: _Socket(self, "gateway", p),
                                                       local_addr=(GATEWAY_SIDE, port))
            self._gw_side[port] = t  # type: ignore[assignment]
        for port in (self.caller_port, self.caller_port + 1):
            t, _ = await loop.create_datagram_endpoint(lambda p=port: _Socket(self, "caller", p),
                                                       local_addr=(CALLER_SIDE, port))
            self._caller_side[port] = t  # type: ignore[assignment]

    def _from_caller(self, gw_port: int, data: bytes) -> None:
        """The caller sent to 127.0.0.2:gw_port: pass it on from our 127.0.0.3 side."""
        assert self._loop is not None
        rtcp = _is_rtcp(data) or gw_port % 2 == 1
        caller_port = self.caller_port + (gw_port % 2)
        self._gateway_port[caller_port] = gw_port
        if rtcp:
            self.stats.rtcp += 1
            self._send(caller_port, gw_port, data)
            return
        self.stats.received += 1
        self.caller_rtp.append((self._loop.time(), data))
        if self._rng.random() < self.loss:
            self.stats.lost += 1
            return
        delay = self.base_delay + self._rng.uniform(0, self.jitter)
        self.stats.delays.append(delay)
        self._loop.call_later(delay, self._send_rtp, caller_port, gw_port, data)

    def _send_rtp(self, caller_port: int, gw_port: int, data: bytes) -> None:
        if len(data) >= 4:
            (seq,) = struct.unpack_from("!H", data, 2)
            if self._last_seq is not None and seq != self._last_seq and ((self._last_seq - seq) & 0xFFFF) < 0x8000:
                self.stats.reordered += 1
            else:
                self._last_seq = seq
        if self._send(caller_port, gw_port, data):
            self.stats.forwarded += 1

    def _send(self, caller_port: int, gw_port: int, data: bytes) -> bool:
        t = self._caller_side.get(caller_port)
        if t is None or t.is_closing():
            return False
        t.sendto(data, (HOST, gw_port))
        return True

    def _from_gateway(self, caller_port: int, data: bytes, addr: Any) -> None:
        """The gateway sent to 127.0.0.3:caller_port from its port: pass it on from 127.0.0.2:<that port>."""
        front = self._gw_side.get(addr[1])
        if front is not None and not front.is_closing():
            front.sendto(data, (HOST, caller_port))
            self.stats.returned += 1

    def close(self) -> None:
        for t in (*self._gw_side.values(), *self._caller_side.values()):
            t.close()


class _SipProtocol(asyncio.DatagramProtocol):
    def __init__(self, rewriter: SipRewriter) -> None:
        self.rewriter = rewriter

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.rewriter._received(data, addr)


class SipRewriter:
    """A UDP SIP forwarder on 127.0.0.1:<port> for one caller: its messages go to the gateway
    with the SDP connection address moved to ``CALLER_SIDE``; the gateway's go back to it."""

    def __init__(self, gateway_sip_port: int) -> None:
        self.gateway = (HOST, gateway_sip_port)
        self.caller: Any = None
        self.rewritten = 0
        self._t: asyncio.DatagramTransport | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        t, _ = await loop.create_datagram_endpoint(lambda: _SipProtocol(self), local_addr=(HOST, 0))
        self._t = t  # type: ignore[assignment]
        return int(t.get_extra_info("sockname")[1])

    def _received(self, data: bytes, addr: Any) -> None:
        assert self._t is not None
        if (addr[0], addr[1]) == self.gateway:
            if self.caller is not None:
                self._t.sendto(data, self.caller)
            return
        self.caller = addr
        old, new = f"c=IN IP4 {HOST}".encode(), f"c=IN IP4 {CALLER_SIDE}".encode()
        if old in data:
            data = data.replace(old, new)
            self.rewritten += 1
        self._t.sendto(data, self.gateway)

    def close(self) -> None:
        if self._t is not None:
            self._t.close()


@dataclass
class RelayedCall:
    """A running pjsua2 call through a relay: ``result`` resolves when the call ends;
    ``answered`` is the gateway's ``call.answered`` event."""

    result: asyncio.Future[PjsuaResult]
    answered: dict[str, Any]


@contextlib.asynccontextmanager
async def pjsua_call_through(relay: ImpairmentRelay, gw: GatewayProcess, meeting: str, wav: Path, *,
                             seconds: float) -> AsyncIterator[RelayedCall]:
    """A pjsua2 caller (PCMU, looping ``wav``) into ``meeting``, its RTP through ``relay`` and its
    SIP through a :class:`SipRewriter`; entered once the gateway answered. The relay and the
    rewriter close on exit; the caller hangs up by itself after ``seconds``."""
    from tests.support.pjsua import run_pjsua_call

    loop = asyncio.get_running_loop()
    await relay.start()
    sip = SipRewriter(gw.sip_port)
    sip_port = await sip.start()
    try:
        result = loop.run_in_executor(None, lambda: run_pjsua_call(
            f"sip:{meeting}@{HOST}:{sip_port}", codec="PCMU", play_wav=wav, rtp_port=relay.caller_port,
            seconds=seconds, timeout=seconds + 30))
        answered = await loop.run_in_executor(None, lambda: gw.wait_for_event(
            "call.answered", timeout=30, meeting=meeting))
        yield RelayedCall(result, answered)
    finally:
        relay.close()
        sip.close()
    assert sip.rewritten >= 1, "the caller's offer never passed the SIP rewriter"
