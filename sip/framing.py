"""Cut a SIP byte stream (TCP) into messages by Content-Length (RFC 3261 18.3).

On a stream, Content-Length is mandatory and is the only way to find where a
message ends.  CRLFs between messages are keep-alives (RFC 5626 4.4.1 double
CRLF "ping") or stray line ends (RFC 3261 7.5) and are skipped.  A header
section that never ends, or a bad Content-Length, makes the stream unusable:
the framer raises :class:`FramingError` and the transport closes the connection.
"""

from __future__ import annotations

import re

#: Largest header section we buffer before calling the peer hostile.
MAX_HEADER_BYTES = 64 * 1024
#: Largest body we accept on a stream.
MAX_BODY_BYTES = 1024 * 1024

_CL_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\S*)[ \t]*$", re.IGNORECASE | re.MULTILINE)


class FramingError(ValueError):
    """The stream cannot be framed any more (the connection should be closed)."""


class StreamFramer:
    """Accumulates stream bytes and yields whole messages (keep-alive CRLFs are dropped)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return every complete message now available (in order)."""
        self._buf.extend(data)
        out: list[bytes] = []
        while True:
            self._skip_keepalives()
            if not self._buf:
                break
            end = self._buf.find(b"\r\n\r\n")
            sep = 4
            lf_end = self._buf.find(b"\n\n")
            if lf_end >= 0 and (end < 0 or lf_end < end):
                end, sep = lf_end, 2
            if end < 0:
                if len(self._buf) > MAX_HEADER_BYTES:
                    raise FramingError("header section too long")
                break
            head = bytes(self._buf[:end])
            lengths = [m.group(1) for m in _CL_RE.finditer(head)]
            if not lengths:
                raise FramingError("no Content-Length on a stream transport")
            if len(set(lengths)) != 1 or not lengths[0].isdigit():
                raise FramingError("bad Content-Length on a stream transport")
            length = int(lengths[0])
            if length > MAX_BODY_BYTES:
                raise FramingError("body too large")
            total = end + sep + length
            if len(self._buf) < total:
                break
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]
        return out

    def _skip_keepalives(self) -> None:
        i = 0
        while i < len(self._buf) and self._buf[i] in (0x0D, 0x0A):
            i += 1
        if i:
            del self._buf[:i]

    @property
    def buffered(self) -> int:
        """Bytes waiting for the rest of a message."""
        return len(self._buf)
