"""SIP URIs (RFC 3261 19.1), name-addr values (From/To/Contact, 20.10) and Via (20.42).

Parsing is strict where RFC 4475 calls a message invalid (spaces in a URI,
unterminated quotes, non-token display names, an IPv6 address without ``[]``)
and lenient where real devices differ from the ABNF but the meaning is clear
(LWS around ``;`` and ``=``, RFC 5118 4.5 ``received=[v6]``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from sip.headers import format_params, parse_params, split_list


class UriError(ValueError):
    """A URI or address field that cannot be parsed."""


_TOKEN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+\-.]*$")
_PORT_RE = re.compile(r"^[0-9]{1,5}$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9\-._]+$")


def is_token(text: str) -> bool:
    """RFC 3261 25.1 ``token``."""
    return bool(text) and all(ch in _TOKEN_CHARS for ch in text)


def _parse_hostport(text: str) -> tuple[str, int | None]:
    """``host [":" port]`` with IPv6 references in ``[]`` (RFC 3261 19.1.1, RFC 5118 4.2)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise UriError("unterminated IPv6 reference")
        host = text[: end + 1]
        rest = text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise UriError("junk after IPv6 reference")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = text.partition(":")
        if ":" in port_text:
            raise UriError("IPv6 address without [] or bad port")
        if ":" in text and not port_text:
            raise UriError("empty port")
        if not host or not _HOSTNAME_RE.match(host):
            raise UriError(f"bad host {host!r}")
    if port_text:
        if not _PORT_RE.match(port_text) or int(port_text) > 65535:
            raise UriError(f"bad port {port_text!r}")
        return host, int(port_text)
    return host, None


