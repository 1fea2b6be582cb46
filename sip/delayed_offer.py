"""Delayed offer (RFC 3261 13.2.1, RFC 3264 5 and 6): our SDP offer in the 2xx, the answer in the ACK.

An INVITE without a body (CUCM trunks, several room systems) leaves the offer to us: the
gateway puts it in the 200 OK and the caller's ACK must carry the answer.  This module
only builds that offer and reads the answer against it; the endpoint (:mod:`sip.endpoint`)
hands the ACK's SDP to the application, which ends the call with a BYE when the answer
cannot be used (RFC 3261 13.3.1.4 leaves no other way out: the dialog is confirmed).

What we offer (one audio m-line): PCMU, PCMA, G.722 (the meeting's order) and
telephone-event (RFC 4733), and for SRTP keyed by SDES (RFC 4568) one ``a=crypto`` per
supported suite, each with its own fresh key:

* ``srtp="off"``: plain ``RTP/AVP``;
* ``srtp="best-effort"`` (``prefer-srtp``): ``RTP/AVP`` with ``a=crypto`` -- an answerer
  that takes a crypto line gets SRTP, one that ignores it plain RTP (the shape
  :func:`sip.offer_answer.choose_audio` already accepts inbound);
* ``srtp="required"`` (``require-srtp``): ``RTP/SAVP`` with ``a=crypto`` only.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from typing import Literal

from sip.offer_answer import (
    CLOCK_RATES,
    DEFAULT_PTIME,
    RTP_PROTOS,
    AudioChoice,
    OfferRejected,
    address_type,
    codec_of,
    pick_codec,
    section_security,
    telephone_event,
)
from sip.sdes import (
    SUITE_KEY_LENGTHS,
    SUITE_PREFERENCE,
    CryptoAttribute,
    CryptoChoice,
    CryptoError,
    parse_crypto,
)
from sip.sdp import DIRECTIONS, Connection, MediaDescription, Origin, SessionDescription

SrtpOffer = Literal["off", "best-effort", "required"]

#: Static payload types of the codecs we offer (RFC 3551 6).
OFFER_PAYLOAD_TYPES: dict[str, int] = {"PCMU": 0, "PCMA": 8, "G722": 9}
#: The dynamic payload type of telephone-event in our offer (RFC 4733 7.1.1, 8000 Hz clock).
TELEPHONE_EVENT_PT = 101


@dataclass(frozen=True)
class LocalOffer:
    """The offer we sent in the 2xx and what we need to read the answer: our keys per tag."""

    sdp: SessionDescription
    codecs: tuple[str, ...]
    srtp: SrtpOffer
    cryptos: tuple[CryptoAttribute, ...] = ()
    #: The audio m-line's index (a re-offer keeps every m-line of the session, RFC 3264 8).
    audio_index: int = 0

    def __str__(self) -> str:
        return str(self.sdp)


def srtp_for_policy(legacy_media: str) -> SrtpOffer:
    """What ``legacy_media`` (``allow-plain``/``prefer-srtp``/``require-srtp``) makes us offer."""
    return {"prefer-srtp": "best-effort", "require-srtp": "required"}.get(legacy_media, "off")  # type: ignore[return-value]


def build_offer(
    local_address: str,
    local_port: int,
    *,
    codecs: tuple[str, ...] = ("PCMU", "PCMA", "G722"),
    srtp: SrtpOffer = "off",
    session_id: int | None = None,
    username: str = "roomgate",
) -> LocalOffer:
    """Our offer for a delayed-offer INVITE (see the module docstring); ``c=IN IP6`` for an
    IPv6 ``local_address``.  Raises ``ValueError`` when no codec we can carry is listed."""
    usable = tuple(c for c in codecs if c in OFFER_PAYLOAD_TYPES)
    if not usable:
        raise ValueError(f"none of {codecs} can be offered (we offer {', '.join(OFFER_PAYLOAD_TYPES)})")
    pts = [OFFER_PAYLOAD_TYPES[c] for c in usable]
    attrs: list[tuple[str, str | None]] = [
        ("rtpmap", f"{pt} {c}/{CLOCK_RATES[c]}") for c, pt in zip(usable, pts, strict=True)]
    attrs += [("rtpmap", f"{TELEPHONE_EVENT_PT} telephone-event/8000"),
              ("fmtp", f"{TELEPHONE_EVENT_PT} 0-15"), ("ptime", str(DEFAULT_PTIME))]
    cryptos: tuple[CryptoAttribute, ...] = ()
    if srtp != "off":
        cryptos = tuple(
            CryptoAttribute(tag=i, suite=suite, key=secrets.token_bytes(sum(SUITE_KEY_LENGTHS[suite])))
            for i, suite in enumerate(SUITE_PREFERENCE, start=1))
        attrs += [("crypto", c.to_sdp()) for c in cryptos]
    attrs.append(("sendrecv", None))
    sid = session_id if session_id is not None else secrets.randbits(62)
    addrtype = address_type(local_address)
    sdp = SessionDescription(
        origin=Origin(username, str(sid), str(sid), "IN", addrtype, local_address),
        session_name="-",
        connection=Connection("IN", addrtype, local_address),
        media=[MediaDescription(media="audio", port=local_port,
                                proto="RTP/SAVP" if srtp == "required" else "RTP/AVP",
                                formats=[str(pt) for pt in pts] + [str(TELEPHONE_EVENT_PT)],
                                attributes=attrs)],
    )
    sdp.link_media()
    return LocalOffer(sdp=sdp, codecs=usable, srtp=srtp, cryptos=cryptos)


def _answer_crypto(offer: LocalOffer, m: MediaDescription) -> CryptoChoice | None:
    """The answer's ``a=crypto`` matched to ours by tag and suite (RFC 4568 7.1.2, 7.1.3)."""
    values = m.attribute_values("crypto")
    if not values:
        return None
    if len(values) > 1:
        raise OfferRejected("the answer has more than one a=crypto (RFC 4568 7.1.2: exactly one)")
    try:
        remote = parse_crypto(values[0])
    except CryptoError as exc:
        raise OfferRejected(f"the answer's a=crypto is unusable: {exc.reason}") from None
    ours = next((c for c in offer.cryptos if c.tag == remote.tag), None)
    if ours is None or ours.suite != remote.suite:
        raise OfferRejected(f"the answer's a=crypto {remote.tag} {remote.suite} matches none we offered")
    return CryptoChoice(remote=remote, local=ours)


