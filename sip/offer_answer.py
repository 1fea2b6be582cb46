"""SDP offer/answer for the audio stream (RFC 3264), plain RTP only in this slice.

The gateway answers an offer it received in an INVITE.  RFC 3264 6: the
answer has exactly as many m-lines as the offer, in the same order; streams
we do not take are refused with port 0; the accepted audio stream lists the
codec we chose (a subset of the offer, keeping the offerer's payload type
numbers, 6.1) plus telephone-event when offered (RFC 4733), and mirrors the
direction (6.1: sendonly answers recvonly and so on).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

from sip.sdp import (
    STATIC_AUDIO,
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
)

MediaSecurity = Literal["plain", "sdes", "dtls"]

#: RTP clock rates per encoding (RFC 3551 4.5.2: G.722 is clocked at 8000 on the wire).
_CLOCK: dict[str, int] = {"PCMU": 8000, "PCMA": 8000, "G722": 8000}
_PLAIN_PROTOS = ("RTP/AVP", "RTP/AVPF")
_MIRROR = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
           "inactive": "inactive"}
DEFAULT_PTIME = 20


class OfferRejected(Exception):
    """Nothing in the offer can be used; the INVITE should be answered ``status`` (488)."""

    def __init__(self, reason: str, status: int = 488) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class AudioChoice:
    """What we agreed to send and receive on the audio stream."""

    payload_type: int
    encoding: str
    clock_rate: int
    remote_address: str
    remote_port: int
    telephone_event_pt: int | None
    ptime: int


def _audio_sections(offer: SessionDescription) -> list[MediaDescription]:
    return [m for m in offer.media if m.media.lower() == "audio" and m.port != 0]


def media_security(offer: SessionDescription) -> MediaSecurity:
    """What the (first usable) audio offer can do: ``dtls``, ``sdes`` or ``plain``.

    RTP/SAVP(F) or a=crypto means SDES-SRTP (RFC 4568); UDP/TLS/RTP/SAVP(F) or
    a=fingerprint means DTLS-SRTP (RFC 5763).  A fingerprint wins over a=crypto
    on the same stream because only DTLS can use it.
    """
    sections = _audio_sections(offer)
    if not sections:
        return "plain"
    m = sections[0]
    proto = m.proto.upper()
    has_fp = m.attribute("fingerprint") is not None or offer.attribute("fingerprint") is not None
    if "TLS" in proto.split("/") or (proto.startswith("RTP/SAVP") and has_fp):
        return "dtls"
    if proto.startswith("RTP/SAVP") or m.attribute("crypto") is not None:
        return "sdes"
    if has_fp:
        return "dtls"
    return "plain"


def _codec_of(m: MediaDescription, pt: int) -> tuple[str, int, int | None] | None:
    rtpmap = m.rtpmap.get(pt)
    if rtpmap is not None:
        return rtpmap.encoding.upper(), rtpmap.clock_rate, rtpmap.channels
    if pt in STATIC_AUDIO:
        enc, rate = STATIC_AUDIO[pt]
        return enc, rate, None
    return None


def _pick(m: MediaDescription, preferred: tuple[str, ...]) -> tuple[int, str, int] | None:
    wanted = {p.upper() for p in preferred}
    for fmt in m.formats:
        if not fmt.isdigit():
            continue
        pt = int(fmt)
        codec = _codec_of(m, pt)
        if codec is None:
            continue
        enc, rate, channels = codec
        if enc in wanted and rate == _CLOCK.get(enc) and channels in (None, 1):
            return pt, enc, rate
    return None


def _telephone_event(m: MediaDescription, clock_rate: int) -> int | None:
    for fmt in m.formats:
        if fmt.isdigit():
            rm = m.rtpmap.get(int(fmt))
            if rm and rm.encoding.lower() == "telephone-event" and rm.clock_rate == clock_rate:
                return rm.payload_type
    return None


def _chosen_index(offer: SessionDescription, preferred: tuple[str, ...]) -> int | None:
    for i, m in enumerate(offer.media):
        if (m.media.lower() == "audio" and m.port != 0 and m.proto.upper() in _PLAIN_PROTOS
                and _pick(m, preferred) is not None and m.connection_address):
            return i
    return None


def choose_audio(
    offer: SessionDescription, preferred: tuple[str, ...] = ("PCMU", "PCMA", "G722")
) -> AudioChoice:
    """Choose the audio codec: the offerer's first listed codec that we support (RFC 3264 6.1).

    Static payload types 0/8/9 are understood without a=rtpmap (RFC 3551 6).
    Raises :class:`OfferRejected` (488) when no plain RTP audio stream carries a
    usable codec.
    """
    if not _audio_sections(offer):
        raise OfferRejected("no audio stream offered")
    index = _chosen_index(offer, preferred)
    if index is None:
        if not any(m.proto.upper() in _PLAIN_PROTOS for m in _audio_sections(offer)):
            raise OfferRejected("only secure RTP audio offered (not supported yet)")
        raise OfferRejected("no common audio codec")
    m = offer.media[index]
    picked = _pick(m, preferred)
    assert picked is not None and m.connection_address is not None
    pt, enc, rate = picked
    return AudioChoice(
        payload_type=pt, encoding=enc, clock_rate=rate, remote_address=m.connection_address,
        remote_port=m.port, telephone_event_pt=_telephone_event(m, rate),
        ptime=m.ptime or DEFAULT_PTIME,
    )


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def build_answer(
    offer: SessionDescription,
    choice: AudioChoice,
    local_address: str,
    local_port: int,
    *,
    session_id: int | None = None,
    session_version: int | None = None,
    username: str = "roomgate",
) -> SessionDescription:
    """The RFC 3264 answer: one m-line per offered m-line, only the chosen audio one accepted.

    ``session_id``/``session_version`` default to one random 62-bit number
    (RFC 8866 5.2 recommends an NTP-like unique value; the version only has to
    grow on later offers from us).
    """
    sid = session_id if session_id is not None else secrets.randbits(62)
    version = session_version if session_version is not None else sid
    chosen = None
    for i, m in enumerate(offer.media):
        if (m.media.lower() == "audio" and m.port != 0 and m.proto.upper() in _PLAIN_PROTOS
                and str(choice.payload_type) in m.formats and m.connection_address):
            chosen = i
            break
    answer = SessionDescription(
        origin=Origin(username, str(sid), str(version), "IN", _addrtype(local_address),
                      local_address),
        session_name="-",
        connection=Connection("IN", _addrtype(local_address), local_address),
    )
    for i, m in enumerate(offer.media):
        if i == chosen:
            answer.media.append(_audio_answer(m, choice, local_port))
        else:
            answer.media.append(MediaDescription(
                media=m.media, port=0, proto=m.proto, formats=m.formats[:1] or ["0"],
            ))
    answer.link_media()
    return answer


def _audio_answer(m: MediaDescription, choice: AudioChoice, local_port: int) -> MediaDescription:
    formats = [str(choice.payload_type)]
    attrs: list[tuple[str, str | None]] = [
        ("rtpmap", f"{choice.payload_type} {choice.encoding}/{choice.clock_rate}")
    ]
    te = choice.telephone_event_pt
    if te is not None and str(te) in m.formats:
        formats.append(str(te))
        attrs.append(("rtpmap", f"{te} telephone-event/{choice.clock_rate}"))
        attrs.append(("fmtp", f"{te} {m.fmtp.get(te) or '0-15'}"))
    attrs.append(("ptime", str(choice.ptime)))
    attrs.append((_MIRROR.get(m.direction, "sendrecv"), None))
    return MediaDescription(media="audio", port=local_port, proto=m.proto, formats=formats,
                            attributes=attrs)
