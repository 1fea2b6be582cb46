"""The G.711 fast path: RTP packets relayed between the legacy leg and the core, undecoded.

When the legacy side speaks PCMU or PCMA and the core answered that same codec on both the
WHIP and the WHEP peer connection (RFC 7874 lets WebRTC carry G.711 as is), nothing needs
decoding: each packet only gets a new header (our SSRC, the other side's payload type, a
sequence number and timestamp that stay continuous when the source restarts its stream)
and is sent on.  No decode, resample, re-encode, aiortc track, worker thread or 20 ms timer
of ours: the sources already pace at 20 ms.

How the packets reach aiortc and leave it (research on aiortc 1.x, recorded here because
it is the contract this module relies on):

* ``RTCDtlsTransport`` holds the DTLS-derived pylibsrtp sessions (``_tx_srtp``/``_rx_srtp``)
  and its ``_send_rtp(data)`` protects a plain RTP (or RTCP) datagram with ``_tx_srtp`` and
  sends it on the ICE transport.  Reusing it is cheaper and simpler than exporting the
  keying material into a second pylibsrtp session: one SRTP context per direction, and the
  SRTP rollover counter stays aiortc's (a second session on the same SSRC would desync it).
  It is a coroutine, but with host candidates (the gateway gathers no others: :mod:`bridge.ice`)
  it never suspends: aioice's ``Connection.sendto`` ends in ``transport.sendto``.
  :func:`run_to_completion` steps it once, synchronously, instead of creating a task per
  packet (the task and its loop iteration cost more than the packet's protect and send).
* The sender's SSRC is ``RTCRtpSender._ssrc``.  A sender with no track (``addTransceiver(
  "audio")`` without one) runs ``_run_rtp`` as a 20 ms idle sleep and never sends RTP of its
  own, so our packets are the only RTP on that SSRC; its RTCP task keeps running (SR with
  zero counts, RR handling) for the WebRTC side.  That idle sleep is 50 task wake-ups a second
  per call for nothing, as many as the call's relayed packets in that direction, so
  :func:`quiet_idle_sender` replaces ``_run_rtp`` on this one sender instance (looked up on
  the instance when ``send()`` starts it) by a coroutine that only sets the two events
  ``stop()`` waits for (``__rtp_started``, ``__rtp_exited``) and returns.  The RTCP task, RR
  handling (round trip, ``remote-inbound-rtp``) and ``getStats()`` are untouched.
* Inbound, ``RTCDtlsTransport._handle_rtp_data`` unprotects, parses (``aiortc.rtp.RtpPacket``)
  and routes by SSRC/MID to ``receiver._handle_rtp_packet(packet, arrival_time_ms=...)``.
  That method is looked up on the receiver *instance* at every packet, so replacing it on
  this one receiver (:func:`tap_rtp`) takes the packets before the jitter buffer and the
  decoder thread, and leaves every other receiver -- the embedded core's too, in the same
  process -- untouched (no global monkeypatch).  Taking them one step earlier (replacing the
  transport's ``_handle_rtp_data`` and parsing with :class:`bridge.rtp.RtpPacket`) was measured
  and saves nothing: our strict parser costs what aiortc's parse and routing cost (about 6 µs
  a packet each), so aiortc keeps that step.

DTMF rules (the simplest correct ones):

* Legacy -> core: RFC 4733 packets are not relayed (the gateway's WHIP offer carries no
  telephone-event); the legacy leg still detects the digits itself, as on the decode path.
* Core -> legacy: the gateway's own events (:mod:`bridge.dtmf_sender`: IVR, API, dtmf_relay)
  take the slot of the relayed audio packet they replace, exactly as on the decode path
  (:meth:`bridge.legacy_leg.RtpOutbound.packet`), so sequence and timestamp need no room.

A re-INVITE that switches the legacy codec between PCMU and PCMA mid-call is followed by
*transcoding the law per packet*, both directions, not by renegotiating the WebRTC side: the
core keeps the codec it answered at the join, and each relay translates the payload between the
two G.711 laws with a 256-byte ``bytes.translate`` table (:data:`G711_TRANSLATION`: one C call
per packet, no decode into PCM, no state, the timestamp and packet size unchanged since both
laws are 8 bits per sample at 8 kHz).  The tables are the codecs' own G.711 via 16-bit linear
(:mod:`bridge.codecs`: decode one law, encode the other, as ``audioop.lin2alaw(ulaw2lin(...))``
does), not the G.711 recommendation's direct tables 3/4, which differ by at most one
quantisation step on a few codes near zero.  A switch back makes the relay copy again.  Other
codecs cannot arrive here: the leg refuses a re-offer that changes the sample rate.  A full
WebRTC renegotiation was not chosen: it would cost a round trip and a media gap for a
transcode that is exact to the quantisation step.

Statistics: aiortc counts nothing of the fast path's packets (the WHEP receiver's
``_handle_rtp_packet`` is bypassed, the WHIP sender sends none of its own), so ``getStats()``
shows no packets either way.  The relays count them instead (``CoreToLegacy.received``,
``LegacyToCore.packets``, payload octets beside), and ``MediaSession.stats()`` puts those in
the WebRTC leg's figures (:func:`bridge.session.fast_path_rtp`); only the WHIP connection's
``getStats()`` is still polled, for the core's receiver reports (loss, jitter, round trip).
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple, Protocol

import structlog

from bridge.codecs import codec_by_name
from bridge.rtp import RtpPacket

log = structlog.get_logger("bridge.fastpath")

#: The codecs the fast path carries (static payload types, RFC 3551 table 4).
PASSTHROUGH_CODECS = {"PCMU": 0, "PCMA": 8}
#: 20 ms of G.711 at 8 kHz: the timestamp step when a new source stream begins.
G711_FRAME_TICKS = 160

_HEADER = struct.Struct("!BBHII")  # RTP fixed header, no CSRC/extension (RFC 3550 5.1)
_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32


def _law_table(source: str, target: str) -> bytes:
    """Every code of ``source`` decoded to linear and encoded in ``target``: a translate table."""
    every_code = bytes(range(256))
    return codec_by_name(target).encoder().encode(codec_by_name(source).decoder().decode(every_code))


#: ``payload.translate(G711_TRANSLATION[(from_codec, to_codec)])`` turns a mu-law payload into
#: A-law or back (see the module docstring); built once at import.
G711_TRANSLATION: dict[tuple[str, str], bytes] = {
    (a, b): _law_table(a, b) for a in PASSTHROUGH_CODECS for b in PASSTHROUGH_CODECS if a != b}


class LawFollower:
    """One relay direction's G.711 law translation, re-chosen whenever the legacy leg's codec
    (``legacy_codec()``, read per packet) differs from the one the core answered at the join.

    ``direction`` is ``to_core`` (legacy law -> core law) or ``to_legacy`` (core -> legacy).
    """

    def __init__(self, core_codec: str, legacy_codec: Callable[[], str], *, direction: str) -> None:
        self.core_codec = core_codec
        self.direction = direction
        self._legacy_codec = legacy_codec
        self._seen: str | None = None
        self._table: bytes | None = None
        #: Packets whose payload was translated (0 while both sides speak the same law).
        self.transcoded = 0

    def __call__(self, payload: bytes) -> bytes:
        """``payload`` in the receiving side's law."""
        legacy = self._legacy_codec()
        if legacy != self._seen:
            pair = (legacy, self.core_codec) if self.direction == "to_core" else (self.core_codec, legacy)
            self._table = G711_TRANSLATION.get(pair)
            if self._seen is not None:
                log.info("bridge.fastpath.law_changed", direction=self.direction, legacy=legacy,
                         core=self.core_codec, transcoding=self._table is not None)
            self._seen = legacy
        if self._table is None:
            return payload
        self.transcoded += 1
        return payload.translate(self._table)


