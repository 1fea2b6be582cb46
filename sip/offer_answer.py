"""SDP offer/answer for the audio stream (RFC 3264), plain RTP or SDES-SRTP (RFC 4568).

The gateway answers an offer it received in an INVITE.  RFC 3264 6: the
answer has exactly as many m-lines as the offer, in the same order; streams
we do not take are refused with port 0; the accepted audio stream lists the
codec we chose (a subset of the offer, keeping the offerer's payload type
numbers, 6.1) plus telephone-event when offered (RFC 4733), and mirrors the
direction (6.1: sendonly answers recvonly and so on).

SRTP keyed by SDES (RFC 4568) is taken in the shapes real systems send: ``RTP/SAVP`` and
``RTP/SAVPF`` with ``a=crypto``; best-effort SRTP, i.e. ``a=crypto`` inside ``RTP/AVP``
(the answer keeps ``RTP/AVP`` and adds our ``a=crypto``; without usable crypto it is plain
RTP); and two m-lines for the same audio (one ``RTP/SAVP``, one ``RTP/AVP``, the
"capability negotiation by duplication" of RFC 5939 section 1), where SRTP is taken when
allowed and the other line is answered with port 0 (RFC 3264 6).  SRTP is never declined
in favour of plain RTP when both are possible.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Literal

from sip.sdes import CryptoChoice, choose_crypto
from sip.sdp import (
    STATIC_AUDIO,
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
)

MediaSecurity = Literal["plain", "sdes", "dtls"]

#: RTP clock rates per encoding (RFC 3551 4.5.2: G.722 is clocked at 8000 on the wire;
#: RFC 7587 4.1: Opus always at 48000, whatever its internal bandwidth).
CLOCK_RATES: dict[str, int] = {"PCMU": 8000, "PCMA": 8000, "G722": 8000, "OPUS": 48000}
#: RFC 7587 7: Opus is always ``opus/48000/2`` in SDP; mono or stereo is said by the fmtp.
#: Our answer asks for mono (``stereo=0``) and says we send mono (``sprop-stereo=0``).
OPUS_RTPMAP = "opus/48000/2"
OPUS_ANSWER_FMTP = "stereo=0;sprop-stereo=0"
_PLAIN_PROTOS = ("RTP/AVP", "RTP/AVPF")
_SECURE_PROTOS = ("RTP/SAVP", "RTP/SAVPF")
#: The RTP profiles an audio line may use with us, plain or SDES-SRTP (offers and answers alike).
RTP_PROTOS = _PLAIN_PROTOS + _SECURE_PROTOS
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
    """What we agreed to send and receive on the audio stream.

    ``crypto`` is set when the stream is SDES-SRTP (RFC 4568): the offer's accepted
    ``a=crypto`` (its key protects what the peer sends us) and our own (its key protects
    what we send).  ``media_index`` is the offer's m-line this choice answers (None for a
    choice built by hand: :func:`build_answer` then finds the line by payload type).
    """

    payload_type: int
    encoding: str
    clock_rate: int
    remote_address: str
    remote_port: int
    telephone_event_pt: int | None
    ptime: int
    crypto: CryptoChoice | None = None
    media_index: int | None = field(default=None, compare=False)

    @property
    def secure(self) -> bool:
        """Whether the stream is SRTP."""
        return self.crypto is not None

    @property
    def srtp_suite(self) -> str | None:
        """The SRTP crypto suite (``AES_CM_128_HMAC_SHA1_80`` ...), or None for plain RTP."""
        return self.crypto.suite if self.crypto is not None else None

    @property
    def srtp_remote_key(self) -> bytes | None:
        """The peer's master key||salt (unprotects what it sends us), or None."""
        return self.crypto.remote.key if self.crypto is not None else None

    @property
    def srtp_local_key(self) -> bytes | None:
        """Our master key||salt (protects what we send; announced in the answer), or None."""
        return self.crypto.local.key if self.crypto is not None else None


def _audio_sections(offer: SessionDescription) -> list[MediaDescription]:
    return [m for m in offer.media if m.media.lower() == "audio" and m.port != 0]


