"""SIP header fields: case-insensitive names, compact forms, comma lists, parameters.

RFC 3261 section 7.3: header names are case-insensitive, several fields have a
one-letter compact form (7.3.3), and a field whose grammar is a comma-separated
list may appear on several lines or as one line with commas (7.3.1), which are
equivalent.  Commas inside quoted strings or ``<...>`` are not separators.
Authentication fields and ``Date`` contain commas that are *not* list
separators, so they are never split.
"""

from __future__ import annotations

from collections.abc import Iterator

#: RFC 3261 7.3.3 and the IANA registry's compact forms.
COMPACT_FORMS: dict[str, str] = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
}

#: Canonical spelling for serialisation, by lower-case name.  Others are title-cased.
_CANONICAL: dict[str, str] = {
    name.lower(): name
    for name in (
        "Call-ID", "CSeq", "WWW-Authenticate", "Content-Length", "Content-Type", "MIME-Version",
        "Max-Forwards", "Record-Route", "Proxy-Require", "Proxy-Authorization",
        "Proxy-Authenticate", "Authentication-Info", "Session-Expires", "Min-SE", "RAck", "RSeq",
        "P-Asserted-Identity", "Allow-Events", "Refer-To", "Referred-By", "Accept-Contact",
        "Reject-Contact", "Request-Disposition", "Content-Encoding", "Content-Disposition",
        "Content-Language", "Accept-Encoding", "Accept-Language", "Alert-Info", "Call-Info",
        "Error-Info", "In-Reply-To", "Reply-To", "Retry-After", "User-Agent", "Min-Expires",
    )
}

#: Fields whose values contain commas that do not separate list elements (RFC 3261 20).
_NEVER_SPLIT = frozenset(
    {
        "date", "www-authenticate", "authorization", "proxy-authenticate",
        "proxy-authorization", "authentication-info", "retry-after", "subject", "user-agent",
        "server", "organization", "call-id", "cseq", "content-length", "content-type",
        "max-forwards", "timestamp", "expires", "min-expires", "priority", "mime-version",
    }
)


def canonical_name(name: str) -> str:
    """Expand a compact form and spell ``name`` the way RFC 3261 does (``Call-ID``, ``CSeq``)."""
    stripped = name.strip()
    lower = stripped.lower()
    if lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    if lower in _CANONICAL:
        return _CANONICAL[lower]
    return "-".join(part[:1].upper() + part[1:].lower() for part in stripped.split("-"))


def split_list(value: str, sep: str = ",") -> list[str]:
    """Split ``value`` on ``sep`` outside quoted strings and ``<...>`` (RFC 3261 7.3.1, 25.1).

    Empty elements are dropped, as ``#element`` in the ABNF allows null elements.
    A quoted-pair (backslash escape) inside a quoted string never ends it.
    """
    out: list[str] = []
    buf: list[str] = []
    in_quote = False
    in_angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quote:
            buf.append(ch)
            if ch == "\\" and i + 1 < n:
                buf.append(value[i + 1])
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
            buf.append(ch)
        elif ch == "<":
            in_angle = True
            buf.append(ch)
        elif ch == ">":
            in_angle = False
            buf.append(ch)
        elif ch == sep and not in_angle:
            item = "".join(buf).strip()
            if item:
                out.append(item)
            buf = []
        else:
            buf.append(ch)
        i += 1
    item = "".join(buf).strip()
    if item:
        out.append(item)
    return out


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` generic parameters (RFC 3261 25.1 ``generic-param``).

    LWS around ``;`` and ``=`` is allowed (RFC 3261 7.3.1).  Names are lower-cased
    because parameter names are case-insensitive; values keep their case.
    """
    params: dict[str, str | None] = {}
    for part in split_list(text, ";"):
        name, eq, val = part.partition("=")
        key = name.strip().lower()
        if not key:
            continue
        params[key] = val.strip() if eq else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    """Serialise parameters as ``;name=value`` / ``;flag``."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


class Headers:
    """An ordered, case-insensitive multimap of header fields.

    Lines are kept as received (one entry per header line) so that serialising
    keeps the order RFC 3261 7.3.1 says matters for Via, Route and Record-Route.
    Names are stored in canonical form, compact forms expanded.
    """

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = []
        for name, value in items or ():
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        """Append one header line."""
        self._items.append((canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` with one line, keeping the first one's position."""
        canon = canonical_name(name)
        key = canon.lower()
        for i, (n, _) in enumerate(self._items):
            if n.lower() == key:
                self._items[i] = (canon, value)
                self._items = [
                    item for j, item in enumerate(self._items) if j <= i or item[0].lower() != key
                ]
                return
        self._items.append((canon, value))

    def remove(self, name: str) -> None:
        """Remove every line of ``name``."""
        key = canonical_name(name).lower()
        self._items = [item for item in self._items if item[0].lower() != key]

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first line's value, or ``default``."""
        key = canonical_name(name).lower()
        for n, v in self._items:
            if n.lower() == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every line's raw value, in order."""
        key = canonical_name(name).lower()
        return [v for n, v in self._items if n.lower() == key]

    def values(self, name: str) -> list[str]:
        """Every list element of ``name`` over all its lines (RFC 3261 7.3.1)."""
        key = canonical_name(name).lower()
        raw = self.get_all(name)
        if key in _NEVER_SPLIT:
            return [v.strip() for v in raw]
        out: list[str] = []
        for v in raw:
            out.extend(split_list(v))
        return out

    def items(self) -> list[tuple[str, str]]:
        """All lines as (canonical name, value)."""
        return list(self._items)

    def copy(self) -> Headers:
        """A shallow copy."""
        return Headers(list(self._items))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(n.lower(), v) for n, v in self._items] == [
            (n.lower(), v) for n, v in other._items
        ]