def seq_newer(a: int, b: int) -> bool:
    """Whether sequence number ``a`` comes after ``b`` (RFC 3550 A.1 serial arithmetic)."""
    return a != b and ((a - b) % _SEQ_MOD) < _SEQ_MOD // 2


class Rewritten(NamedTuple):
    """The outgoing header fields for one relayed packet (a tuple: built once a packet, and a
    frozen dataclass costs four times as much to build)."""

    sequence_number: int
    timestamp: int
    marker: bool


class RtpRewriter:
    """Maps incoming RTP streams (the SSRC may change: the source restarted) onto one outgoing
    stream with our SSRC: sans-IO, one call per packet.

    Within a source stream, sequence and timestamp keep the source's spacing (a lost packet
    stays a visible gap for the receiver's loss count and concealment).  When a new source
    SSRC starts, the output continues one packet and one frame after the last one sent, with
    the marker set (a new talkspurt, RFC 3551 4.1).  Packets that are not newer than the
    newest already relayed (duplicates, reordered ones) are dropped: the output is never
    reordered, and the receivers' own jitter buffers cope with the loss.
    """

    def __init__(self, *, next_sequence: int, next_timestamp: int,
                 frame_ticks: int = G711_FRAME_TICKS) -> None:
        self.next_sequence = next_sequence % _SEQ_MOD
        self.next_timestamp = next_timestamp % _TS_MOD
        self.frame_ticks = frame_ticks
        self._source: int | None = None
        self._seq_offset = 0
        self._ts_offset = 0
        self._last_in: int | None = None
        self.relayed = 0
        self.dropped_late = 0
        self.source_changes = 0

    def rewrite(self, ssrc: int, sequence_number: int, timestamp: int, marker: bool) -> Rewritten | None:
        """The outgoing fields for this packet, or None to drop it (not newer than the last)."""
        if ssrc != self._source:
            if self._source is not None:
                self.source_changes += 1
            self._source = ssrc
            self._seq_offset = (self.next_sequence - sequence_number) % _SEQ_MOD
            self._ts_offset = (self.next_timestamp - timestamp) % _TS_MOD
            self._last_in = None
            marker = True
        elif self._last_in is not None and not seq_newer(sequence_number, self._last_in):
            self.dropped_late += 1
            return None
        self._last_in = sequence_number
        out_seq = (sequence_number + self._seq_offset) % _SEQ_MOD
        out_ts = (timestamp + self._ts_offset) % _TS_MOD
        self.next_sequence = (out_seq + 1) % _SEQ_MOD
        self.next_timestamp = (out_ts + self.frame_ticks) % _TS_MOD
        self.relayed += 1
        return Rewritten(out_seq, out_ts, marker)


