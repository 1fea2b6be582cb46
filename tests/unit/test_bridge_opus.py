"""Opus on the legacy leg (RFC 7587): the codec through PyAV's libopus, its 48 kHz RTP clock,
choosing it in an offer and answering it, the policy key, and the G.722 level convention."""

from __future__ import annotations

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.codecs import AUDIO_CODECS, G722, OPUS, CodecError, codec_by_name
from bridge.legacy_leg import RtpOutbound
from bridge.rtp import RtpPacket
from gateway.policy import DEFAULT_AUDIO_CODECS, PolicyError, parse_policy
from sip.offer_answer import OfferRejected, build_answer, choose_audio
from sip.sdp import SessionDescription
from tests.support.audio import analyse, tone

RATE = 48000
WITH_OPUS = ("OPUS", "PCMU", "PCMA", "G722")


def tone_amplitude(samples: np.ndarray, rate: int, frequency: float) -> float:
    """The amplitude of the sine at ``frequency`` (Hann-windowed FFT, rescaled by the window's gain)."""
    x = np.asarray(samples, dtype=np.float64)
    window = np.hanning(x.size)
    mags = np.abs(np.fft.rfft(x * window)) * 2 / window.sum()
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    return float(mags[np.abs(freqs - frequency) < 10].max())


def encode_all(pcm: np.ndarray) -> list[bytes]:
    encoder = OPUS.encoder()
    n = OPUS.samples_per_frame
    return [encoder.encode(pcm[i:i + n]) for i in range(0, pcm.size - n + 1, n)]


def decode_all(payloads: list[bytes]) -> np.ndarray:
    decoder = OPUS.decoder()
    return np.concatenate([decoder.decode(p) for p in payloads])


# -- the codec ------------------------------------------------------------------------------

def test_opus_runs_on_a_48_khz_clock() -> None:
    assert codec_by_name("opus") is OPUS and AUDIO_CODECS["OPUS"] is OPUS
    assert (OPUS.clock_rate, OPUS.sample_rate) == (48000, 48000)
    assert OPUS.samples_per_frame == 960 and OPUS.timestamp_step == 960


