"""Delayed offer (RFC 3261 13.2.1): the gateway's SDP offer in the 200 OK, the caller's answer in the ACK.

The normal path (:mod:`gateway.calls`) knows the codec and keys before it answers; here the
200 OK must name a port before anything is agreed, so the port pair is bound first
(:meth:`DelayedOfferNegotiation.offer`) and the legacy leg is built on it only when the
ACK's answer arrives (:meth:`DelayedOfferNegotiation.answered`).  An ACK without a usable
answer makes the SIP core send BYE with ``Reason: SIP;cause=488`` naming why
(``sip.ack.answer_refused``); the controller then only sees the call end.

A re-INVITE without SDP (RFC 3261 14.2; CUCM on transfer and resume) is the same exchange
inside a running call: :class:`ReofferWithoutSdp` offers our current SDP again and applies
the ACK's answer to the running leg with :func:`retarget_leg` (what a re-INVITE *with* SDP
also goes through in :mod:`gateway.calls`).

Admission: a delayed offer has no offer to read ``media_security`` from, so the policy decides
it (:func:`delayed_offer_security`): we offer SDES-SRTP under ``prefer-srtp`` and
``require-srtp`` (so ``sdes``), plain RTP otherwise (``plain``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from bridge.codecs import codec_by_name
from bridge.legacy_leg import LegacyAudioLeg
from bridge.ports import NoFreePort, PortAllocator, PortLease
from bridge.session import allocate_legacy_leg
from bridge.srtp import SdesSrtp
from gateway.policy import Policy
from sip.calls import InboundCall
from sip.delayed_offer import (
    LocalOffer,
    build_offer,
    choose_answer,
    reoffer_current,
    srtp_for_policy,
)
from sip.offer_answer import AudioChoice, MediaSecurity, OfferRejected
from sip.sdp import SessionDescription

log = structlog.get_logger("gateway.delayed_offer")

#: How long to wait for the ACK after the 2xx: the SIP core gives up at 64*T1 = 32 s
#: (RFC 3261 13.3.1.4) and ends the call itself; this only bounds the waiting task.
ACK_WAIT = 40.0
#: How often the wait looks whether the call ended meanwhile (seconds).
POLL = 0.1


def delayed_offer_security(policy: Policy, meeting: str) -> MediaSecurity:
    """``media_security`` for :func:`gateway.admission.decide` on a delayed offer: what we will
    offer, i.e. ``sdes`` when the meeting's ``legacy_media`` makes us offer SDES-SRTP."""
    mp = policy.for_meeting(meeting)
    if mp is not None and srtp_for_policy(mp.legacy_media) != "off":
        return "sdes"
    return "plain"


class _ReservedPort:
    """An allocator of exactly one pair, already bound: lets :func:`allocate_legacy_leg` build
    the leg on the port our offer named (no second bind, no duplicated SRTP set-up)."""

    def __init__(self, lease: PortLease) -> None:
        self.address = lease.address
        self._lease: PortLease | None = lease

    def allocate(self) -> PortLease:
        lease, self._lease = self._lease, None
        if lease is None:
            raise NoFreePort("the reserved port pair was already used")
        return lease


