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

import secrets
from dataclasses import dataclass
from typing import Literal

from sip.offer_answer import (
    _CLOCK,
    _RTP_PROTOS,
    DEFAULT_PTIME,
    AudioChoice,
    OfferRejected,
    _addrtype,
    _pick,
    _section_security,
    _telephone_event,
)
from sip.sdes import (
    SUITE_KEY_LENGTHS,
    SUITE_PREFERENCE,
    CryptoAttribute,
    CryptoChoice,
    CryptoError,
    parse_crypto,
)
from sip.sdp import Connection, MediaDescription, Origin, SessionDescription

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
        ("rtpmap", f"{pt} {c}/{_CLOCK[c]}") for c, pt in zip(usable, pts, strict=True)]
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
    addrtype = _addrtype(local_address)
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
    m = answer.media[0]
    if m.media.lower() != "audio" or m.port == 0:
        raise OfferRejected("the answer refuses the audio stream")
    if m.proto.upper() not in _RTP_PROTOS or _section_security(answer, m) == "dtls":
        raise OfferRejected(f"the answer's {m.proto} is not what we offered")
    if not m.connection_address:
        raise OfferRejected("the answer has no c= address for audio")
    ours = offer.sdp.connection
    if ours is not None and _addrtype(m.connection_address) != ours.addrtype:
        raise OfferRejected(f"the answer's audio address is {_addrtype(m.connection_address)}, our "
                            f"media address is {ours.addrtype}: no RTP could flow")
    picked = _pick(m, offer.codecs)
    if picked is None:
        raise OfferRejected("the answer names no codec we offered")
    crypto = _answer_crypto(offer, m) if offer.srtp != "off" else None
    if offer.srtp == "required" and crypto is None:
        raise OfferRejected("the answer has no a=crypto and the meeting requires SRTP")
    pt, enc, rate = picked
    return AudioChoice(payload_type=pt, encoding=enc, clock_rate=rate,
                       remote_address=m.connection_address, remote_port=m.port,
                       telephone_event_pt=_telephone_event(m, rate),
                       ptime=m.ptime or DEFAULT_PTIME, crypto=crypto, media_index=0)
