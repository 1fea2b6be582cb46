"""Media ports from the configured range: an even RTP port, with RTP+1 held for RTCP.

RFC 3550 section 11 wants RTP on an even port and RTCP on the next odd one; room
systems that ignore ``a=rtcp`` send RTCP there, so we bind it as well (and keep
it bound for the call) rather than let another call or process take it.

The allocator binds the sockets itself instead of handing out numbers: a port
number that is free in our table can still be taken by another process, and
binding is the only test that means anything. Released ports go to the back of
the rotation, so a just-closed port is reused as late as possible and a
late-arriving packet of the old call cannot reach a new one.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("bridge.ports")

#: Binds a UDP socket on (address, port); raises OSError if it cannot.
Binder = Callable[[str, int], socket.socket]


class NoFreePort(RuntimeError):
    """Every even port of the range is in use (by us or by another process)."""


def bind_udp(address: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound on (address, port), IPv4 or IPv6 by the address's form."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock


def parse_port_range(spec: str) -> tuple[int, int]:
    """``"20000-29999"`` -> (20000, 29999); ValueError with the reason otherwise."""
    try:
        low_s, high_s = spec.split("-")
        low, high = int(low_s), int(high_s)
    except ValueError:
        raise ValueError(f"port range {spec!r} is not of the form LOW-HIGH") from None
    return low, high


@dataclass
class PortLease:
    """One call's RTP socket (even port) and its RTCP neighbour; ``release()`` gives both back."""

    address: str
    rtp_port: int
    rtp_socket: socket.socket
    rtcp_socket: socket.socket
    _allocator: PortAllocator | None = field(default=None, repr=False)
    _attaching: bool = field(default=False, repr=False)
    _release_pending: bool = field(default=False, repr=False)
    _released: bool = field(default=False, repr=False)

    @property
    def rtcp_port(self) -> int:
        return self.rtp_port + 1

    def set_receive_buffer(self, nbytes: int) -> int:
        """Ask for an RTP receive buffer of ``nbytes`` (the kernel caps it at
        ``net.core.rmem_max``); returns what the kernel granted (Linux reports twice the
        request, its bookkeeping included)."""
        self.rtp_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, nbytes)
        return int(self.rtp_socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    async def attach(
        self, rtp_protocol: Callable[[], asyncio.DatagramProtocol],
        rtcp_protocol: Callable[[], asyncio.DatagramProtocol],
    ) -> tuple[asyncio.DatagramTransport, asyncio.DatagramTransport] | None:
        """Put both sockets on the running loop; None when the lease was released meanwhile.

        Why the lease does this: the loop registers a socket a moment *after*
        ``create_datagram_endpoint`` returns control, and a call torn down in that moment
        (the caller hung up while its leg started) used to close the socket first. The loop
        then registered a closed descriptor (EBADF) or, once the number was reused, another
        connection's (asyncio's "File descriptor N is used by transport", seen as failed joins
        under load). A :meth:`release` during the attach is therefore held back until both
        transports exist; they are then closed with the sockets.
        """
        if self._released:
            return None
        loop = asyncio.get_running_loop()
        made: list[asyncio.DatagramTransport] = []
        self._attaching = True
        try:
            for sock, protocol in ((self.rtp_socket, rtp_protocol), (self.rtcp_socket, rtcp_protocol)):
                transport, _ = await loop.create_datagram_endpoint(protocol, sock=sock)
                made.append(transport)  # type: ignore[arg-type]
        except BaseException:
            for transport in made:
                transport.close()
            raise
        finally:
            self._attaching = False
            if self._release_pending:
                for transport in made:
                    transport.close()
                self.release()
        if self._released:
            log.debug("bridge.ports.released_while_attaching", port=self.rtp_port)
            return None
        return made[0], made[1]

    def release(self) -> None:
        """Close both sockets and return the pair to the allocator. Idempotent; during an
        :meth:`attach` it takes effect when the attach ends."""
        if self._released:
            return
        if self._attaching:
            self._release_pending = True
            return
        self._released = True
        for s in (self.rtp_socket, self.rtcp_socket):
            try:
                s.close()
            except OSError:
                pass
        allocator, self._allocator = self._allocator, None
        if allocator is not None:
            allocator._returned(self.rtp_port)


class PortAllocator:
    """Hands out (even RTP, RTP+1) port pairs from [low, high] on one media address."""

    def __init__(self, low: int, high: int, *, address: str, bind: Binder = bind_udp) -> None:
        first = low + (low % 2)
        if not (0 < low <= high <= 65535) or first + 1 > high:
            raise ValueError(f"media port range {low}-{high} holds no even/odd port pair")
        self.address = address
        self.low, self.high = low, high
        self._bind = bind
        self._candidates = list(range(first, high, 2))  # rtp+1 <= high for each
        self._next = 0
        self._in_use: set[int] = set()

    @classmethod
    def from_range(cls, spec: str, *, address: str, bind: Binder = bind_udp) -> PortAllocator:
        low, high = parse_port_range(spec)
        return cls(low, high, address=address, bind=bind)

    @property
    def capacity(self) -> int:
        return len(self._candidates)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def allocate(self) -> PortLease:
        """Bind the next free pair; :class:`NoFreePort` after one full turn of the range."""
        n = len(self._candidates)
        for _ in range(n):
            port = self._candidates[self._next]
            self._next = (self._next + 1) % n
            if port in self._in_use:
                continue
            try:
                rtp = self._bind(self.address, port)
            except OSError as exc:
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
                continue
            try:
                rtcp = self._bind(self.address, port + 1)
            except OSError as exc:
                rtp.close()
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
                continue
            self._in_use.add(port)
            return PortLease(self.address, port, rtp, rtcp, self)
        log.warning("bridge.ports.exhausted", low=self.low, high=self.high, in_use=len(self._in_use))
        raise NoFreePort(f"no free RTP/RTCP port pair in {self.low}-{self.high} on {self.address}")

    def _returned(self, port: int) -> None:
        self._in_use.discard(port)
