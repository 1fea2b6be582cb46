"""Which addresses the WebRTC legs offer as ICE host candidates.

aioice (under aiortc) gathers a host candidate on every local address except
127.0.0.1, and aiortc adds Google's STUN server when no ICE servers are given.
A gateway must instead advertise exactly the addresses its operator configured
(Janus calls this ``ice_enforce_list``, rtpengine its interface setting): other
addresses may be unreachable from the core or leak the host's topology, and on a
loopback-only test machine the default gathers nothing usable at all.

aioice looks the addresses up through the module-level
``aioice.ice.get_host_addresses``; :func:`use_host_addresses` replaces that
lookup for the whole process. It is process-wide by nature (one gateway, one
configured media address set) and is called once at start-up.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import aioice.ice
import structlog
from aiortc import RTCConfiguration

log = structlog.get_logger(__name__)

_configured: tuple[str, ...] | None = None


def use_host_addresses(addresses: Sequence[str]) -> None:
    """Make every ICE agent in this process gather host candidates on ``addresses`` only.

    Raises ``ValueError`` for anything that is not a literal IPv4/IPv6 address
    (a host name here would be resolved differently by each peer).
    """
    global _configured
    if not addresses:
        raise ValueError("at least one ICE host address is required")
    parsed = tuple(str(ipaddress.ip_address(a)) for a in addresses)
    _configured = parsed

    def configured_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            a
            for a in parsed
            if (use_ipv4 and ipaddress.ip_address(a).version == 4)
            or (use_ipv6 and ipaddress.ip_address(a).version == 6)
        ]

    aioice.ice.get_host_addresses = configured_host_addresses
    log.info("ice.host_addresses.set", addresses=list(parsed))


def configured_host_addresses() -> tuple[str, ...] | None:
    """The addresses set by :func:`use_host_addresses`, or None if aioice's default is in force."""
    return _configured


def rtc_configuration() -> RTCConfiguration:
    """An RTCConfiguration with no STUN/TURN servers: host candidates from the configured set only."""
    return RTCConfiguration(iceServers=[])
