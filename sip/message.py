"""SIP messages: parse and serialise requests and responses (RFC 3261 section 7).

``parse_message`` takes one whole message (one UDP datagram, or one frame cut
by :mod:`sip.framing`) and returns a :class:`SipRequest` or :class:`SipResponse`,
or raises :class:`SipParseError` whose ``status`` says which response a UAS
should send (400 unless a more precise one exists, e.g. 505 for a wrong
version) and whose ``partial`` carries what was parsed, so the endpoint can
still answer when the top Via is usable (RFC 3261 8.2 and 18.3).
"""

from __future__ import annotations

import re

from sip.headers import Headers, canonical_name, split_list
from sip.uri import NameAddr, SipUri, UriError, Via, is_token, parse_vias

SIP_VERSION = "SIP/2.0"

#: RFC 3261 21 reason phrases for the codes this stack sends.
REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK",
    400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    420: "Bad Extension", 480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error",
    501: "Not Implemented", 503: "Service Unavailable", 505: "Version Not Supported",
    603: "Decline",
}

#: Largest CSeq sequence number, RFC 3261 8.1.1.5 (must be less than 2**31).
MAX_CSEQ = 2**31 - 1

_REQUEST_LINE = re.compile(r"^([A-Za-z0-9\-.!%*_+`'~]+) (\S+) (SIP/\S+)$")
_STATUS_LINE = re.compile(r"^(SIP/\S+) ([0-9]{3})(?: (.*))?$")
_CSEQ_RE = re.compile(r"^([0-9]{1,10})\s+([A-Za-z0-9\-.!%*_+`'~]+)$")
_SINGLE_VALUED = ("Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Type")


