"""Audio codecs of the legacy leg (PCMU, PCMA, G.722, Opus) and the resampler toward aiortc's 48 kHz.

Every codec turns one 20 ms frame of int16 mono PCM at the codec's *sample rate*
into one RTP payload and back. Encoders and decoders are objects, not functions,
because G.722 is an ADPCM codec whose state runs across frames: one encoder and
one decoder per direction per call, never shared between calls.

G.722's RTP clock is 8000 Hz although it samples at 16000 Hz (RFC 3551 section
4.5.2, an error kept for compatibility), so the RTP timestamp step is 160 per
20 ms for all three codecs while G.722's PCM frame is 320 samples.

Opus (RFC 7587) runs at 48 kHz, the meeting's own rate, so it needs no resampling: its RTP
clock is 48000 and the timestamp step 960 per 20 ms. It is always announced as
``opus/48000/2`` in SDP although we send mono (see :class:`OpusEncoder`).

G.711 goes through lookup tables built once from ``audioop`` (ITU-T G.711 A-law
and mu-law with the standard segment tables); ``audioop`` is deprecated in 3.11
and removed in 3.13, so it is touched only here, at import, with its warning
silenced. G.722 goes through FFmpeg's codec via PyAV.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import av
import numpy as np

from bridge.backlog import BacklogDrain

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

#: Every legacy codec here sends one frame per 20 ms (the RFC 3551 default ptime).
FRAME_MS = 20


class CodecError(ValueError):
    """A payload or PCM frame the codec cannot handle (wrong size, corrupt data)."""


class AudioEncoder(Protocol):
    """Stateful PCM -> RTP payload for one direction of one call."""

    def encode(self, pcm: np.ndarray) -> bytes: ...


class AudioDecoder(Protocol):
    """Stateful RTP payload -> PCM for one direction of one call."""

    def decode(self, payload: bytes) -> np.ndarray: ...


@dataclass(frozen=True)
class AudioCodec:
    """A legacy audio codec: its RTP identity and how to build per-call encoder/decoder objects."""

    name: str
    payload_type: int
    clock_rate: int
    sample_rate: int
    _encoder: Callable[[], AudioEncoder]
    _decoder: Callable[[], AudioDecoder]

    @property
    def samples_per_frame(self) -> int:
        """PCM samples in one 20 ms frame at the codec's sample rate (160; 320 for G.722, 960 for Opus)."""
        return self.sample_rate * FRAME_MS // 1000

    @property
    def timestamp_step(self) -> int:
        """RTP timestamp increment per 20 ms frame (160 for G.711 and G.722, which ticks at 8 kHz; 960 for Opus)."""
        return self.clock_rate * FRAME_MS // 1000

    def encoder(self) -> AudioEncoder:
        return self._encoder()

    def decoder(self) -> AudioDecoder:
        return self._decoder()


def silence(samples: int) -> np.ndarray:
    """``samples`` of digital silence as int16."""
    return np.zeros(samples, dtype=np.int16)


# -- G.711 ----------------------------------------------------------------------------