def section_security(offer: SessionDescription, m: MediaDescription) -> MediaSecurity:
    """What one m-line of ``offer`` (an offer or an answer) asks for: ``plain``, ``sdes``, ``dtls``."""
    proto = m.proto.upper()
    has_fp = m.attribute("fingerprint") is not None or offer.attribute("fingerprint") is not None
    if "TLS" in proto.split("/") or (proto.startswith("RTP/SAVP") and has_fp):
        return "dtls"
    if proto.startswith("RTP/SAVP") or m.attribute("crypto") is not None:
        return "sdes"
    if has_fp:
        return "dtls"
    return "plain"


def media_security(offer: SessionDescription) -> MediaSecurity:
    """What the audio offer can do: ``sdes``, ``dtls`` or ``plain``.

    RTP/SAVP(F) or a=crypto means SDES-SRTP (RFC 4568); UDP/TLS/RTP/SAVP(F) or
    a=fingerprint means DTLS-SRTP (RFC 5763).  A fingerprint wins over a=crypto
    on the same stream because only DTLS can use it.  With several audio m-lines
    (SAVP + AVP for the same audio) the most secure one we could take counts:
    ``sdes`` if any line offers it, else ``dtls`` if any does, else ``plain``.
    Whether the offered keys are usable is decided by :func:`choose_audio`.
    """
    kinds = {section_security(offer, m) for m in _audio_sections(offer)}
    if "sdes" in kinds:
        return "sdes"
    if "dtls" in kinds:
        return "dtls"
    return "plain"


def codec_of(m: MediaDescription, pt: int) -> tuple[str, int, int | None] | None:
    """Encoding (upper case), clock rate and channels of payload type ``pt`` on ``m``: its
    a=rtpmap, else the RFC 3551 static type; None when neither names it."""
    rtpmap = m.rtpmap.get(pt)
    if rtpmap is not None:
        return rtpmap.encoding.upper(), rtpmap.clock_rate, rtpmap.channels
    if pt in STATIC_AUDIO:
        enc, rate = STATIC_AUDIO[pt]
        return enc, rate, None
    return None


#: Channel counts accepted in a=rtpmap: mono codecs, and Opus' mandatory "/2" (RFC 7587 7;
#: a bare ``opus/48000`` from a sloppy endpoint is taken too, it can only mean the same codec).
_CHANNELS: dict[str, tuple[int | None, ...]] = {"OPUS": (None, 2)}


def pick_codec(m: MediaDescription, preferred: tuple[str, ...]) -> tuple[int, str, int] | None:
    """The first format of ``m`` (the peer's order decides) in ``preferred`` at its RTP clock
    rate: payload type, encoding, clock rate; None when there is none."""
    wanted = {p.upper() for p in preferred}
    for fmt in m.formats:
        if not fmt.isdigit():
            continue
        pt = int(fmt)
        codec = codec_of(m, pt)
        if codec is None:
            continue
        enc, rate, channels = codec
        if enc in wanted and rate == CLOCK_RATES.get(enc) and channels in _CHANNELS.get(enc, (None, 1)):
            return pt, enc, rate
    return None


def telephone_event(m: MediaDescription, clock_rate: int) -> int | None:
    """The payload type of ``m``'s RFC 4733 telephone-event at the audio codec's ``clock_rate``."""
    for fmt in m.formats:
        if fmt.isdigit():
            rm = m.rtpmap.get(int(fmt))
            if rm and rm.encoding.lower() == "telephone-event" and rm.clock_rate == clock_rate:
                return rm.payload_type
    return None


