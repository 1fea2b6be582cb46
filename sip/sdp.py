"""SDP session descriptions: parse and serialise (RFC 8866, formerly RFC 4566).

The model keeps every line it does not interpret (bandwidth, timing, keys,
unknown attributes) so that ``str(SessionDescription.parse(text))`` gives the
same description back.  Media-level ``c=`` and direction fall back to the
session level (RFC 8866 5.7, 6.7), which :class:`MediaDescription` resolves
through the session it was parsed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

#: RFC 3551 table 4 static audio payload types this gateway may use without a=rtpmap.
STATIC_AUDIO: dict[int, tuple[str, int]] = {0: ("PCMU", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000)}

_LINE_RE = re.compile(r"^([a-z])=(.*)$")
_MEDIA_RE = re.compile(r"^(\S+) ([0-9]+)(?:/([0-9]+))? (\S+)(?: (.*))?$")
_RTPMAP_RE = re.compile(r"^([^/\s]+)/([0-9]+)(?:/([0-9]+))?$")


class SdpParseError(ValueError):
    """A session description that cannot be parsed (the call is refused with 400 or 488)."""


@dataclass(frozen=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>``."""

    username: str
    session_id: str
    session_version: str
    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>`` (TTL/count suffix kept in address)."""

    nettype: str
    addrtype: str
    address: str

    @classmethod
    def parse(cls, value: str) -> Connection:
        """Parse a c= value."""
        parts = value.split()
        if len(parts) != 3:
            raise SdpParseError(f"malformed c= line: {value!r}")
        return cls(*parts)

    @property
    def host(self) -> str:
        """The address without a multicast ``/ttl/count`` suffix."""
        return self.address.split("/", 1)[0]

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True)
class RtpMap:
    """``a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`` (RFC 8866 6.6)."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    def __str__(self) -> str:
        ch = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{ch}"


@dataclass
class MediaDescription:
    """One ``m=`` section and the lines under it."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    info: str | None = None
    connections: list[Connection] = field(default_factory=list)
    bandwidths: list[str] = field(default_factory=list)
    key: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    session_connection: Connection | None = field(default=None, repr=False, compare=False)
    session_direction: str | None = field(default=None, repr=False, compare=False)

    @property
    def connection(self) -> Connection | None:
        """The media-level c= line, else the session-level one (RFC 8866 5.7)."""
        return self.connections[0] if self.connections else self.session_connection

    @property
    def connection_address(self) -> str | None:
        """Where this stream's media goes (unicast address), or None if nowhere given."""
        conn = self.connection
        return conn.host if conn else None

    def attribute(self, name: str) -> str | None:
        """The first value of ``a=name`` ('' for a flag), or None."""
        for n, v in self.attributes:
            if n == name:
                return v if v is not None else ""
        return None

    def attribute_values(self, name: str) -> list[str]:
        """Every value of ``a=name``."""
        return [v or "" for n, v in self.attributes if n == name]

    @property
    def rtpmap(self) -> dict[int, RtpMap]:
        """a=rtpmap lines by payload type (malformed ones are ignored)."""
        out: dict[int, RtpMap] = {}
        for value in self.attribute_values("rtpmap"):
            pt_text, _, rest = value.partition(" ")
            m = _RTPMAP_RE.match(rest.strip())
            if not pt_text.isdigit() or not m:
                continue
            pt = int(pt_text)
            out[pt] = RtpMap(pt, m.group(1), int(m.group(2)),
                             int(m.group(3)) if m.group(3) else None)
        return out

    @property
    def fmtp(self) -> dict[int, str]:
        """a=fmtp parameters by payload type."""
        out: dict[int, str] = {}
        for value in self.attribute_values("fmtp"):
            pt_text, _, params = value.partition(" ")
            if pt_text.isdigit():
                out[int(pt_text)] = params.strip()
        return out

    @property
    def direction(self) -> str:
        """sendrecv/sendonly/recvonly/inactive: media level, else session level, else sendrecv."""
        for n, _ in self.attributes:
            if n in DIRECTIONS:
                return n
        return self.session_direction or "sendrecv"

    @property
    def ptime(self) -> int | None:
        """a=ptime in whole milliseconds (fractions are rounded), or None."""
        value = self.attribute("ptime")
        if not value:
            return None
        try:
            return max(1, round(float(value)))
        except ValueError:
            return None

    def lines(self) -> list[str]:
        """The section's lines in RFC 8866 order."""
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        fmts = (" " + " ".join(self.formats)) if self.formats else ""
        out = [f"m={self.media} {port} {self.proto}{fmts}"]
        if self.info is not None:
            out.append(f"i={self.info}")
        out += [f"c={c}" for c in self.connections]
        out += [f"b={b}" for b in self.bandwidths]
        if self.key is not None:
            out.append(f"k={self.key}")
        out += [f"a={n}" if v is None else f"a={n}:{v}" for n, v in self.attributes]
        return out


