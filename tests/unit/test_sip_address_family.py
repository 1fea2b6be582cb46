"""Offers whose ``c=`` is of the other IP family than ``media.address`` (issue 3).

Our RTP socket is bound on one family and cannot send to the other, so such a line is
refused (488, the Warning says why) unless another line fits: an ICE-less offer with an
IPv6 and an IPv4 audio line is answered on the line the gateway can reach.  Golden answers
in ``tests/golden/family/`` (``<offer>.<our family>.answer``; ``ROOMGATE_UPDATE_GOLDEN=1``
rewrites them, review the diff), each checked by hand against RFC 3264 6 (m-line count and
order kept, the refused line with port 0).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from sip.offer_answer import OfferRejected, build_answer, choose_audio
from sip.sdp import SessionDescription

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "family"
OURS = {"ip4": "203.0.113.5", "ip6": "2001:db8::5"}


def _answer_text(offer: bytes, ours: str) -> str:
    sdp = SessionDescription.parse(offer)
    try:
        choice = choose_audio(sdp, media_address=ours)
    except OfferRejected as exc:
        return f"REJECTED {exc.status} {exc.reason}\n"
    answer = build_answer(sdp, choice, ours, 20000, session_id=1, session_version=1)
    return str(answer).replace("\r\n", "\n")


@pytest.mark.parametrize("family", sorted(OURS))
@pytest.mark.parametrize("name", ["mixed_ip6_ip4", "ip6_only"])
def test_golden_answer(name: str, family: str) -> None:
    got = _answer_text((GOLDEN / f"{name}.sdp").read_bytes(), OURS[family])
    golden = GOLDEN / f"{name}.{family}.answer"
    if os.environ.get("ROOMGATE_UPDATE_GOLDEN") == "1":
        golden.write_text(got)
    assert got.splitlines() == golden.read_text().splitlines()


def test_mixed_offer_picks_the_reachable_line() -> None:
    offer = SessionDescription.parse((GOLDEN / "mixed_ip6_ip4.sdp").read_bytes())
    v4 = choose_audio(offer, media_address="127.0.0.1")
    assert (v4.media_index, v4.remote_address, v4.encoding) == (1, "192.0.2.10", "PCMA")
    v6 = choose_audio(offer, media_address="::1")
    assert (v6.media_index, v6.remote_address, v6.encoding) == (0, "2001:db8::10", "PCMU")
    # Without a media address (callers that do not know it) the first usable line, as before.
    assert choose_audio(offer).media_index == 0


def test_other_family_only_is_refused_with_the_reason() -> None:
    offer = SessionDescription.parse((GOLDEN / "ip6_only.sdp").read_bytes())
    with pytest.raises(OfferRejected) as refused:
        choose_audio(offer, media_address="198.51.100.1")
    assert refused.value.status == 488
    assert "c= is IP6 and our media address is IP4" in refused.value.reason


def test_hold_address_is_not_a_family() -> None:
    text = (GOLDEN / "ip6_only.sdp").read_text().replace("IN IP6 2001:db8::10", "IN IP4 0.0.0.0")
    assert choose_audio(SessionDescription.parse(text), media_address="::1").remote_address == "0.0.0.0"


_V4 = hs.ip_addresses(v=4).map(str).filter(lambda a: a != "0.0.0.0")
_V6 = hs.ip_addresses(v=6).map(str).filter(lambda a: a != "::")


@settings(max_examples=80, deadline=None)
@given(lines=hs.lists(hs.one_of(_V4, _V6), min_size=1, max_size=4), ours=hs.one_of(_V4, _V6))
def test_chosen_line_is_always_reachable_or_the_offer_refused(lines: list[str], ours: str) -> None:
    media = "".join(
        f"m=audio {40000 + 2 * i} RTP/AVP 0\r\nc=IN {'IP6' if ':' in a else 'IP4'} {a}\r\n"
        for i, a in enumerate(lines))
    offer = SessionDescription.parse(f"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n{media}")
    family = ":" in ours
    try:
        choice = choose_audio(offer, media_address=ours)
    except OfferRejected as exc:
        assert all((":" in a) != family for a in lines) and "no RTP could flow" in exc.reason
        return
    assert (":" in choice.remote_address) == family
    first = next(i for i, a in enumerate(lines) if (":" in a) == family)
    assert choice.media_index == first