def _candidates(
    offer: SessionDescription, preferred: tuple[str, ...], media_address: str | None = None,
) -> tuple[list[tuple[int, CryptoChoice | None]], list[str]]:
    """Usable audio m-lines in offer order, each with its SDES choice (None: plain RTP),
    and the reasons the others (or their crypto) could not be used."""
    family = address_type(media_address) if media_address else None
    found: list[tuple[int, CryptoChoice | None]] = []
    reasons: list[str] = []
    for i, m in enumerate(offer.media):
        if m.media.lower() != "audio" or m.port == 0:
            continue
        proto = m.proto.upper()
        if section_security(offer, m) == "dtls":
            reasons.append(f"m-line {i + 1}: DTLS-SRTP toward SIP endpoints is not supported")
            continue
        if proto not in RTP_PROTOS or not m.connection_address:
            reasons.append(f"m-line {i + 1}: {m.proto} is not supported")
            continue
        if not _reachable(m.connection_address, family):
            reasons.append(f"m-line {i + 1}: c= is {address_type(m.connection_address)} and our media "
                           f"address is {family}: no RTP could flow")
            continue
        if pick_codec(m, preferred) is None:
            reasons.append(f"m-line {i + 1}: no common audio codec")
            continue
        crypto_values = m.attribute_values("crypto")
        crypto, refused = choose_crypto(crypto_values) if crypto_values else (None, [])
        reasons += [f"m-line {i + 1}: {r}" for r in refused]
        if proto in _SECURE_PROTOS and crypto is None:
            if not crypto_values:
                reasons.append(f"m-line {i + 1}: {m.proto} without a=crypto")
            continue
        found.append((i, crypto))
    return found, reasons


def choose_audio(
    offer: SessionDescription,
    preferred: tuple[str, ...] = ("PCMU", "PCMA", "G722"),
    *,
    require_srtp: bool = False,
    media_address: str | None = None,
) -> AudioChoice:
    """Choose the audio stream and codec: the offerer's first listed codec that we support
    (RFC 3264 6.1), on an SRTP stream whenever the offer has usable SDES keys.

    Static payload types 0/8/9 are understood without a=rtpmap (RFC 3551 6).
    ``require_srtp`` refuses a choice without SRTP.  ``media_address`` (our RTP socket's):
    a line whose ``c=`` is of the other IP family is refused, since the leg could not reach
    it (an ICE-less offer with an IPv4 and an IPv6 line gets the reachable one); the
    unspecified 0.0.0.0 / :: (hold) passes.  Raises :class:`OfferRejected` (488) when
    nothing usable is offered; its reason lists why each line was refused.
    """
    if not _audio_sections(offer):
        raise OfferRejected("no audio stream offered")
    found, reasons = _candidates(offer, preferred, media_address)
    secure = [c for c in found if c[1] is not None]
    if secure:
        index, crypto = secure[0]
    elif found and not require_srtp:
        index, crypto = found[0]
    else:
        if found:  # require_srtp and only plain RTP is usable
            reasons.insert(0, "no usable SRTP (SDES) audio offered")
        if all(r.endswith("no common audio codec") for r in reasons) or not reasons:
            raise OfferRejected("no common audio codec")
        raise OfferRejected("; ".join(_dedupe(reasons)))
    m = offer.media[index]
    picked = pick_codec(m, preferred)
    assert picked is not None and m.connection_address is not None
    pt, enc, rate = picked
    return AudioChoice(
        payload_type=pt, encoding=enc, clock_rate=rate, remote_address=m.connection_address,
        remote_port=m.port, telephone_event_pt=telephone_event(m, rate),
        ptime=m.ptime or DEFAULT_PTIME, crypto=crypto, media_index=index,
    )


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def address_type(address: str) -> str:
    """SDP's addrtype (``IP4``/``IP6``) for ``address``."""
    return "IP6" if ":" in address else "IP4"


def _reachable(address: str, family: str | None) -> bool:
    """Whether a socket of ``family`` (IP4/IP6, None: not known) can send to ``address``."""
    return family is None or address in ("0.0.0.0", "::") or address_type(address) == family


