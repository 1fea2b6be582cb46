"""SRTP/SRTCP for the legacy leg with SDES keys (RFC 3711, keys from RFC 4568), over pylibsrtp.

:class:`SdesSrtp` holds two libsrtp sessions: the inbound one keyed with the peer's master
key||salt (its ``a=crypto``) and the outbound one keyed with ours (our answer's ``a=crypto``);
RFC 4568 section 6.1: each direction has its own master key.  It is sans-IO: bytes in,
bytes out.  Every inbound failure raises :class:`SrtpDropped` with a ``reason`` the leg
counts separately: ``auth`` (authentication tag or AEAD check failed: tampered, or keyed
differently), ``replay`` (RFC 3711 3.3.2: an index already seen or older than the replay
window), ``other`` (anything else libsrtp refused, e.g. too short to hold a tag).

Suites map to pylibsrtp profiles: AES_CM_128_HMAC_SHA1_80/_32 (RFC 4568 6.2) and
AEAD_AES_128_GCM / AEAD_AES_256_GCM (RFC 7714).  The SDES suite name is what the
application passes; this module does not import :mod:`sip` (the packages stay apart).
"""

from __future__ import annotations

from typing import Literal

import pylibsrtp
from pylibsrtp import Policy, Session

#: SDES suite name -> (pylibsrtp profile, master key||salt length in bytes).
SUITES: dict[str, tuple[int, int]] = {
    "AES_CM_128_HMAC_SHA1_80": (Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
    "AES_CM_128_HMAC_SHA1_32": (Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 30),
    "AEAD_AES_128_GCM": (Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
    "AEAD_AES_256_GCM": (Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 44),
}

DropReason = Literal["auth", "replay", "other"]


class SrtpError(ValueError):
    """The SRTP context cannot be built (unknown suite, wrong key length)."""


class SrtpDropped(Exception):
    """An inbound SRTP/SRTCP packet was refused; ``reason`` is auth, replay or other."""

    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: DropReason = reason
        self.detail = detail


def _drop_reason(message: str) -> DropReason:
    if "authentication" in message or "cipher failure" in message:  # AEAD tag check = cipher failure
        return "auth"
    if "replay" in message or "too old" in message:
        return "replay"
    return "other"


class SdesSrtp:
    """Protect what we send and unprotect what we receive, on one RTP session (and its RTCP).

    ``remote_key`` is the peer's key||salt, ``local_key`` ours; both for ``suite``.
    """

    def __init__(self, suite: str, *, remote_key: bytes, local_key: bytes) -> None:
        if suite not in SUITES:
            raise SrtpError(f"SRTP suite {suite} is not supported (supported: {', '.join(SUITES)})")
        profile, length = SUITES[suite]
        for name, key in (("remote", remote_key), ("local", local_key)):
            if len(key) != length:
                raise SrtpError(f"{suite} needs a {length}-byte {name} key||salt, got {len(key)}")
        self.suite = suite
        #: The keys as negotiated, so a re-offer can tell whether they changed (RFC 4568 7.1.4).
        self.remote_key = remote_key
        self.local_key = local_key
        self._rx = Session(Policy(key=remote_key, ssrc_type=Policy.SSRC_ANY_INBOUND,
                                  srtp_profile=profile))
        self._tx = Session(Policy(key=local_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                                  srtp_profile=profile))

    def protect(self, rtp: bytes) -> bytes:
        """One plain RTP packet -> SRTP (RFC 3711 3.3)."""
        return self._tx.protect(rtp)

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        """One plain compound RTCP packet -> SRTCP (RFC 3711 3.4)."""
        return self._tx.protect_rtcp(rtcp)

    def unprotect(self, srtp: bytes) -> bytes:
        """One SRTP packet -> plain RTP, or :class:`SrtpDropped`."""
        try:
            return self._rx.unprotect(srtp)
        except pylibsrtp.Error as exc:
            raise SrtpDropped(_drop_reason(str(exc)), str(exc)) from None

    def unprotect_rtcp(self, srtcp: bytes) -> bytes:
        """One SRTCP packet -> plain RTCP, or :class:`SrtpDropped`."""
        try:
            return self._rx.unprotect_rtcp(srtcp)
        except pylibsrtp.Error as exc:
            raise SrtpDropped(_drop_reason(str(exc)), str(exc)) from None