@dataclass
class SipUri:
    """A ``sip:``/``sips:`` URI, or any other absolute URI kept opaque in ``opaque``.

    ``user`` is percent-decoded (RFC 3261 19.1.4: URIs compare after unescaping);
    ``str(uri)`` gives back the original text, so nothing is re-escaped wrongly.
    """

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None
    opaque: str | None = None
    raw: str = ""

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse an absolute URI; ``sip``/``sips`` ones into their parts."""
        text = text.strip()
        if not text or any(ch in text for ch in " \t\r\n<>\""):
            raise UriError("URI contains whitespace, quotes or <>")
        scheme, colon, rest = text.partition(":")
        if not colon or not _SCHEME_RE.match(scheme):
            raise UriError("URI has no scheme")
        scheme = scheme.lower()
        if scheme not in ("sip", "sips"):
            return cls(scheme=scheme, opaque=rest, raw=text)
        # The user part may hold '?' and ';' (RFC 3261 25.1 user-unreserved) but never an
        # unescaped '@', and headers never hold '@': so cut at the last '@' first.
        user = password = None
        if "@" in rest:
            userinfo, _, hostpart = rest.rpartition("@")
            if not userinfo:
                raise UriError("empty user part")
            u, pcolon, pw = userinfo.partition(":")
            user = unquote(u)
            password = unquote(pw) if pcolon else None
        else:
            hostpart = rest
        hostpart, qmark, hdrs = hostpart.partition("?")
        hostport, _, param_text = hostpart.partition(";")
        host, port = _parse_hostport(hostport)
        params = parse_params(param_text) if param_text else {}
        return cls(
            scheme=scheme, user=user, password=password, host=host, port=port, params=params,
            headers=hdrs if qmark else None, raw=text,
        )

    @property
    def transport(self) -> str | None:
        """The ``transport=`` parameter, lower-cased."""
        value = self.params.get("transport")
        return value.lower() if value else None

    def __str__(self) -> str:
        if self.raw:
            return self.raw
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password is not None else "") + "@"
        port = f":{self.port}" if self.port is not None else ""
        hdrs = f"?{self.headers}" if self.headers is not None else ""
        return f"{self.scheme}:{userinfo}{self.host}{port}{format_params(self.params)}{hdrs}"


@dataclass
class NameAddr:
    """``[display-name] <URI> *(;param)`` or ``addr-spec *(;param)`` (RFC 3261 20.10, 20.20).

    In the addr-spec form every ``;param`` belongs to the header, not the URI
    (RFC 3261 20.10), which is how From's ``tag`` is found.
    """

    uri: SipUri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    wildcard: bool = False

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parse one element of a From/To/Contact/Route field."""
        text = text.strip()
        if text == "*":
            return cls(uri=SipUri(scheme="*", raw="*"), wildcard=True)
        display: str | None = None
        i = 0
        if text.startswith('"'):
            i = 1
            buf: list[str] = []
            while True:
                if i >= len(text):
                    raise UriError("unterminated quoted display name")
                ch = text[i]
                if ch == "\\" and i + 1 < len(text):
                    buf.append(text[i + 1])
                    i += 2
                    continue
                if ch == '"':
                    i += 1
                    break
                buf.append(ch)
                i += 1
            display = "".join(buf)
            rest = text[i:].lstrip()
            if not rest.startswith("<"):
                raise UriError("quoted display name without <URI>")
        else:
            rest = text
        lt = rest.find("<")
        if lt >= 0:
            if display is None:
                words = rest[:lt].split()
                if words and not all(is_token(w) for w in words):
                    raise UriError("display name is not a token list")
                display = " ".join(words) or None
            gt = rest.find(">", lt)
            if gt < 0:
                raise UriError("unterminated <URI>")
            uri = _parse_strict(rest[lt + 1 : gt])
            param_text = rest[gt + 1 :].strip()
            if param_text and not param_text.startswith(";"):
                raise UriError("junk after <URI>")
        else:
            uri_text, _, param_text = rest.partition(";")
            if "?" in uri_text:
                raise UriError("addr-spec with headers must be inside <>")
            uri = SipUri.parse(uri_text)
            param_text = ";" + param_text if param_text else ""
        params = parse_params(param_text) if param_text else {}
        return cls(uri=uri, display=display, params=params)

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 19.3)."""
        return self.params.get("tag")

    def __str__(self) -> str:
        if self.wildcard:
            return "*"
        disp = ""
        if self.display:
            escaped = self.display.replace("\\", "\\\\").replace('"', '\\"')
            disp = f'"{escaped}" '
        return f"{disp}<{self.uri}>{format_params(self.params)}"


def _parse_strict(text: str) -> SipUri:
    """A URI inside ``<>``: no LWS allowed around it (RFC 4475 3.1.2.14 badaspec)."""
    if text != text.strip():
        raise UriError("whitespace inside <> around the URI")
    return SipUri.parse(text)


_VIA_RE = re.compile(
    r"^\s*([A-Za-z0-9\-._!%*+`'~]+)\s*/\s*([A-Za-z0-9\-._!%*+`'~]+)\s*/\s*"
    r"([A-Za-z0-9\-._!%*+`'~]+)\s+(\S[^;]*?)\s*(;.*)?$",
    re.DOTALL,
)


@dataclass
class Via:
    """One Via element: ``SIP/2.0/UDP host[:port];branch=...`` (RFC 3261 20.42, 18.2.1)."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse one Via element; LWS around ``/``, ``;`` and ``=`` is allowed (RFC 4475 3.1.1.1)."""
        m = _VIA_RE.match(text)
        if not m:
            raise UriError("malformed Via")
        proto, version, transport, sent_by, param_text = m.groups()
        if proto.upper() != "SIP" or version != "2.0":
            raise UriError("Via protocol is not SIP/2.0")
        sent_by = re.sub(r"\s+", "", sent_by)
        host, port = _parse_hostport(sent_by)
        params = parse_params(param_text) if param_text else {}
        return cls(transport=transport.upper(), host=host, port=port, params=params)

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter (RFC 3261 8.1.1.7)."""
        return self.params.get("branch")

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"


def parse_vias(values: list[str]) -> list[Via]:
    """Parse every Via element of every Via line."""
    out: list[Via] = []
    for value in values:
        out.extend(Via.parse(v) for v in split_list(value))
    return out
