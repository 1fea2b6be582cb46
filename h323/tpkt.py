"""TPKT framing (RFC 1006 section 6, as used by H.225.0 section 7.1 and H.245 on TCP).

Each PDU travels as ``03 00 LL LL`` + payload, where ``LLLL`` is the big-endian length of the
whole packet *including* the 4-byte header.  :class:`TpktFramer` buffers a byte stream (a
header may arrive alone in one TCP segment, several packets in one segment) and returns whole
payloads; a bad version or length raises :class:`~h323.errors.TpktError` and the connection
should be closed, since the stream can no longer be framed.
"""

from __future__ import annotations

from h323.errors import TpktError

VERSION = 3
HEADER_LEN = 4
#: Largest packet RFC 1006 allows (16-bit length field includes the header).
MAX_PACKET = 0xFFFF
#: Smallest packet we accept: the header and at least one payload octet.
MIN_PACKET = HEADER_LEN + 1

__all__ = ["HEADER_LEN", "MAX_PACKET", "TpktError", "TpktFramer", "encode"]


def encode(payload: bytes) -> bytes:
    """Wrap ``payload`` in a TPKT header (RFC 1006 section 6)."""
    total = len(payload) + HEADER_LEN
    if not payload or total > MAX_PACKET:
        raise TpktError(f"payload of {len(payload)} octets cannot be carried in one TPKT")
    return bytes((VERSION, 0, total >> 8, total & 0xFF)) + payload


class TpktFramer:
    """Accumulates stream bytes and yields whole TPKT payloads in order.

    ``max_packet`` bounds what one packet may claim (a hostile length would otherwise make
    us buffer up to 64 KiB per connection for nothing).
    """

    def __init__(self, max_packet: int = MAX_PACKET) -> None:
        if not MIN_PACKET <= max_packet <= MAX_PACKET:
            raise ValueError("max_packet out of range")
        self._buf = bytearray()
        self._max = max_packet
        self._broken: TpktError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return every payload now complete.  Raises :class:`TpktError` on a bad
        header (and again on every later call: a broken stream stays broken)."""
        if self._broken is not None:
            raise self._broken
        self._buf.extend(data)
        out: list[bytes] = []
        while len(self._buf) >= HEADER_LEN:
            version, reserved, hi, lo = self._buf[:HEADER_LEN]
            if version != VERSION:
                self._broken = TpktError(f"TPKT version {version}, expected {VERSION}")
                raise self._broken
            length = (hi << 8) | lo
            if length < MIN_PACKET or length > self._max:
                self._broken = TpktError(f"TPKT length {length} out of bounds")
                raise self._broken
            # RFC 1006 says the reserved octet is 0; be liberal in what we accept.
            del reserved
            if len(self._buf) < length:
                break
            out.append(bytes(self._buf[HEADER_LEN:length]))
            del self._buf[:length]
        return out

    @property
    def buffered(self) -> int:
        """Octets waiting for the rest of a packet."""
        return len(self._buf)