def _g711_tables(to_law: Callable[[bytes, int], bytes], from_law: Callable[[bytes, int], bytes]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(encode table indexed by uint16 view of int16 PCM, decode table indexed by code byte)."""
    all_pcm = np.arange(-32768, 32768, dtype=np.int16)
    enc = np.frombuffer(to_law(all_pcm.tobytes(), 2), dtype=np.uint8)
    encode_table = np.empty(65536, dtype=np.uint8)
    encode_table[all_pcm.view(np.uint16)] = enc
    decode_table = np.frombuffer(from_law(bytes(range(256)), 2), dtype=np.int16).copy()
    return encode_table, decode_table


_ULAW_ENC, _ULAW_DEC = _g711_tables(audioop.lin2ulaw, audioop.ulaw2lin)
_ALAW_ENC, _ALAW_DEC = _g711_tables(audioop.lin2alaw, audioop.alaw2lin)


class G711Encoder:
    """G.711 is stateless, but it keeps the same object interface as G.722."""

    def __init__(self, table: np.ndarray) -> None:
        self._table = table

    def encode(self, pcm: np.ndarray) -> bytes:
        return self._table[np.asarray(pcm, dtype=np.int16).view(np.uint16)].tobytes()


class G711Decoder:
    def __init__(self, table: np.ndarray) -> None:
        self._table = table

    def decode(self, payload: bytes) -> np.ndarray:
        return self._table[np.frombuffer(payload, dtype=np.uint8)]


# -- G.722 ----------------------------------------------------------------------------

def _g722_context(mode: Literal["r", "w"]) -> Any:
    """An FFmpeg G.722 context ("w" encodes, "r" decodes) for 16 kHz mono s16."""
    ctx = av.CodecContext.create("g722", mode)
    ctx.sample_rate = 16000
    ctx.layout = "mono"
    ctx.format = "s16"
    return ctx


G722_LEVEL_SHIFT = 1
"""Bits between FFmpeg's G.722 PCM scale and the 16-bit scale other endpoints use.

G.722 codes 14-bit PCM; PJSIP (and the ITU convention) maps 16-bit PCM to it with a 2-bit
shift, while FFmpeg's codec (derived from spandsp) treats its s16 samples as one bit
"hotter". Measured against pjsua2 (tests/interop/test_media_multiparty.py), an unscaled
FFmpeg decode came out 6 dB under the same tone sent as PCMU, and what FFmpeg encoded
played 6 dB over it. So we halve before encoding and double (saturating) after decoding.
"""


class G722Encoder:
    """One FFmpeg G.722 encoder context: ADPCM state carries over from frame to frame."""

    def __init__(self) -> None:
        self._ctx = _g722_context("w")
        self._ctx.open()
        self._pts = 0

    def encode(self, pcm: np.ndarray) -> bytes:
        scaled = np.asarray(pcm, dtype=np.int16) >> G722_LEVEL_SHIFT  # see G722_LEVEL_SHIFT
        samples = np.ascontiguousarray(scaled, dtype=np.int16).reshape(1, -1)
        pts, self._pts = self._pts, self._pts + samples.shape[1]
        return _encode_frame(self._ctx, samples, 16000, pts)


def _encode_frame(ctx: Any, samples: np.ndarray, rate: int, pts: int) -> bytes:
    """One s16 mono frame (``samples`` shaped ``(1, n)``) at ``pts`` through a PyAV encoder
    context: the packet(s) it gives, joined (empty while the encoder is still filling up)."""
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = rate
    frame.pts = pts
    return b"".join(bytes(p) for p in ctx.encode(frame))


def _decode_packet(ctx: Any, payload: bytes, name: str) -> np.ndarray:
    """The int16 samples one RTP payload decodes to through a PyAV decoder context (none for an
    empty payload); :class:`CodecError` naming ``name`` when FFmpeg cannot decode it."""
    if not payload:
        return silence(0)
    try:
        frames = ctx.decode(av.Packet(payload))
    except av.error.FFmpegError as exc:  # type: ignore[attr-defined]
        raise CodecError(f"{name} payload of {len(payload)} bytes could not be decoded: {exc}") from exc
    if not frames:
        return silence(0)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16, copy=False)


class G722Decoder:
    """One FFmpeg G.722 decoder context (4 bits per 16 kHz sample pair -> 2 samples per byte)."""

    def __init__(self) -> None:
        self._ctx = _g722_context("r")

    def decode(self, payload: bytes) -> np.ndarray:
        pcm = _decode_packet(self._ctx, payload, "G.722")
        if not pcm.size:
            return pcm
        return np.clip(pcm.astype(np.int32) << G722_LEVEL_SHIFT, -32768, 32767).astype(np.int16)


# -- Opus -----------------------------------------------------------------------------

OPUS_RATE = 48000
OPUS_BITRATE = 32000
"""Mono speech toward a room system: 32 kbit/s is fullband-transparent for voice (RFC 7587 3.1.1)."""


def _opus_context(mode: Literal["r", "w"]) -> Any:
    """A libopus context (through PyAV) for 48 kHz mono s16 in both directions."""
    ctx = av.CodecContext.create("libopus", mode)
    ctx.sample_rate = OPUS_RATE
    ctx.layout = "mono"
    ctx.format = "s16"
    return ctx


class OpusEncoder:
    """One libopus encoder: 20 ms mono frames in, one Opus packet out (RFC 7587).

    We always send mono (``stereo=0`` in our fmtp): the legacy side hears the meeting's
    mono mix, and a mono stream costs half the bits. ``application=voip`` tunes libopus
    for speech. The encoder is stateful (prediction, the 6.5 ms look-ahead), so one per call.
    """

    def __init__(self) -> None:
        self._ctx = _opus_context("w")
        self._ctx.bit_rate = OPUS_BITRATE
        self._ctx.options = {"application": "voip", "frame_duration": str(FRAME_MS)}
        self._ctx.open()
        self._pts = 0

    def encode(self, pcm: np.ndarray) -> bytes:
        samples = np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1)
        if samples.shape[1] != OPUS_RATE * FRAME_MS // 1000:
            raise CodecError(f"Opus frames are {FRAME_MS} ms: got {samples.shape[1]} samples, "
                             f"want {OPUS_RATE * FRAME_MS // 1000}")
        pts, self._pts = self._pts, self._pts + samples.shape[1]
        return _encode_frame(self._ctx, samples, OPUS_RATE, pts)


class OpusDecoder:
    """One libopus decoder with mono output.

    The peer may send stereo whatever our fmtp says (``stereo=0`` is only a preference,
    RFC 7587 6.1); libopus, opened for one channel, decodes a stereo packet as the mean of
    both channels, so the downmix costs nothing here. Any frame size the packet's TOC
    announces (2.5 to 120 ms) decodes; the caller gets however many samples it holds.
    """

    def __init__(self) -> None:
        self._ctx = _opus_context("r")

    def decode(self, payload: bytes) -> np.ndarray:
        return _decode_packet(self._ctx, payload, "Opus")


PCMU = AudioCodec("PCMU", 0, 8000, 8000, lambda: G711Encoder(_ULAW_ENC), lambda: G711Decoder(_ULAW_DEC))
PCMA = AudioCodec("PCMA", 8, 8000, 8000, lambda: G711Encoder(_ALAW_ENC), lambda: G711Decoder(_ALAW_DEC))
G722 = AudioCodec("G722", 9, 8000, 16000, G722Encoder, G722Decoder)
#: Opus has no static payload type; 111 is only a default, the offer's number is what is used.
OPUS = AudioCodec("OPUS", 111, OPUS_RATE, OPUS_RATE, OpusEncoder, OpusDecoder)

#: The legacy audio codecs by SDP encoding name (upper case, as ``choose_audio`` reports it).
AUDIO_CODECS: dict[str, AudioCodec] = {c.name: c for c in (PCMU, PCMA, G722, OPUS)}


def codec_by_name(encoding: str) -> AudioCodec:
    """The codec for an SDP encoding name (case-insensitive); ``KeyError`` with the known names if absent."""
    try:
        return AUDIO_CODECS[encoding.upper()]
    except KeyError:
        raise KeyError(f"unsupported audio codec {encoding!r}; supported: {sorted(AUDIO_CODECS)}") from None


# -- resampling -------------------------------------------------------------------------

class Resampler:
    """Stateful mono int16 resampler (FFmpeg's swresample through PyAV), one per direction.

    State matters: the filter's history spans frame boundaries, so feeding 20 ms
    blocks through one object gives a continuous signal where per-block
    resampling would click at every boundary. Output sizes vary around the
    nominal ratio (the filter delay shows up as a short first block), so callers
    queue the output in a :class:`PcmFifo` and take fixed 20 ms blocks from it.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._r = None if in_rate == out_rate else av.AudioResampler(format="s16", layout="mono", rate=out_rate)

    def process(self, pcm: np.ndarray) -> np.ndarray:
        samples = np.ascontiguousarray(pcm, dtype=np.int16)
        if self._r is None or samples.size == 0:
            return samples
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.in_rate
        out = [f.to_ndarray().reshape(-1) for f in self._r.resample(frame)]
        return np.concatenate(out) if out else silence(0)


def downmix(frame_array: np.ndarray, channels: int, planar: bool) -> np.ndarray:
    """Mono int16 from a PyAV audio ndarray (packed: shape (1, n*ch) interleaved; planar: (ch, n))."""
    if channels <= 1:
        return np.asarray(frame_array, dtype=np.int16).reshape(-1)
    x = frame_array.reshape(channels, -1) if planar else frame_array.reshape(-1, channels).T
    return (x.astype(np.int32).sum(axis=0) // channels).astype(np.int16)


class PcmFifo:
    """A bounded FIFO of int16 samples between two clocks.

    Two bounds: past ``max_samples`` the oldest samples go at once (a hard cap, so a faster
    producer can never make the delay grow without bound), and with ``target_samples`` set a
    :class:`~bridge.backlog.BacklogDrain` sheds whatever has stood above that target for a
    whole window of pops, so the backlog a stall leaves behind drains instead of staying as
    delay up to the cap for the rest of the call."""

    def __init__(self, max_samples: int, target_samples: int | None = None, *, name: str = "pcm") -> None:
        self.max_samples = max_samples
        self._buf = silence(0)
        self.dropped_samples = 0
        """Samples discarded by the cap or by backlog shedding."""
        self._drain = None if target_samples is None else BacklogDrain(target_samples, queue=name)

    def __len__(self) -> int:
        return int(self._buf.size)

    @property
    def shed_samples(self) -> int:
        """Samples dropped by backlog shedding (part of ``dropped_samples``)."""
        return 0 if self._drain is None else self._drain.shed

    def push(self, pcm: np.ndarray) -> None:
        buf = np.concatenate((self._buf, np.asarray(pcm, dtype=np.int16).reshape(-1)))
        excess = buf.size - self.max_samples
        if excess > 0:
            self.dropped_samples += excess
            buf = buf[excess:]
        self._buf = buf

    def pop(self, n: int) -> np.ndarray | None:
        """Exactly ``n`` samples, or None (and nothing consumed) if fewer are queued.

        Every call is one read of the consumer's clock for the backlog drain, underruns included.
        """
        if self._buf.size < n:
            out = None
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        if self._drain is not None:
            shed = self._drain.after_read(int(self._buf.size))
            if shed:
                self.dropped_samples += shed
                self._buf = self._buf[shed:]
        return out

    def clear(self) -> None:
        self._buf = silence(0)
        if self._drain is not None:
            self._drain.reset()
