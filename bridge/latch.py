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
  port of the latched IP is accepted; before that the SDP's IP, any port (or, with SRTP, any
  source: it must authenticate), since peers report before our first packet reaches them.
  RTCP never latches.

Until something latches we send to the SDP's address.

Re-offers (RFC 3264 8.3.1, RFC 4568 7.1.4) :meth:`SourceLatch.retarget` the latch, and the
next accepted packet latches again.  Which packets may take that new latch is the one subtle
rule here: a peer that moves its media (a re-INVITE naming a new port) keeps sending from the
old port until its own media stack switches, so a late packet from the old port arrives
*after* the re-target and, under the any-port rule, would take the latch and keep our stream
going to a port the peer has closed (rtpproxy issue #103 is this bug; rtpengine's
``strict-source`` exists for it). So, for **plain RTP** with a known SDP port:

* When the last latch proved the peer *symmetric* -- it sent from exactly the address and
  port its SDP named, i.e. no NAT rewrote it -- a re-target that moves the address or port
  is **strict**: until a packet latches, only the new SDP address *and port* are accepted.
  Packets from the old port (or any other) are refused and the leg counts them as
  ``wrong_source``.  The first packet from the new address:port latches and ends strictness.
  The knowledge "this peer is symmetric" survives re-targets until a latch says otherwise, so
  two re-INVITEs in quick succession stay strict.
* When the last latch came from another port than the SDP named (behind a NAT), or nothing
  latched yet (no evidence either way), or the SDP port is unknown, the re-target keeps the
  any-port-from-the-SDP-IP rule: a NAT picks the new external port and the SDP cannot name it.
* With SRTP (``any_source``) strictness never applies: authentication decides, and a rekeying
  re-offer (RFC 4568 7.1.4) makes the old stream fail it anyway.  A re-target that changes
  neither the address nor the port (new keys, hold) does not by itself make the latch strict
  (it keeps a strictness still pending from an earlier move).

The trade-off is deliberate: a peer that proved its SDP truthful is trusted to stay truthful;
one that moves behind a NAT in mid-call after a symmetric start gets no media in until its
next re-offer (very rare for room systems, which do not roam).

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
    ``remote_port`` is the SDP's port: without it the latch cannot tell a symmetric peer from
    one behind a NAT, and re-targets are never strict.
    """

    def __init__(self, remote_address: str, *, any_source: bool, leg: str,
                 remote_port: int | None = None) -> None:
        self.expected_ip = normalise_ip(remote_address)
        self.expected_port = remote_port
        self.any_source = any_source
        self.leg = leg
        #: The peer's address and port once a packet latched, else None.
        self.latched: Address | None = None
        #: What the last latch proved: True when it came from exactly the SDP's address and
        #: port, False from elsewhere, None before any latch (or without a known SDP port).
        self.symmetric: bool | None = None
        #: After a re-target of a symmetric plain-RTP peer: only the SDP address:port may latch.
        self.strict = False

    def _is_expected(self, addr: Address) -> bool:
        return same_ip(addr[0], self.expected_ip) and addr[1] == self.expected_port

    def accepts(self, addr: Address) -> bool:
        """Whether an RTP datagram from ``addr`` may be looked at (it still has to parse and,
        with SRTP, authenticate before it may :meth:`latch`)."""
        if self.latched is not None:
            return bool(addr[0] == self.latched[0] and addr[1] == self.latched[1])
        if self.any_source:
            return True
        if self.strict:
            return self._is_expected(addr)
        return same_ip(addr[0], self.expected_ip)

    def accepts_rtcp(self, addr: Address) -> bool:
        """Whether an RTCP datagram from ``addr`` (the RTCP port) may be looked at: once latched,
        any port of the latched IP; before that, any source with ``any_source``, else any port
        of the SDP's IP (RTCP never latches, so strictness does not concern it)."""
        if self.latched is not None:
            return bool(addr[0] == self.latched[0])
        return self.any_source or same_ip(addr[0], self.expected_ip)

    def latch(self, addr: Address, *, authenticated: bool) -> None:
        """The first accepted packet came from ``addr``: from now on only that source counts."""
        if self.latched is not None:
            return
        self.latched = (addr[0], addr[1])
        if self.expected_port is not None:
            self.symmetric = self._is_expected(addr)
        log.info("bridge.rtp.latched", leg=self.leg, authenticated=authenticated,
                 sdp_ip_matches=same_ip(addr[0], self.expected_ip),
                 sdp_port_matches=self.symmetric, strict=self.strict)
        self.strict = False

    def destination(self, sdp_remote: Address) -> Address:
        """Where our RTP goes: the latched source (symmetric RTP, RFC 4961 3), else the SDP's."""
        latched = self.latched
        return (latched[0], latched[1]) if latched is not None else sdp_remote

    def retarget(self, remote_address: str | None = None, remote_port: int | None = None, *,
                 any_source: bool | None = None) -> None:
        """A re-offer moved the peer or changed its keys: forget the latch and take the new SDP
        address / port / SRTP rule when given; the next accepted packet latches again -- only
        from exactly the new address:port when the peer proved symmetric (module docstring)."""
        ip = normalise_ip(remote_address) if remote_address is not None else self.expected_ip
        port = remote_port if remote_port is not None else self.expected_port
        moved = (ip, port) != (self.expected_ip, self.expected_port)
        self.expected_ip, self.expected_port = ip, port
        if any_source is not None:
            self.any_source = any_source
        self.latched = None
        # Strict once a symmetric plain-RTP peer moved; pending strictness is kept; SRTP never is.
        self.strict = not self.any_source and (self.strict or (moved and port is not None
                                                               and self.symmetric is True))
        log.debug("bridge.rtp.retargeted", leg=self.leg, moved=moved, strict=self.strict)
