"""sip.info: the INFO bodies we send are built next to the parser that reads them, so they
round-trip, and no INFO body makes the parser raise anything but its typed errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.info import (
    ACCEPTED_TYPES,
    MEDIA_CONTROL_TYPE,
    DtmfInfo,
    InfoBodyError,
    KeyframeRequest,
    classify,
    content_type,
    dtmf_relay_body,
    picture_fast_update_body,
)


def test_picture_fast_update_round_trips_as_a_keyframe_request() -> None:
    body = picture_fast_update_body()
    assert MEDIA_CONTROL_TYPE in ACCEPTED_TYPES
    assert classify(content_type(f"{MEDIA_CONTROL_TYPE}; charset=utf-8"), body) == KeyframeRequest()
    # The full RFC 5168 schema form room systems parse, not only the bare element.
    assert b"<vc_primitive>" in body and b"<to_encoder>" in body
    assert body.startswith(b"<?xml") and body.rstrip().endswith(b"</media_control>")


def test_a_media_control_body_without_the_primitive_is_a_typed_error() -> None:
    with pytest.raises(InfoBodyError):
        classify(MEDIA_CONTROL_TYPE, picture_fast_update_body().replace(b"picture_fast_update", b"x"))


@given(st.sampled_from("0123456789*#ABCD"), st.integers(min_value=0, max_value=10_000))
def test_dtmf_relay_round_trips(digit: str, duration_ms: int) -> None:
    assert classify("application/dtmf-relay", dtmf_relay_body(digit, duration_ms)) == DtmfInfo(digit, duration_ms)


@settings(max_examples=400)
@given(st.sampled_from([*ACCEPTED_TYPES, "text/plain", ""]), st.binary(max_size=300))
def test_hostile_bodies_give_a_typed_error_or_an_answer(ctype: str, body: bytes) -> None:
    try:
        said = classify(ctype, body)
    except (InfoBodyError, LookupError):
        return
    assert said is None or isinstance(said, DtmfInfo | KeyframeRequest)