class SipParseError(ValueError):
    """A message that cannot be accepted.

    ``status`` is the response a UAS should send (RFC 3261 8.2, 16.3, 21.4);
    ``partial`` is the message as far as it was parsed, or None when not even
    the start line and headers could be read.
    """

    def __init__(
        self, reason: str, status: int = 400, partial: SipRequest | SipResponse | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.partial = partial


class _Message:
    """Fields shared by requests and responses."""

    headers: Headers
    body: bytes

    # --- convenience accessors (RFC 3261 8.1.1 mandatory fields) ---------------------------
    @property
    def call_id(self) -> str:
        """The Call-ID value ('' when missing)."""
        return (self.headers.get("Call-ID") or "").strip()

    @property
    def cseq(self) -> tuple[int, str]:
        """(sequence number, method) from CSeq; raises SipParseError when malformed."""
        return parse_cseq(self.headers.get("CSeq"))

    @property
    def from_addr(self) -> NameAddr:
        """The From field parsed."""
        return _name_addr(self.headers, "From")

    @property
    def to_addr(self) -> NameAddr:
        """The To field parsed."""
        return _name_addr(self.headers, "To")

    @property
    def vias(self) -> list[Via]:
        """Every Via element, topmost first."""
        return parse_vias(self.headers.get_all("Via"))

    @property
    def top_via(self) -> Via | None:
        """The topmost Via, or None if missing or unparseable."""
        values = self.headers.get_all("Via")
        if not values:
            return None
        elements = split_list(values[0])
        if not elements:
            return None
        try:
            return Via.parse(elements[0])
        except UriError:
            return None

    def _serialise(self, start_line: str) -> bytes:
        lines = [start_line]
        for name, value in self.headers.items():
            if name == "Content-Length":
                continue
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


class SipRequest(_Message):
    """A SIP request (RFC 3261 7.1)."""

    def __init__(
        self, method: str, uri: SipUri | str, headers: Headers | None = None, body: bytes = b""
    ) -> None:
        self.method = method
        self.uri = SipUri.parse(uri) if isinstance(uri, str) else uri
        self.headers = headers if headers is not None else Headers()
        self.body = body

    def __bytes__(self) -> bytes:
        return self._serialise(f"{self.method} {self.uri} {SIP_VERSION}")

    def __repr__(self) -> str:
        return f"SipRequest({self.method} {self.uri}, call_id={self.call_id!r})"


class SipResponse(_Message):
    """A SIP response (RFC 3261 7.2)."""

    def __init__(
        self, status: int, reason: str | None = None, headers: Headers | None = None,
        body: bytes = b"",
    ) -> None:
        self.status = status
        self.reason = REASON_PHRASES.get(status, "") if reason is None else reason
        self.headers = headers if headers is not None else Headers()
        self.body = body

    def __bytes__(self) -> bytes:
        return self._serialise(f"{SIP_VERSION} {self.status} {self.reason}")

    def __repr__(self) -> str:
        return f"SipResponse({self.status} {self.reason}, call_id={self.call_id!r})"


SipMessage = SipRequest | SipResponse


def parse_cseq(value: str | None) -> tuple[int, str]:
    """RFC 3261 20.16: ``CSeq: 1*DIGIT LWS Method``, number below 2**31 (8.1.1.5)."""
    if value is None:
        raise SipParseError("missing CSeq")
    m = _CSEQ_RE.match(value.strip())
    if not m:
        raise SipParseError("malformed CSeq")
    number = int(m.group(1))
    if number > MAX_CSEQ:
        raise SipParseError("CSeq number too large")
    return number, m.group(2)


def _name_addr(headers: Headers, name: str) -> NameAddr:
    value = headers.get(name)
    if value is None:
        raise SipParseError(f"missing {name}")
    try:
        return NameAddr.parse(value)
    except UriError as exc:
        raise SipParseError(f"malformed {name}: {exc}") from None


def _split_head_body(data: bytes) -> tuple[bytes, bytes]:
    """Cut at the first empty line; accept bare LF as well as CRLF (RFC 3261 7.5 leniency)."""
    candidates = [(data.find(b"\r\n\r\n"), 4), (data.find(b"\n\n"), 2)]
    found = [(pos, length) for pos, length in candidates if pos >= 0]
    if not found:
        return data, b""
    pos, length = min(found)
    return data[:pos], data[pos + length :]


def _header_lines(head: str) -> list[str]:
    """Split into lines and unfold LWS continuations (RFC 3261 7.3.1)."""
    raw = re.split(r"\r?\n", head)
    lines: list[str] = []
    for line in raw:
        if line[:1] in (" ", "\t") and lines:
            lines[-1] = lines[-1] + " " + line.strip()
        else:
            lines.append(line)
    return lines


def parse_message(data: bytes) -> SipRequest | SipResponse:
    """Parse one SIP message (a UDP datagram or one stream frame).

    Content-Length (RFC 3261 18.3, 20.14): when absent the body is the rest of
    the datagram; when larger than the bytes present the message is refused
    with 400; extra octets after it are discarded (RFC 4475 3.1.1.8).
    """
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty message")
    head_bytes, rest = _split_head_body(data)
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("header section is not UTF-8") from None
    lines = _header_lines(head)
    start, header_lines = lines[0], lines[1:]

    msg: SipRequest | SipResponse
    m = _REQUEST_LINE.match(start)
    if m:
        method, uri_text, version = m.groups()
        try:
            uri = SipUri.parse(uri_text)
        except UriError as exc:
            raise SipParseError(f"bad Request-URI: {exc}") from None
        msg = SipRequest(method, uri)
    else:
        m = _STATUS_LINE.match(start)
        if not m:
            raise SipParseError("not a SIP start line")
        version, code, reason = m.groups()
        status = int(code)
        if not 100 <= status <= 699:
            raise SipParseError("status code out of range")
        msg = SipResponse(status, reason or "")

    for line in header_lines:
        if not line:
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not is_token(name):
            raise SipParseError(f"malformed header line {line[:40]!r}", partial=msg)
        msg.headers.add(name, value.strip(" \t"))

    if version.upper() != SIP_VERSION:
        raise SipParseError(f"unsupported version {version}", status=505, partial=msg)

    msg.body = _take_body(msg, rest)
    _validate(msg)
    return msg


def _take_body(msg: SipRequest | SipResponse, rest: bytes) -> bytes:
    lengths = msg.headers.values("Content-Length")
    if not lengths:
        return rest
    if len({v.strip() for v in lengths}) != 1:
        raise SipParseError("several Content-Length values", partial=msg)
    text = lengths[0].strip()
    if not text.isdigit() or len(text) > 9:
        raise SipParseError("malformed Content-Length", partial=msg)
    length = int(text)
    if length > len(rest):
        raise SipParseError("Content-Length larger than the message", partial=msg)
    return rest[:length]


def _validate(msg: SipRequest | SipResponse) -> None:
    """RFC 3261 8.1.1 mandatory fields, 8.2.2 request checks, single-valued fields once."""
    h = msg.headers
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if name not in h:
            raise SipParseError(f"missing {name}", partial=msg)
    for name in _SINGLE_VALUED:
        count = len(h.get_all(name)) if name in ("Call-ID", "CSeq") else len(h.values(name))
        if count > 1:
            raise SipParseError(f"several {name} values", partial=msg)
    if not msg.call_id:
        raise SipParseError("empty Call-ID", partial=msg)
    try:
        _, method = msg.cseq
        _ = (msg.from_addr, msg.to_addr)  # parse them: malformed From/To is a 400
        vias = msg.vias
    except SipParseError as exc:
        raise SipParseError(exc.reason, exc.status, partial=msg) from None
    except UriError as exc:
        raise SipParseError(f"malformed Via: {exc}", partial=msg) from None
    if not vias:
        raise SipParseError("missing Via", partial=msg)
    if isinstance(msg, SipRequest):
        if method != msg.method:
            raise SipParseError("CSeq method does not match the request method", partial=msg)
        max_forwards = h.get("Max-Forwards")
        if max_forwards is not None:
            mf = max_forwards.strip()
            if not mf.isdigit() or int(mf) > 255:
                raise SipParseError("malformed Max-Forwards", partial=msg)


def make_response(
    request: SipRequest, status: int, reason: str | None = None, *, to_tag: str | None = None
) -> SipResponse:
    """Build a response copying Via, From, To, Call-ID and CSeq (RFC 3261 8.2.6.2).

    A To-tag is added when given and the request's To has none, which is how a
    UAS creates the dialog identity (RFC 3261 12.1.1).  Works on partially
    parsed requests too (only the fields present are copied).
    """
    resp = SipResponse(status, reason)
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in request.headers.get_all(name):
            if name == "To" and to_tag and status > 100 and not _has_tag(value):
                value = f"{value};tag={to_tag}"
            resp.headers.add(name, value)
    return resp


def _has_tag(to_value: str) -> bool:
    try:
        return NameAddr.parse(to_value).tag is not None
    except UriError:
        return ";tag=" in to_value.replace(" ", "").lower()


__all__ = [
    "REASON_PHRASES",
    "Headers",
    "SipMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "canonical_name",
    "make_response",
    "parse_cseq",
    "parse_message",
]