def build_answer(
    offer: SessionDescription,
    choice: AudioChoice,
    local_address: str,
    local_port: int,
    *,
    session_id: int | None = None,
    session_version: int | None = None,
    username: str = "roomgate",
    video: VideoChoice | None = None,
    video_port: int | None = None,
) -> SessionDescription:
    """The RFC 3264 answer: one m-line per offered m-line, only the chosen audio one accepted
    (and, when ``video``/``video_port`` are given, the chosen main video line, see
    :func:`choose_video`; without them every video line is refused with port 0, RFC 3264 6:
    video off by policy, or nothing usable offered).

    ``session_id``/``session_version`` default to one random 62-bit number
    (RFC 8866 5.2 recommends an NTP-like unique value; the version only has to
    grow on later offers from us).
    """
    sid = session_id if session_id is not None else secrets.randbits(62)
    version = session_version if session_version is not None else sid
    chosen = choice.media_index
    if chosen is None:
        wanted = RTP_PROTOS if choice.secure else _PLAIN_PROTOS
        for i, m in enumerate(offer.media):
            if (m.media.lower() == "audio" and m.port != 0 and m.proto.upper() in wanted
                    and str(choice.payload_type) in m.formats and m.connection_address):
                chosen = i
                break
    answer = SessionDescription(
        origin=Origin(username, str(sid), str(version), "IN", address_type(local_address),
                      local_address),
        session_name="-",
        connection=Connection("IN", address_type(local_address), local_address),
    )
    for i, m in enumerate(offer.media):
        if i == chosen:
            answer.media.append(_audio_answer(m, choice, local_port))
        elif video is not None and video_port and i == video.media_index:
            answer.media.append(_video_answer(m, video, video_port))
        else:
            answer.media.append(MediaDescription(
                media=m.media, port=0, proto=m.proto, formats=m.formats[:1] or ["0"],
            ))
    answer.link_media()
    return answer


def _audio_answer(m: MediaDescription, choice: AudioChoice, local_port: int) -> MediaDescription:
    formats = [str(choice.payload_type)]
    attrs: list[tuple[str, str | None]]
    if choice.encoding == "OPUS":
        attrs = [("rtpmap", f"{choice.payload_type} {OPUS_RTPMAP}"),
                 ("fmtp", f"{choice.payload_type} {OPUS_ANSWER_FMTP}")]
    else:
        attrs = [("rtpmap", f"{choice.payload_type} {choice.encoding}/{choice.clock_rate}")]
    te = choice.telephone_event_pt
    if te is not None and str(te) in m.formats:
        formats.append(str(te))
        attrs.append(("rtpmap", f"{te} telephone-event/{choice.clock_rate}"))
        attrs.append(("fmtp", f"{te} {m.fmtp.get(te) or '0-15'}"))
    attrs.append(("ptime", str(choice.ptime)))
    if choice.crypto is not None:  # RFC 4568 7.1.1: one a=crypto, the offer's tag and suite, our key
        attrs.append(("crypto", choice.crypto.local.to_sdp()))
    attrs.append((_MIRROR.get(m.direction, "sendrecv"), None))
    return MediaDescription(media="audio", port=local_port, proto=m.proto, formats=formats,
                            attributes=attrs)


# ---------------------------------------------------------------------------- video
#: Whether the gateway accepts video m-lines at all (a meeting's policy ``video: false`` still
#: refuses them per call, see ``enabled`` of :func:`choose_video`).  On: the bridge carries the
#: main video as H.264 passthrough (``bridge.video_leg``).
VIDEO_ENABLED = True
#: Video codecs the bridge passes through unchanged.  It never transcodes video (the conference
#: core decodes every publisher and re-encodes per subscriber), so the room system's codec must be
#: one the core's WebRTC side negotiates as is: H.264 (RFC 6184).  VP8 stays understood by
#: :func:`choose_video` for callers that ask for it.
PASSTHROUGH_VIDEO_CODECS: tuple[str, ...] = ("H264",)

