"""Source latching, the one rule every legacy media leg (audio and video) receives by.

A legacy peer's media has no DTLS handshake to bind it to the call, so the first packet we
accept decides where the stream comes from and where ours goes back (symmetric RTP, RFC 4961
3), and everything from anywhere else is dropped (no RTP bleed, no injection):

* **Plain RTP** proves nothing about its sender, so before latching only packets from the IP
  address the SDP named are accepted (any port: NATs rewrite ports); the first one the leg
  accepts latches that exact address and port.
* **SDES-SRTP**: only a packet that authenticates under the offer's keys can be accepted at
  all (RFC 3711 3.3), so the first *authenticated* packet latches wherever it comes from --
  that is what lets a caller behind a NAT that rewrites its address in work.
* **RTCP** (RTP port + 1, RFC 3550 11) comes from the peer's RTCP port, so once latched any
  port of the latched IP is accepted; before that the same rule as RTP (peers report before
  our first packet reaches them). RTCP never latches.

Until something latches we send to the SDP's address. A re-offer that moves the peer or
changes its keys (RFC 3264 8.3.1, RFC 4568 7.1.4) :meth:`SourceLatch.retarget`-s: the next
accepted packet latches again.

The latch only decides; the leg counts refusals (``dropped_wrong_source`` in its counters,
where each dropped packet is counted once under one reason) and calls :meth:`SourceLatch.latch`
once the packet was accepted (parsed, right payload type, authenticated).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import structlog

log = structlog.get_logger("bridge.latch")

#: ``(host, port)`` as asyncio gives it (IPv6 adds flowinfo and scope id).
Address = tuple[Any, ...]


def normalise_ip(address: str) -> str:
    """The canonical text of an IP address (``::ffff:7f00:1`` and ``0:0::1`` compare right).
    Raises ValueError for anything that is not an IP address."""
    return str(ipaddress.ip_address(address))


def same_ip(address: str, expected: str) -> bool:
    """Whether ``address`` is the (already normalised) ``expected`` IP; False for garbage."""
    try:
        return normalise_ip(address) == expected
    except ValueError:
        return False


class SourceLatch:
    """Where one leg's peer sends from (see the module docstring); ``leg`` labels the log event.

    ``any_source`` is normally "the leg has SRTP" (acceptance then means authentication);
    an audio leg may set it for plain RTP too (``latch_any_source``, behind a known NAT).
    """

    def __init__(self, remote_address: str, *, any_source: bool, leg: str) -> None:
        self.expected_ip = normalise_ip(remote_address)
        self.any_source = any_source
        self.leg = leg
        #: The peer's address and port once a packet latched, else None.
        self.latched: Address | None = None

    def accepts(self, addr: Address) -> bool:
        """Whether an RTP datagram from ``addr`` may be looked at (it still has to parse and,
        with SRTP, authenticate before it may :meth:`latch`)."""
        if self.latched is not None:
            return bool(addr[0] == self.latched[0] and addr[1] == self.latched[1])
        return self.any_source or same_ip(addr[0], self.expected_ip)

    def accepts_rtcp(self, addr: Address) -> bool:
        """Whether an RTCP datagram from ``addr`` (the RTCP port) may be looked at: once latched,
        any port of the latched IP; before that, :meth:`accepts`."""
        if self.latched is not None:
            return bool(addr[0] == self.latched[0])
        return self.accepts(addr)

    def latch(self, addr: Address, *, authenticated: bool) -> None:
        """The first accepted packet came from ``addr``: from now on only that source counts."""
        if self.latched is not None:
            return
        self.latched = (addr[0], addr[1])
        log.info("bridge.rtp.latched", leg=self.leg, authenticated=authenticated,
                 sdp_ip_matches=same_ip(addr[0], self.expected_ip))

    def destination(self, sdp_remote: Address) -> Address:
        """Where our RTP goes: the latched source (symmetric RTP, RFC 4961 3), else the SDP's."""
        latched = self.latched
        return (latched[0], latched[1]) if latched is not None else sdp_remote

    def retarget(self, remote_address: str | None = None, *, any_source: bool | None = None) -> None:
        """A re-offer moved the peer or changed its keys: forget the latch (and take the new
        SDP address / SRTP rule when given); the next accepted packet latches again."""
        if remote_address is not None:
            self.expected_ip = normalise_ip(remote_address)
        if any_source is not None:
            self.any_source = any_source
        self.latched = None