@pytest.mark.parametrize("frequency", [300, 1000, 6000])
def test_opus_round_trip_keeps_frequency_and_level(frequency: int) -> None:
    signal = tone(frequency, 1.0, rate=RATE, amplitude=0.3)
    payloads = encode_all(signal)
    assert len(payloads) == 50 and all(payloads)
    kbits = sum(len(p) for p in payloads) * 8 / 1000
    out = decode_all(payloads)
    assert out.size == signal.size
    spectrum = analyse(out, RATE, skip_seconds=0.1)
    level_db = 20 * np.log10(tone_amplitude(out[RATE // 10:], RATE, frequency) / (0.3 * 32767))
    print(f"{frequency} Hz: {kbits:.1f} kbit/s, level {level_db:+.2f} dB, peak at {spectrum.peak_hz:.0f} Hz")
    assert abs(spectrum.peak_hz - frequency) < 5
    assert abs(level_db) < 1.0


def frame_ms(config: int) -> float:
    """The frame duration of an Opus TOC configuration number (RFC 6716 3.1, table 2)."""
    if config < 12:  # SILK-only
        return (10, 20, 40, 60)[config % 4]
    if config < 16:  # hybrid
        return (10, 20)[config % 2]
    return (2.5, 5, 10, 20)[config % 4]  # CELT-only


def test_opus_payloads_are_mono_20_ms_packets() -> None:
    for payload in encode_all(tone(1000, 0.2, rate=RATE)):
        toc = payload[0]
        assert frame_ms(toc >> 3) == 20, f"config {toc >> 3}"
        assert not toc & 0x04, "stereo flag set: we promised sprop-stereo=0"
        assert toc & 0x03 == 0, "one frame per packet"


def stereo_packets(left: np.ndarray, right: np.ndarray) -> list[bytes]:
    """What an endpoint that ignores our stereo=0 sends: stereo Opus packets (libopus too)."""
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate, ctx.layout, ctx.format, ctx.bit_rate = RATE, "stereo", "s16", 96000
    ctx.open()
    packets: list[bytes] = []
    for i in range(0, left.size, 960):
        interleaved = np.stack([left[i:i + 960], right[i:i + 960]]).T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(interleaved), format="s16", layout="stereo")
        frame.sample_rate, frame.pts = RATE, i
        packets += [bytes(p) for p in ctx.encode(frame)]
    return packets


def test_stereo_from_the_peer_is_downmixed_to_mono() -> None:
    t = tone(1000, 1.0, rate=RATE, amplitude=0.3)
    u = tone(440, 1.0, rate=RATE, amplitude=0.3)
    both = decode_all(stereo_packets(t, t))
    split = decode_all(stereo_packets(t, u))
    assert both.ndim == 1 and both.size == t.size
    full = 0.3 * 32767
    both_db = 20 * np.log10(tone_amplitude(both[RATE // 10:], RATE, 1000) / full)
    left_db = 20 * np.log10(tone_amplitude(split[RATE // 10:], RATE, 1000) / full)
    right_db = 20 * np.log10(tone_amplitude(split[RATE // 10:], RATE, 440) / full)
    print(f"same on both channels: {both_db:+.1f} dB; left only {left_db:+.1f} dB, right only {right_db:+.1f} dB")
    assert abs(both_db) < 1.0  # a mono source sent as stereo keeps its level
    assert abs(left_db + 6) < 1.5 and abs(right_db + 6) < 1.5  # each channel is half the mono mix


def test_opus_encoder_refuses_a_frame_of_the_wrong_size() -> None:
    with pytest.raises(CodecError):
        OPUS.encoder().encode(np.zeros(160, dtype=np.int16))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=400))
def test_hostile_opus_payloads_give_pcm_or_a_codec_error(payload: bytes) -> None:
    decoder = OPUS.decoder()
    try:
        pcm = decoder.decode(payload)
    except CodecError:
        return
    assert pcm.dtype == np.int16 and pcm.ndim == 1 and pcm.size <= 120 * 48  # at most 120 ms per packet
    # The decoder survives whatever came before: a good packet still decodes.
    good = encode_all(tone(1000, 0.02, rate=RATE))[0]
    assert decoder.decode(good).size == 960


def test_packetiser_steps_the_timestamp_by_960_per_20_ms() -> None:
    tx = RtpOutbound(payload_type=111, timestamp_step=OPUS.timestamp_step, encoder=OPUS.encoder(),
                     ssrc=0xABCD, sequence_number=65534, timestamp=2**32 - 960)
    frames = tone(1000, 0.1, rate=RATE).reshape(-1, OPUS.samples_per_frame)
    packets = [RtpPacket.parse(tx.packet(f)) for f in frames]
    assert [p.timestamp for p in packets] == [(2**32 - 960 + 960 * i) & 0xFFFFFFFF for i in range(5)]
    assert [p.sequence_number for p in packets] == [65534, 65535, 0, 1, 2]
    assert {p.payload_type for p in packets} == {111}
    assert decode_all([p.payload for p in packets]).size == 5 * 960


# -- choosing and answering it (RFC 7587 7) -------------------------------------------------

def offer(media: str) -> SessionDescription:
    return SessionDescription.parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n" + media)


OPUS_FIRST = ("m=audio 5004 RTP/AVP 111 0 8 101\r\n"
              "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1;stereo=1\r\n"
              "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
              "a=rtpmap:101 telephone-event/48000\r\na=fmtp:101 0-15\r\na=rtpmap:102 telephone-event/8000\r\n"
              "a=ptime:20\r\n")


def test_opus_is_opt_in_by_policy() -> None:
    assert "OPUS" not in DEFAULT_AUDIO_CODECS
    assert choose_audio(offer(OPUS_FIRST)).encoding == "PCMU"
    mp = parse_policy("version: 1\nmeetings: {m: {audio_codecs: [opus, G722]}, n: {}}\n",
                      "policy.yaml")
    assert mp.for_meeting("m").audio_codecs == ("OPUS", "G722")  # type: ignore[union-attr]
    assert mp.for_meeting("n").audio_codecs == DEFAULT_AUDIO_CODECS  # type: ignore[union-attr]
    with pytest.raises(PolicyError):
        parse_policy("version: 1\nmeetings: {m: {audio_codecs: [opus, OPUS]}}\n", "policy.yaml")


def test_opus_offered_first_is_chosen_with_its_48_khz_telephone_event() -> None:
    choice = choose_audio(offer(OPUS_FIRST), preferred=WITH_OPUS)
    assert (choice.encoding, choice.payload_type, choice.clock_rate) == ("OPUS", 111, 48000)
    assert choice.telephone_event_pt == 101  # the one at the codec's clock, not 102 at 8000
    answer = str(build_answer(offer(OPUS_FIRST), choice, "198.51.100.1", 30000))
    assert "m=audio 30000 RTP/AVP 111 101\r\n" in answer
    assert "a=rtpmap:111 opus/48000/2\r\n" in answer  # always /2 (RFC 7587 7)
    assert "a=fmtp:111 stereo=0;sprop-stereo=0\r\n" in answer
    assert "a=rtpmap:101 telephone-event/48000\r\n" in answer
    assert "useinbandfec" not in answer  # we neither send nor use in-band FEC


def test_the_offerers_order_still_decides() -> None:
    pcmu_first = OPUS_FIRST.replace("RTP/AVP 111 0 8 101", "RTP/AVP 0 111 8 101")
    assert choose_audio(offer(pcmu_first), preferred=WITH_OPUS).encoding == "PCMU"


@pytest.mark.parametrize(("rtpmap", "usable"), [
    ("opus/48000/2", True), ("OPUS/48000/2", True), ("opus/48000", True),
    ("opus/48000/1", False), ("opus/16000/2", False), ("opus/8000", False),
])
def test_opus_rtpmap_variants(rtpmap: str, usable: bool) -> None:
    o = offer(f"m=audio 5004 RTP/AVP 96\r\na=rtpmap:96 {rtpmap}\r\n")
    if usable:
        assert choose_audio(o, preferred=WITH_OPUS).clock_rate == 48000
    else:
        with pytest.raises(OfferRejected):
            choose_audio(o, preferred=WITH_OPUS)


@settings(max_examples=200, deadline=None)
@given(pt=st.integers(96, 127), rate=st.sampled_from([8000, 16000, 48000, 44100, 0]),
       channels=st.sampled_from(["", "/1", "/2", "/6", "/x"]), case=st.sampled_from(["opus", "OPUS", "Opus"]))
def test_any_opus_rtpmap_gives_a_48_khz_choice_or_488(pt: int, rate: int, channels: str, case: str) -> None:
    o = offer(f"m=audio 5004 RTP/AVP {pt}\r\na=rtpmap:{pt} {case}/{rate}{channels}\r\n")
    try:
        choice = choose_audio(o, preferred=WITH_OPUS)
    except OfferRejected as exc:
        assert exc.status == 488
        return
    assert (choice.encoding, choice.clock_rate, choice.payload_type) == ("OPUS", 48000, pt)


# -- the G.722 level convention --------------------------------------------------------------

def test_g722_speaks_the_14_bit_convention_of_other_endpoints() -> None:
    """Our G.722 at unity gain; FFmpeg's own decoder hears it 6 dB lower (it treats the codec's
    PCM as one bit hotter than PJSIP and the ITU 14-bit convention; see G722_LEVEL_SHIFT)."""
    signal = tone(1000, 0.5, rate=16000, amplitude=0.3)
    encoder = G722.encoder()
    payloads = [encoder.encode(signal[i:i + 320]) for i in range(0, signal.size, 320)]
    ours = G722.decoder().decode(b"".join(payloads))
    raw = av.CodecContext.create("g722", "r")
    raw.sample_rate, raw.layout, raw.format = 16000, "mono", "s16"
    plain = np.concatenate([f.to_ndarray().reshape(-1) for f in raw.decode(av.Packet(b"".join(payloads)))])
    full = 0.3 * 32767
    ours_db = 20 * np.log10(tone_amplitude(ours[1600:], 16000, 1000) / full)
    plain_db = 20 * np.log10(tone_amplitude(plain[1600:], 16000, 1000) / full)
    print(f"G.722 round trip {ours_db:+.2f} dB; FFmpeg's unscaled decoder {plain_db:+.2f} dB")
    assert abs(ours_db) < 0.5
    assert abs(plain_db + 6.02) < 0.5
