"""Golden SDP answers (RFC 3264 section 6) to real room-system offers and to the shapes of issue 3.

Every INVITE/SDP in ``../shared/corpus/sip/roomsys/`` that carries an offer, plus the offers in
``tests/golden/offers/``, is answered twice -- video off (every video line
refused with port 0, a meeting with ``video: false``) and video on
(:func:`sip.offer_answer.choose_video`: H.264 passthrough, ``bridge.video_leg``)
-- and compared line by line with ``tests/golden/<name>.<mode>.answer``.  Session id/version
are fixed and SDES keys masked, so the goldens are stable.  Each golden was reviewed by hand
against RFC 3264 6/6.1 (m-line count and order kept, refused lines with port 0, offerer's
payload numbers, direction mirrored), RFC 4568 7.1.1, RFC 6184 8.2.2 and RFC 4585 4.2.
``ROOMGATE_UPDATE_GOLDEN=1`` rewrites them (review the diff before committing).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from sip import offer_answer
from sip.sdp import SessionDescription

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus" / "sip" / "roomsys"
GOLDEN = ROOT / "tests" / "golden"
LOCAL_ADDRESS = "203.0.113.5"  # what media.public_address would advertise (RFC 5737 TEST-NET-3)
AUDIO_PORT, VIDEO_PORT = 20000, 20002


def _offers() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if CORPUS.is_dir():
        for path in sorted(CORPUS.iterdir()):
            data = path.read_bytes()
            if path.suffix == ".sip" and data.startswith(b"INVITE "):
                out[path.stem] = data.split(b"\r\n\r\n", 1)[1]
            elif path.suffix == ".sdp":
                out[path.stem] = data
    for path in sorted((GOLDEN / "offers").glob("*.sdp")):
        out[f"own_{path.stem}"] = path.read_bytes()
    return out


OFFERS = _offers()
CORPUS_CASES = [n for n in OFFERS if not n.startswith("own_")]


def _answer_text(offer_bytes: bytes, video_enabled: bool) -> str:
    offer = SessionDescription.parse(offer_bytes)
    try:
        choice = offer_answer.choose_audio(offer)
    except offer_answer.OfferRejected as exc:
        return f"REJECTED {exc.status} {exc.reason}\n"
    video = offer_answer.choose_video(offer, enabled=video_enabled)
    answer = offer_answer.build_answer(offer, choice, LOCAL_ADDRESS, AUDIO_PORT, session_id=1,
                                       session_version=1, video=video, video_port=VIDEO_PORT)
    text = str(answer).replace("\r\n", "\n")
    # Our SDES keys are fresh per call: mask them (the tag and suite are what is checked).
    return re.sub(r"inline:[A-Za-z0-9+/=]+", "inline:<KEY>", text)


def test_corpus_is_present() -> None:
    """CI has ../shared beside the checkout; the roomsys corpus must be there (7 offers + 2 SDP)."""
    assert len(CORPUS_CASES) >= 9, CORPUS_CASES


@pytest.mark.parametrize("mode", ["video-off", "video-on"])
@pytest.mark.parametrize("name", sorted(OFFERS))
def test_golden_answer(name: str, mode: str) -> None:
    got = _answer_text(OFFERS[name], video_enabled=(mode == "video-on"))
    golden = GOLDEN / f"{name}.{mode}.answer"
    if os.environ.get("ROOMGATE_UPDATE_GOLDEN") == "1":
        golden.write_text(got)
    want = golden.read_text()
    assert got.splitlines() == want.splitlines()


@pytest.mark.parametrize("name", sorted(OFFERS))
def test_answer_keeps_mline_count_and_refuses_video_when_off(name: str) -> None:
    """RFC 3264 6: as many m-lines as offered; with video off no video line has a port."""
    offer = SessionDescription.parse(OFFERS[name])
    try:
        choice = offer_answer.choose_audio(offer)
    except offer_answer.OfferRejected:
        return
    assert offer_answer.choose_video(offer, enabled=False) is None  # policy ``video: false``
    answer = offer_answer.build_answer(offer, choice, LOCAL_ADDRESS, AUDIO_PORT)
    assert len(answer.media) == len(offer.media)
    for o, a in zip(offer.media, answer.media):
        assert (a.media, a.proto) == (o.media, o.proto)
        if a.media == "video":
            assert a.port == 0
