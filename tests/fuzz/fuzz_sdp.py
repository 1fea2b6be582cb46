"""atheris fuzz target for the SDP parser (RFC 8866) and the offer/answer code (RFC 3264).

Run: ``python tests/fuzz/fuzz_sdp.py -max_total_time=600 [corpus_dir]``.
Property checked: :meth:`sip.sdp.SessionDescription.parse` either returns a description,
whose serialisation re-parses, or raises :class:`sip.sdp.SdpParseError`; a parsed offer goes
through ``choose_audio``/``choose_video``/``build_answer`` raising nothing but
:class:`sip.offer_answer.OfferRejected`, and the answer has as many m-lines as the offer
(RFC 3264 section 6).  Crashes found are kept in ``tests/vectors/sdp/``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import atheris

with atheris.instrument_imports():
    from sip import offer_answer
    from sip.sdp import SdpParseError, SessionDescription


def check(data: bytes) -> None:
    """Parse ``data`` as an SDP offer and answer it; only the typed errors may escape."""
    try:
        offer = SessionDescription.parse(data)
    except SdpParseError:
        return
    SessionDescription.parse(str(offer))
    try:
        choice = offer_answer.choose_audio(offer)
    except offer_answer.OfferRejected:
        return
    video = offer_answer.choose_video(offer, enabled=True)  # the negotiation behind the flag
    answer = offer_answer.build_answer(offer, choice, "192.0.2.1", 20000, video=video,
                                       video_port=20002)
    assert len(answer.media) == len(offer.media)
    SessionDescription.parse(str(answer))


def main() -> None:
    """libFuzzer entry point."""
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