class _AiortcPacket(Protocol):
    """What :func:`tap_rtp` hands on: aiortc's parsed ``RtpPacket`` (its fields we read)."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    marker: int
    payload: bytes


def tap_rtp(receiver: Any, on_packet: Callable[[_AiortcPacket], None]) -> None:
    """Take ``receiver``'s RTP packets (already SRTP-unprotected and parsed by its DTLS
    transport) before its jitter buffer and decoder: see the module docstring."""

    async def _handle_rtp_packet(packet: _AiortcPacket, arrival_time_ms: int = 0) -> None:
        del arrival_time_ms
        on_packet(packet)

    setattr(receiver, "_handle_rtp_packet", _handle_rtp_packet)  # noqa: B010 - this instance only


def prefer_audio_codec(transceiver: Any, encoding: str) -> None:
    """Offer only ``encoding`` (``PCMU``/``PCMA``) on an aiortc audio ``transceiver``, so the core
    can only answer the codec the legacy side speaks (aiortc would otherwise put Opus first)."""
    from aiortc import RTCRtpSender

    mime = f"audio/{encoding}"
    transceiver.setCodecPreferences(
        [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == mime])


def negotiated_payload_type(answer_sdp: str, encoding: str) -> int | None:
    """The payload type the core's SDP answer gives ``encoding`` in its first audio section,
    or None when it answered another codec (or none)."""
    from aiortc.sdp import SessionDescription

    for media in SessionDescription.parse(answer_sdp).media:
        if media.kind != "audio" or not media.port:
            continue
        codecs = media.rtp.codecs
        if codecs and codecs[0].mimeType.lower() == f"audio/{encoding.lower()}":
            return codecs[0].payloadType
        return None
    return None


def quiet_idle_sender(sender: Any) -> bool:
    """Keep ``sender`` (a track-less aiortc ``RTCRtpSender``, before ``send()`` runs) from
    waking every 20 ms: see the module docstring.  False (and the sender left as it is) when
    this aiortc has no such private events, e.g. after an upgrade renamed them."""
    found = [getattr(sender, f"_RTCRtpSender__{name}", None) for name in ("rtp_started", "rtp_exited")]
    events = [e for e in found if isinstance(e, asyncio.Event)]
    if len(events) != len(found):
        log.warning("bridge.fastpath.idle_sender_kept", reason="aiortc_internals_changed")
        return False

    async def _run_rtp(codec: Any) -> None:
        del codec
        for event in events:
            event.set()

    setattr(sender, "_run_rtp", _run_rtp)  # noqa: B010 - this instance only
    return True


class SendSuspended(RuntimeError):
    """aiortc's send coroutine waited (e.g. a TURN channel binding): the packet was dropped."""