class DelayedOfferNegotiation:
    """One delayed-offer call's offer/answer: bind the port, offer, read the ACK's answer."""

    def __init__(self, call: InboundCall, *, ports: PortAllocator, media_address: str,
                 codecs: tuple[str, ...], legacy_media: str) -> None:
        self._call = call
        self._ports = ports
        self._media_address = media_address
        self._codecs = codecs
        self._legacy_media = legacy_media
        self._lease: PortLease | None = None
        self._offer: LocalOffer | None = None
        self._done: asyncio.Future[tuple[AudioChoice, LegacyAudioLeg]] = \
            asyncio.get_running_loop().create_future()

    @property
    def local_port(self) -> int | None:
        """The RTP port our offer names (None before :meth:`offer`)."""
        return self._lease.rtp_port if self._lease is not None else None

    def offer(self) -> str:
        """Bind the port pair and build our offer; the call's ACK answer then goes to us.
        Raises ``NoFreePort``/``OSError`` (answer 503) or ``ValueError`` (no codec to offer)."""
        self._lease = self._ports.allocate()
        try:
            self._offer = build_offer(self._media_address, self._lease.rtp_port, codecs=self._codecs,
                                      srtp=srtp_for_policy(self._legacy_media))
        except ValueError:
            self.release()
            raise
        self._call.on_answer = self._on_answer
        return str(self._offer)

    def _on_answer(self, call: InboundCall, answer: SessionDescription) -> str | None:
        """The ACK's answer (called by the SIP core): build the leg, or say why we cannot."""
        if self._offer is None or self._lease is None or self._done.done():
            return "no offer of ours is waiting for an answer"
        try:
            choice = choose_answer(self._offer, answer)
        except OfferRejected as exc:
            return exc.reason
        try:
            legacy = allocate_legacy_leg(
                media_address=self._lease.address, port_allocator=_ReservedPort(self._lease),  # type: ignore[arg-type]
                encoding=choice.encoding, payload_type=choice.payload_type,
                remote_address=choice.remote_address, remote_port=choice.remote_port,
                telephone_event_pt=choice.telephone_event_pt, srtp_suite=choice.srtp_suite,
                srtp_remote_key=choice.srtp_remote_key, srtp_local_key=choice.srtp_local_key)
        except (NoFreePort, ValueError, KeyError) as exc:
            return f"the answer could not be applied: {exc}"
        self._lease = None  # the leg owns the port pair now
        self._done.set_result((choice, legacy))
        return None

    async def answered(self, timeout: float = ACK_WAIT) -> tuple[AudioChoice, LegacyAudioLeg] | None:
        """The chosen audio and its (not yet started) leg once the ACK's answer was taken;
        None when the call ended first (ACK timeout, unusable answer, BYE) -- checked every
        :data:`POLL` seconds, so a finished call frees its port pair at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while not self._done.done() and not self._call.ended and loop.time() < deadline:
                await asyncio.wait({self._done}, timeout=POLL)
            return self._done.result() if self._done.done() else None
        finally:
            if not self._done.done():
                self._done.cancel()
                self.release()

    def release(self) -> None:
        """Give the port pair back if no leg took it (idempotent)."""
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()


def retarget_leg(leg: LegacyAudioLeg, choice: AudioChoice, direction: str) -> str | None:
    """Apply a renegotiated audio choice to the running leg (RFC 3264 8): the peer's new
    address and port, a codec of the same sample rate, new SRTP contexts only when an SDES
    key changed (RFC 4568 7.1.4), hold/resume from the peer's ``direction`` (or a ``c=``
    of 0.0.0.0).  Returns why it cannot be applied (the leg is then unchanged), else None."""
    srtp, crypto = leg.srtp, choice.crypto
    if crypto is not None and not (srtp is not None and srtp.suite == crypto.suite
                                   and srtp.remote_key == crypto.remote.key
                                   and srtp.local_key == crypto.local.key):
        srtp = SdesSrtp(crypto.suite, remote_key=crypto.remote.key, local_key=crypto.local.key)
    sending = direction in ("sendrecv", "recvonly") and choice.remote_address not in ("0.0.0.0", "::")
    try:
        leg.renegotiate(codec=codec_by_name(choice.encoding), payload_type=choice.payload_type,
                        remote_address=choice.remote_address, remote_port=choice.remote_port,
                        telephone_event_pt=choice.telephone_event_pt, srtp=srtp, sending=sending)
    except (ValueError, KeyError) as exc:
        return str(exc)
    return None


class ReofferWithoutSdp:
    """A re-INVITE without SDP in a running call (RFC 3261 14.2, RFC 3264 8): :meth:`offer`
    is ``call.on_offer_request`` (our current SDP, ``sendrecv``), :meth:`answer` is
    ``call.on_answer`` (the ACK's answer, read with :func:`sip.delayed_offer.choose_answer`
    and handed to ``apply(choice, direction)``, which re-targets the leg or says why not).
    A reason returned from :meth:`answer` makes the SIP core end the call with BYE."""

    def __init__(self, apply: Callable[[AudioChoice, str], str | None]) -> None:
        self._apply = apply
        self._offer: LocalOffer | None = None

    def offer(self, call: InboundCall) -> str:
        """The offer for the 2xx (raises ``OfferRejected``/``SdpParseError`` when the call has
        no current SDP with audio: the SIP core then repeats it and the answer is refused)."""
        self._offer = None
        self._offer = reoffer_current(SessionDescription.parse(call.answer_sdp or ""))
        return str(self._offer)

    def answer(self, call: InboundCall, answer: SessionDescription) -> str | None:
        """The ACK's answer: None when applied, else the reason for the BYE."""
        offer, self._offer = self._offer, None
        if offer is None:
            return "no offer of ours is waiting for an answer"
        try:
            choice = choose_answer(offer, answer)
        except OfferRejected as exc:
            return exc.reason
        return self._apply(choice, answer.media[offer.audio_index].direction)