def choose_answer(offer: LocalOffer, answer: SessionDescription) -> AudioChoice:
    """Read the ACK's answer against ``offer``: the codec, the peer's address and port, the
    telephone-event type and, for SRTP, both keys.  Raises :class:`OfferRejected` (its
    ``reason`` goes into the BYE's ``Reason:``) when the answer cannot be used: a different
    number of m-lines (RFC 3264 6), the audio refused (port 0), no codec we offered, no
    usable ``a=crypto`` where SRTP is required, a crypto line that matches none of ours, or an
    address of the other IP family than our media address (the leg's socket could not reach it)."""
    if len(answer.media) != len(offer.sdp.media):
        raise OfferRejected(f"the answer has {len(answer.media)} m-lines, the offer had "
                            f"{len(offer.sdp.media)} (RFC 3264 6)")
    m = answer.media[offer.audio_index]
    if m.media.lower() != "audio" or m.port == 0:
        raise OfferRejected("the answer refuses the audio stream")
    if m.proto.upper() not in RTP_PROTOS or section_security(answer, m) == "dtls":
        raise OfferRejected(f"the answer's {m.proto} is not what we offered")
    if not m.connection_address:
        raise OfferRejected("the answer has no c= address for audio")
    ours = offer.sdp.media[offer.audio_index].connection
    if ours is not None and address_type(m.connection_address) != ours.addrtype:
        raise OfferRejected(f"the answer's audio address is {address_type(m.connection_address)}, our "
                            f"media address is {ours.addrtype}: no RTP could flow")
    picked = pick_codec(m, offer.codecs)
    if picked is None:
        raise OfferRejected("the answer names no codec we offered")
    crypto = _answer_crypto(offer, m) if offer.srtp != "off" else None
    if offer.srtp == "required" and crypto is None:
        raise OfferRejected("the answer has no a=crypto and the meeting requires SRTP")
    pt, enc, rate = picked
    return AudioChoice(payload_type=pt, encoding=enc, clock_rate=rate,
                       remote_address=m.connection_address, remote_port=m.port,
                       telephone_event_pt=telephone_event(m, rate),
                       ptime=m.ptime or DEFAULT_PTIME, crypto=crypto, media_index=offer.audio_index)


def reoffer_current(current: SessionDescription) -> LocalOffer:
    """Our current SDP as the offer in the 2xx to a re-INVITE without SDP (RFC 3261 14.2).

    Same m-lines, ports, codecs and ``a=crypto`` keys as the session has now (so the answer
    can only move the peer's address, port, codec or keys); the audio line says ``sendrecv``
    whatever our last answer said, because a peer that held us (our answer ``recvonly``)
    resumes by answering this offer (CUCM after a transfer).  The ``o=`` version goes up only
    when that made the SDP differ (RFC 3264 8).  Raises :class:`OfferRejected` when
    ``current`` has no active audio line or an ``a=crypto`` of ours cannot be read."""
    sdp = SessionDescription.parse(str(current))
    index = next((i for i, m in enumerate(sdp.media) if m.media.lower() == "audio" and m.port), None)
    if index is None:
        raise OfferRejected("the session has no active audio line to offer again")
    m = sdp.media[index]
    codecs: list[str] = []
    for fmt in m.formats:
        codec = codec_of(m, int(fmt)) if fmt.isdigit() else None
        if codec is not None and codec[0] in CLOCK_RATES and codec[0] not in codecs:
            codecs.append(codec[0])
    try:
        cryptos = tuple(parse_crypto(v) for v in m.attribute_values("crypto"))
    except CryptoError as exc:
        raise OfferRejected(f"our own a=crypto is unusable: {exc.reason}") from None
    if m.direction != "sendrecv":
        m.attributes = [(k, v) for k, v in m.attributes if k not in DIRECTIONS] + [("sendrecv", None)]
        o = sdp.origin
        sdp.origin = dataclasses.replace(o, session_version=str(int(o.session_version) + 1))
    # SRTP is never dropped mid-call: keys in our SDP mean the answer must carry one too.
    srtp: SrtpOffer = "required" if cryptos else "off"
    return LocalOffer(sdp=sdp, codecs=tuple(codecs), srtp=srtp, cryptos=cryptos, audio_index=index)