def run_to_completion(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that is not expected to suspend, now; :class:`SendSuspended` if it did."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise SendSuspended("the send coroutine suspended")


def rtp_header(payload_type: int, sequence_number: int, timestamp: int, ssrc: int, marker: bool) -> bytes:
    """A 12-byte RTP header (version 2, no padding, extension or CSRC)."""
    return _HEADER.pack(0x80, (0x80 if marker else 0) | payload_type, sequence_number, timestamp, ssrc)


class LegacyToCore:
    """The caller's accepted G.711 packets, re-headed for our WHIP sender and sent on its DTLS
    transport (aiortc's SRTP session protects them).  With ``core_codec`` and ``legacy_codec``
    (the leg's current codec name) a PCMU <-> PCMA switch of the leg is translated
    (:class:`LawFollower`); without them payloads go as they came."""

    def __init__(self, sender: Any, *, payload_type: int, rewriter: RtpRewriter | None = None,
                 core_codec: str | None = None, legacy_codec: Callable[[], str] | None = None) -> None:
        self._sender = sender
        self.payload_type = payload_type
        self.rewriter = rewriter or RtpRewriter(next_sequence=int.from_bytes(os.urandom(2)),
                                                next_timestamp=int.from_bytes(os.urandom(4)))
        self.law = (LawFollower(core_codec, legacy_codec, direction="to_core")
                    if core_codec is not None and legacy_codec is not None else None)
        self.packets = 0
        self.send_errors = 0
        #: Payload octets of the packets sent (the RTP octet count, RFC 3550 6.4.1).
        self.sent_bytes = 0

    def __call__(self, packet: RtpPacket) -> None:
        out = self.rewriter.rewrite(packet.ssrc, packet.sequence_number, packet.timestamp, packet.marker)
        if out is None:
            return
        payload = packet.payload if self.law is None else self.law(packet.payload)
        data = rtp_header(self.payload_type, out.sequence_number, out.timestamp, self._sender._ssrc,
                          out.marker) + payload
        self.packets += 1
        try:
            run_to_completion(self._sender.transport._send_rtp(data))
        except (ConnectionError, SendSuspended) as exc:  # not connected (yet/any more), or TURN
            self.send_errors += 1
            if self.send_errors == 1:
                log.warning("bridge.fastpath.send_failed", direction="to_core", error=type(exc).__name__)
            return
        self.sent_bytes += len(payload)


class CoreToLegacy:
    """The core's G.711 packets for us, re-headed onto the legacy leg's own stream (its SSRC,
    payload type, sequence and timestamp) and sent by the leg (SRTP-protected when SDES).
    A queued gateway DTMF event takes the slot of the audio packet (see the module docstring).
    With ``core_codec`` the payload follows the leg's ``codec`` through a PCMU <-> PCMA switch
    (:class:`LawFollower`)."""

    def __init__(self, leg: Any, *, core_payload_type: int, core_codec: str | None = None) -> None:
        self._leg = leg
        self.core_payload_type = core_payload_type
        self.law = (LawFollower(core_codec, lambda: str(leg.codec.name), direction="to_legacy")
                    if core_codec is not None else None)
        out = leg.outbound
        self.rewriter = RtpRewriter(next_sequence=out.sequence_number, next_timestamp=out.timestamp,
                                    frame_ticks=out.timestamp_step)
        self.packets = 0
        self.dropped_wrong_pt = 0
        #: Every packet the core sent us and its payload octets, relayed or not: what aiortc's
        #: receive statistics would have counted had :func:`tap_rtp` not bypassed them.
        self.received = 0
        self.received_bytes = 0

    def __call__(self, packet: _AiortcPacket) -> None:
        self.received += 1
        self.received_bytes += len(packet.payload)
        if packet.payload_type != self.core_payload_type:
            self.dropped_wrong_pt += 1
            return
        if not self._leg.sending:  # on hold (RFC 3264 8.4): nothing is sent
            return
        out = self.rewriter.rewrite(packet.ssrc, packet.sequence_number, packet.timestamp,
                                    bool(packet.marker))
        if out is None:
            return
        outbound = self._leg.outbound
        event = outbound.dtmf.tick(out.timestamp) if outbound.dtmf is not None else None
        if event is None:
            payload = packet.payload if self.law is None else self.law(packet.payload)
            data = rtp_header(outbound.payload_type, out.sequence_number, out.timestamp, outbound.ssrc,
                              out.marker) + payload
        else:
            data = rtp_header(event.payload_type, out.sequence_number, event.timestamp, outbound.ssrc,
                              event.marker) + event.payload
        self.packets += 1
        self._leg.send_relayed(data, next_sequence=self.rewriter.next_sequence,
                               next_timestamp=self.rewriter.next_timestamp)