@dataclass
class SessionDescription:
    """A whole SDP body."""

    origin: Origin
    session_name: str = "-"
    version: int = 0
    info: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    times: list[str] = field(default_factory=lambda: ["0 0"])
    zone: str | None = None
    key: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str | bytes) -> SessionDescription:
        """Parse SDP text; CRLF or bare LF line ends (RFC 8866 5 allows LF on input)."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise SdpParseError("SDP is not UTF-8") from None
        lines = [ln for ln in re.split(r"\r?\n", text) if ln.strip()]
        if not lines or lines[0].strip() != "v=0":
            raise SdpParseError("SDP must start with v=0")
        origin: Origin | None = None
        sdp_kwargs: dict[str, object] = {}
        session_attrs: list[tuple[str, str | None]] = []
        emails: list[str] = []
        phones: list[str] = []
        bandwidths: list[str] = []
        times: list[str] = []
        media: list[MediaDescription] = []
        current: MediaDescription | None = None
        for line in lines[1:]:
            m = _LINE_RE.match(line.rstrip())
            if not m:
                raise SdpParseError(f"malformed SDP line {line[:40]!r}")
            kind, value = m.groups()
            if kind == "m":
                current = _parse_media(value)
                media.append(current)
            elif kind == "a":
                name, colon, val = value.partition(":")
                attr = (name, val if colon else None)
                (current.attributes if current else session_attrs).append(attr)
            elif kind == "c":
                conn = Connection.parse(value)
                if current:
                    current.connections.append(conn)
                else:
                    sdp_kwargs["connection"] = conn
            elif kind == "b":
                (current.bandwidths if current else bandwidths).append(value)
            elif kind == "i":
                if current:
                    current.info = value
                else:
                    sdp_kwargs["info"] = value
            elif kind == "k":
                if current:
                    current.key = value
                else:
                    sdp_kwargs["key"] = value
            elif current is not None:
                raise SdpParseError(f"session-level line {kind}= inside a media section")
            elif kind == "o":
                parts = value.split()
                if len(parts) != 6:
                    raise SdpParseError("malformed o= line")
                origin = Origin(*parts)
            elif kind == "s":
                sdp_kwargs["session_name"] = value
            elif kind == "u":
                sdp_kwargs["uri"] = value
            elif kind == "e":
                emails.append(value)
            elif kind == "p":
                phones.append(value)
            elif kind in ("t", "r"):
                times.append(value if kind == "t" else f"\nr={value}")
            elif kind == "z":
                sdp_kwargs["zone"] = value
            else:
                raise SdpParseError(f"unknown SDP line type {kind}=")
        if origin is None:
            raise SdpParseError("SDP has no o= line")
        sdp = cls(
            origin=origin, emails=emails, phones=phones, bandwidths=bandwidths,
            times=_join_repeats(times) or ["0 0"], attributes=session_attrs, media=media,
            **sdp_kwargs,  # type: ignore[arg-type]
        )
        sdp.link_media()
        return sdp

    def link_media(self) -> None:
        """Let each media section see the session-level c= and direction (fallbacks)."""
        direction = next((n for n, _ in self.attributes if n in DIRECTIONS), None)
        for m in self.media:
            m.session_connection = self.connection
            m.session_direction = direction

    def attribute(self, name: str) -> str | None:
        """The first session-level ``a=name`` value ('' for a flag), or None."""
        for n, v in self.attributes:
            if n == name:
                return v if v is not None else ""
        return None

    def __str__(self) -> str:
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        if self.info is not None:
            out.append(f"i={self.info}")
        if self.uri is not None:
            out.append(f"u={self.uri}")
        out += [f"e={e}" for e in self.emails]
        out += [f"p={p}" for p in self.phones]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"b={b}" for b in self.bandwidths]
        out += [f"t={t}" for t in self.times]
        if self.zone is not None:
            out.append(f"z={self.zone}")
        if self.key is not None:
            out.append(f"k={self.key}")
        out += [f"a={n}" if v is None else f"a={n}:{v}" for n, v in self.attributes]
        for m in self.media:
            out += m.lines()
        return "\r\n".join(out) + "\r\n"


def _join_repeats(times: list[str]) -> list[str]:
    """Attach r= lines to the t= line before them (kept as one entry for serialising)."""
    out: list[str] = []
    for t in times:
        if t.startswith("\nr=") and out:
            out[-1] += "\r" + t
        elif not t.startswith("\n"):
            out.append(t)
    return out


def _parse_media(value: str) -> MediaDescription:
    m = _MEDIA_RE.match(value.strip())
    if not m:
        raise SdpParseError(f"malformed m= line: {value!r}")
    media, port, count, proto, fmts = m.groups()
    port_n = int(port)
    if port_n > 65535:
        raise SdpParseError("m= port out of range")
    return MediaDescription(
        media=media, port=port_n, proto=proto, formats=fmts.split() if fmts else [],
        port_count=int(count) if count else None,
    )
