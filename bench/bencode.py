"""Minimal bencode (BitTorrent encoding), the wire format of rtpengine's ng control protocol."""

from __future__ import annotations

from typing import Any


def encode(value: Any) -> bytes:
    """Encode ints, str/bytes, lists and dicts (keys sorted, as bencode requires)."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes | bytearray):
        return b"%d:%s" % (len(value), bytes(value))
    if isinstance(value, list | tuple):
        return b"l" + b"".join(encode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(encode(k) + encode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Any:
    """Decode one bencoded value; byte strings come back as ``str`` when they are UTF-8."""
    value, end = _decode(data, 0)
    if end != len(data):
        raise ValueError(f"trailing data after bencoded value at {end}")
    return value


def _decode(data: bytes, pos: int) -> tuple[Any, int]:
    lead = data[pos:pos + 1]
    if lead == b"i":
        end = data.index(b"e", pos)
        return int(data[pos + 1:end]), end + 1
    if lead in (b"l", b"d"):
        items: list[Any] = []
        pos += 1
        while data[pos:pos + 1] != b"e":
            item, pos = _decode(data, pos)
            items.append(item)
        if lead == b"l":
            return items, pos + 1
        return dict(zip(items[0::2], items[1::2], strict=True)), pos + 1
    colon = data.index(b":", pos)
    length = int(data[pos:colon])
    raw = data[colon + 1:colon + 1 + length]
    try:
        return raw.decode(), colon + 1 + length
    except UnicodeDecodeError:
        return raw, colon + 1 + length
