"""Replays tests/vectors/ (fuzz regression vectors and hand-made edge cases) through the same
properties the atheris targets check (tests/fuzz/fuzz_sip.py, fuzz_sdp.py), without atheris."""

from __future__ import annotations

from pathlib import Path

import pytest

from sip import offer_answer
from sip.message import SipParseError, parse_message
from sip.sdp import SdpParseError, SessionDescription

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def _files(kind: str) -> list[Path]:
    return sorted((VECTORS / kind).iterdir())


@pytest.mark.parametrize("path", _files("sip"), ids=lambda p: p.name)
def test_sip_vector(path: Path) -> None:
    try:
        msg = parse_message(path.read_bytes())
    except SipParseError:
        return
    assert type(parse_message(bytes(msg))) is type(msg)


@pytest.mark.parametrize("path", _files("sdp"), ids=lambda p: p.name)
@pytest.mark.parametrize("video", [False, True])
def test_sdp_vector(path: Path, video: bool) -> None:
    try:
        offer = SessionDescription.parse(path.read_bytes())
    except SdpParseError:
        return
    SessionDescription.parse(str(offer))
    try:
        choice = offer_answer.choose_audio(offer)
    except offer_answer.OfferRejected:
        return
    v = offer_answer.choose_video(offer, enabled=video)
    answer = offer_answer.build_answer(offer, choice, "192.0.2.9", 20000, video=v, video_port=20002)
    assert len(answer.media) == len(offer.media)
    SessionDescription.parse(str(answer))
