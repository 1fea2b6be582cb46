"""TPKT framing (RFC 1006 section 6) with a buffering framer."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from h323 import tpkt
from h323.errors import TpktError


def test_encode_header() -> None:
    assert tpkt.encode(b"\x08\x02") == b"\x03\x00\x00\x06\x08\x02"


def test_encode_bounds() -> None:
    with pytest.raises(TpktError):
        tpkt.encode(b"")
    assert len(tpkt.encode(b"x" * (tpkt.MAX_PACKET - 4))) == tpkt.MAX_PACKET
    with pytest.raises(TpktError):
        tpkt.encode(b"x" * (tpkt.MAX_PACKET - 3))


def test_header_alone_in_one_segment() -> None:
    f = tpkt.TpktFramer()
    assert f.feed(b"\x03\x00\x00\x07") == []
    assert f.buffered == 4
    assert f.feed(b"abc") == [b"abc"]
    assert f.buffered == 0


def test_header_split_inside() -> None:
    f = tpkt.TpktFramer()
    assert f.feed(b"\x03") == []
    assert f.feed(b"\x00\x00") == []
    assert f.feed(b"\x06xy\x03") == [b"xy"]
    assert f.feed(b"\x00\x00\x05z") == [b"z"]


def test_several_packets_in_one_segment() -> None:
    data = tpkt.encode(b"one") + tpkt.encode(b"two") + tpkt.encode(b"three")[:5]
    f = tpkt.TpktFramer()
    assert f.feed(data) == [b"one", b"two"]
    assert f.feed(tpkt.encode(b"three")[5:]) == [b"three"]


@pytest.mark.parametrize("header", [b"\x02\x00\x00\x08", b"\x03\x00\x00\x04", b"\x03\x00\x00\x00",
                                    b"\x03\x00\x00\x03"])
def test_bad_header_is_typed_and_sticky(header: bytes) -> None:
    f = tpkt.TpktFramer()
    with pytest.raises(TpktError) as info:
        f.feed(header + b"rest")
    assert info.value.cause == 95
    with pytest.raises(TpktError):
        f.feed(tpkt.encode(b"fine"))


def test_max_packet_bound() -> None:
    f = tpkt.TpktFramer(max_packet=100)
    assert f.feed(tpkt.encode(b"x" * 96)) == [b"x" * 96]
    with pytest.raises(TpktError):
        f.feed(b"\x03\x00\x00\x65")
    with pytest.raises(ValueError):
        tpkt.TpktFramer(max_packet=4)


payloads = st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads, st.data())
def test_random_chunking_reassembles_exactly(items: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(tpkt.encode(p) for p in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    f = tpkt.TpktFramer()
    out: list[bytes] = []
    prev = 0
    for c in [*cuts, len(stream)]:
        out += f.feed(stream[prev:c])
        prev = c
    assert out == items
    assert f.buffered == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=10))
def test_random_bytes_only_raise_the_typed_error(chunks: list[bytes]) -> None:
    f = tpkt.TpktFramer()
    got: list[bytes] = []
    try:
        for c in chunks:
            got += f.feed(c)
    except TpktError:
        return
    total = sum(len(c) for c in chunks)
    assert sum(len(p) + 4 for p in got) + f.buffered == total