#: Feedback (RFC 4585 4.2) we can honour on a video stream, in answer order: generic NACK,
#: PLI (RFC 4585 6.3.1), FIR (RFC 5104 7.1), REMB (draft-alvestrand-rmcat-remb).
VIDEO_FEEDBACK: tuple[str, ...] = ("nack", "nack pli", "ccm fir", "goog-remb")
#: H.264 parameters we send back (RFC 6184 8.1): the level we decode up to is the offer's
#: ``profile-level-id`` (answered as offered, 8.2.2), and these limits when the offer has them.
_H264_ANSWER_PARAMS = ("profile-level-id", "packetization-mode", "max-fs", "max-mbps")
#: Largest picture and rate we announce (1080p30: 8160 macroblocks, 244800 macroblocks/s).
MAX_FS = 8160
MAX_MBPS = 244800
#: Highest video bandwidth we accept, kb/s (b=AS, RFC 8866 5.8) and b/s (b=TIAS, RFC 3890).
MAX_VIDEO_KBPS = 2048


@dataclass(frozen=True)
class VideoChoice:
    """The main video stream we agreed to (RFC 3264 6.1): one codec with its answer fmtp,
    the RTCP feedback both sides support (RFC 4585 4.2), the bandwidth cap and the peer's
    address.  ``media_index`` is the offer's m-line this answers."""

    payload_type: int
    encoding: str
    clock_rate: int
    fmtp: str | None
    feedback: tuple[str, ...]
    bandwidth_kbps: int | None
    remote_address: str
    remote_port: int
    media_index: int
    crypto: CryptoChoice | None = None

    @property
    def packetization_mode(self) -> int:
        """H.264 packetization-mode agreed (RFC 6184 8.1: 0 when absent)."""
        mode = _fmtp_params(self.fmtp).get("packetization-mode", "0")
        return int(mode) if mode.isdigit() else 0


def _content(m: MediaDescription) -> str | None:
    """``a=content`` (RFC 4796): main, slides, alt, speaker, sl."""
    value = m.attribute("content")
    return value.strip().lower() if value else None


def _fmtp_params(text: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (text or "").split(";"):
        name, sep, value = part.strip().partition("=")
        if name:
            out[name.strip().lower()] = value.strip() if sep else ""
    return out


def _h264_fmtp(offered: str | None) -> str | None:
    """Our fmtp for an offered H.264 payload type (RFC 6184 8.1, 8.2.2): the offer's
    profile-level-id and packetization-mode, max-fs/max-mbps capped at what we take."""
    params = _fmtp_params(offered)
    out: list[str] = []
    if "profile-level-id" in params:
        out.append(f"profile-level-id={params['profile-level-id']}")
    out.append(f"packetization-mode={params.get('packetization-mode', '0') or '0'}")
    for name, cap in (("max-fs", MAX_FS), ("max-mbps", MAX_MBPS)):
        if name in params and params[name].isdigit():
            out.append(f"{name}={min(int(params[name]), cap)}")
    return ";".join(out)


def _feedback(m: MediaDescription, pt: int) -> tuple[str, ...]:
    """The offer's ``a=rtcp-fb`` for ``pt`` or ``*`` that we support, in our order
    (RFC 4585 4.2: feedback not offered is not answered).  Only in AVPF profiles."""
    if not m.proto.upper().endswith("AVPF"):
        return ()
    offered: set[str] = set()
    for value in m.attribute_values("rtcp-fb"):
        fmt, _, kind = value.strip().partition(" ")
        if fmt in (str(pt), "*"):
            offered.add(" ".join(kind.split()).lower())
    return tuple(f for f in VIDEO_FEEDBACK if f in offered)


def _bandwidth_kbps(m: MediaDescription) -> int | None:
    """The stream's cap from ``b=AS`` (kb/s) or ``b=TIAS`` (b/s, RFC 3890), at most ours."""
    best: int | None = None
    for b in m.bandwidths:
        kind, _, value = b.partition(":")
        if not value.strip().isdigit():
            continue
        kbps = int(value) if kind.upper() == "AS" else int(value) // 1000 if \
            kind.upper() == "TIAS" else None
        if kbps is not None and kbps > 0:
            best = kbps if best is None else min(best, kbps)
    return min(best, MAX_VIDEO_KBPS) if best is not None else None


def choose_video(
    offer: SessionDescription,
    preferred: tuple[str, ...] = PASSTHROUGH_VIDEO_CODECS,
    *,
    enabled: bool | None = None,
) -> VideoChoice | None:
    """Choose the main video stream (RFC 3264 6.1, RFC 4796 ``a=content:main`` or no
    ``a=content``; ``slides`` lines are never taken, they belong to BFCP presentations,
    RFC 8855) and its codec: H.264 (RFC 6184; packetization-mode 0 or 1, preferring 1 when
    both are offered) or VP8 (RFC 7741), in our ``preferred`` order.

    Returns None when video is switched off (``enabled``: the meeting policy's ``video``; the
    module-wide :data:`VIDEO_ENABLED` must also be on),
    when no video is offered or nothing in it is usable -- the answer then refuses every video
    line with port 0, which never fails the call.  SDES-keyed video lines carry the same
    choice as audio (``crypto``); DTLS-SRTP lines are not taken.
    """
    if not VIDEO_ENABLED or enabled is False:
        return None
    for i, m in enumerate(offer.media):
        if m.media.lower() != "video" or m.port == 0 or _content(m) not in (None, "main"):
            continue
        if m.proto.upper() not in RTP_PROTOS or not m.connection_address:
            continue
        if section_security(offer, m) == "dtls":
            continue
        crypto_values = m.attribute_values("crypto")
        crypto = choose_crypto(crypto_values)[0] if crypto_values else None
        if m.proto.upper() in _SECURE_PROTOS and crypto is None:
            continue
        picked = _pick_video(m, preferred)
        if picked is None:
            continue
        pt, enc, fmtp = picked
        return VideoChoice(
            payload_type=pt, encoding=enc, clock_rate=90000, fmtp=fmtp,
            feedback=_feedback(m, pt), bandwidth_kbps=_bandwidth_kbps(m),
            remote_address=m.connection_address, remote_port=m.port, media_index=i,
            crypto=crypto,
        )
    return None


def _pick_video(m: MediaDescription, preferred: tuple[str, ...]
                ) -> tuple[int, str, str | None] | None:
    rtpmaps = m.rtpmap
    fmtps = m.fmtp
    for want in (p.upper() for p in preferred):
        found: list[int] = []
        for fmt in m.formats:
            rm = rtpmaps.get(int(fmt)) if fmt.isdigit() else None
            if rm is not None and rm.encoding.upper() == want and rm.clock_rate == 90000:
                found.append(rm.payload_type)
        if not found:
            continue
        if want == "H264":
            modes = {pt: _fmtp_params(fmtps.get(pt)).get("packetization-mode", "0") or "0"
                     for pt in found}
            usable = [pt for pt in found if modes[pt] in ("0", "1")]
            if not usable:
                continue
            pt = next((p for p in usable if modes[p] == "1"), usable[0])
            return pt, "H264", _h264_fmtp(fmtps.get(pt))
        return found[0], want, None
    return None


def _video_answer(m: MediaDescription, video: VideoChoice, port: int) -> MediaDescription:
    pt = video.payload_type
    attrs: list[tuple[str, str | None]] = [("rtpmap", f"{pt} {video.encoding}/{video.clock_rate}")]
    if video.fmtp:
        attrs.append(("fmtp", f"{pt} {video.fmtp}"))
    attrs += [("rtcp-fb", f"{pt} {fb}") for fb in video.feedback]
    if video.crypto is not None:
        attrs.append(("crypto", video.crypto.local.to_sdp()))
    if _content(m) is not None:  # RFC 4796 5: echo the role of the line the offer marked
        attrs.append(("content", "main"))
    attrs.append((_MIRROR.get(m.direction, "sendrecv"), None))
    bandwidths: list[str] = []
    if video.bandwidth_kbps is not None:
        bandwidths = [f"AS:{video.bandwidth_kbps}", f"TIAS:{video.bandwidth_kbps * 1000}"]
    return MediaDescription(media="video", port=port, proto=m.proto, formats=[str(pt)],
                            bandwidths=bandwidths, attributes=attrs)
