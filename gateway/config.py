"""Node configuration (``config/gateway.yaml``): where this gateway listens and how it logs.

The file is validated once at start-up into frozen pydantic models (strict, unknown
keys refused) so a typo fails loudly with ``FILE:LINE:COL`` instead of starting a
gateway that listens somewhere else than the operator believes.  What the
gateway *admits* lives in the policy file (:mod:`gateway.policy`), which this
file points to and which :func:`load_config` validates as well, so that
``roomgate run`` refuses to start on a broken policy.

Listen addresses are IP literals (``127.0.0.1:5060``, ``[::1]:5060``): a host name
would bind to whichever address the resolver returns first, which is rarely what
was meant for SIP and media.  The media address and ICE addresses are written into
SDP and ICE candidates, so they must be concrete (not ``0.0.0.0``/``::``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import structlog
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from gateway.yamlmarks import Issue, Loaded, YamlError, load_file, validate
from sip.ratelimit import DEFAULT_LIMITS, DEFAULT_PREPARSE, Limit, SipLimits

log = structlog.get_logger("gateway.config")


class ConfigError(Exception):
    """The node configuration (or the policy it names) is invalid.

    ``issues`` holds one :class:`~gateway.yamlmarks.Issue` per problem;
    ``messages`` the same as ``FILE:LINE:COL: reason`` lines.
    """

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(self.messages))

    @property
    def messages(self) -> list[str]:
        return [str(i) for i in self.issues]


class ConfigUnreadable(ConfigError):
    """The configuration file itself could not be read (missing, permissions, a directory).

    Separate from :class:`ConfigError` so the CLI can exit 2 ("cannot even look") rather than 1
    ("looked, and it is wrong").
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__([Issue(path, 0, 0, f"cannot read: {reason}")])

    @property
    def messages(self) -> list[str]:
        return [f"{self.path}: cannot read: {self.reason}"]


# --- value types ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HostPort:
    """A listen address: an IP literal and a port (0 = any free port, reported once bound)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class PortRange:
    """An inclusive UDP port range for media.  RTP takes even ports, RTCP the odd one above
    (RFC 3550 section 11), so only complete even/odd pairs count."""

    low: int
    high: int

    @property
    def pairs(self) -> int:
        """How many RTP/RTCP pairs fit, i.e. how many simultaneous calls the range can carry."""
        first_even = self.low + (self.low % 2)
        return max(0, (self.high - first_even + 1) // 2)

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.low <= port <= self.high

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"


def _fail(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


def parse_ip(value: Any, *, concrete: bool = False) -> str:
    """An IPv4/IPv6 literal, normalised (``::0001`` -> ``::1``).  ``concrete`` refuses the
    wildcard addresses, which cannot be advertised in SDP or ICE."""
    if not isinstance(value, str):
        raise _fail("ip", f"expected an IP address as text, got {value!r}")
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise _fail("ip", f"{value!r} is not an IP address (host names are not accepted here: "
                          "write the address, e.g. 127.0.0.1)") from None
    if concrete and ip.is_unspecified:
        raise _fail("ip", f"{value!r} is a wildcard; this address is sent to peers, so it must "
                          "be one they can reach (e.g. 127.0.0.1 or the host's LAN address)")
    return str(ip)


def parse_hostport(value: Any) -> HostPort:
    """``"127.0.0.1:5060"`` or ``"[::1]:5060"`` -> :class:`HostPort`."""
    if isinstance(value, HostPort):
        return value
    if not isinstance(value, str):
        raise _fail("hostport", f"expected \"ADDRESS:PORT\" as text (e.g. \"127.0.0.1:5060\"), "
                                f"got {value!r}")
    text = value.strip()
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1:close + 2] != ":":
            raise _fail("hostport", f"{value!r}: expected [IPv6]:PORT, e.g. [::1]:5060")
        host, port_s = text[1:close], text[close + 2:]
    else:
        if text.count(":") > 1:
            raise _fail("hostport", f"{value!r}: an IPv6 address needs brackets, e.g. [::1]:5060")
        host, sep, port_s = text.rpartition(":")
        if not sep:
            raise _fail("hostport", f"{value!r}: missing port, expected ADDRESS:PORT, e.g. 127.0.0.1:5060")
    if not port_s.isdigit():
        raise _fail("hostport", f"{value!r}: port {port_s!r} is not a number")
    port = int(port_s)
    if not 0 <= port <= 65535:
        raise _fail("hostport", f"{value!r}: port {port} is outside 0-65535")
    return HostPort(parse_ip(host), port)


def parse_port_range(value: Any) -> PortRange:
    """``"20000-29999"`` -> :class:`PortRange`; refuses ranges with no whole RTP/RTCP pair."""
    if isinstance(value, PortRange):
        return value
    if not isinstance(value, str):
        raise _fail("port_range", f"expected \"LOW-HIGH\" as text (e.g. \"20000-29999\"), got {value!r}")
    low_s, sep, high_s = value.strip().partition("-")
    if not sep or not low_s.strip().isdigit() or not high_s.strip().isdigit():
        raise _fail("port_range", f"{value!r} is not of the form LOW-HIGH, e.g. 20000-29999")
    low, high = int(low_s), int(high_s)
    if not 1 <= low <= 65535 or not 1 <= high <= 65535:
        raise _fail("port_range", f"{value!r}: ports must be within 1-65535")
    if low > high:
        raise _fail("port_range", f"{value!r}: low port {low} is above high port {high}")
    rng = PortRange(low, high)
    if rng.pairs < 1:
        raise _fail("port_range", f"{value!r} holds no even RTP port with its odd RTCP neighbour; "
                                  "give at least two ports starting at an even one, e.g. 20000-20001")
    return rng


HostPortField = Annotated[HostPort, PlainValidator(parse_hostport), PlainSerializer(str)]
PortRangeField = Annotated[PortRange, PlainValidator(parse_port_range), PlainSerializer(str)]
ConcreteIp = Annotated[str, PlainValidator(lambda v: parse_ip(v, concrete=True))]

LogFormat = Literal["console", "json"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogPii = Literal["redact", "show"]


# --- the document ---------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class RateLimitConfig(_Section):
    """One per-source token bucket: ``rate`` requests per second sustained, ``burst`` at once,
    and (per-method limits only) ``hard_limit`` 503s per refill before the source is ignored."""

    rate: Annotated[float, Field(gt=0, le=100000)]
    burst: Annotated[int, Field(ge=1, le=1000000)]
    hard_limit: Annotated[int, Field(ge=0, le=1000000)] = 20


class PreParseConfig(_Section):
    """The pre-parse gate's bucket per source (requests of established calls never count)."""

    rate: Annotated[float, Field(gt=0, le=100000)]
    burst: Annotated[int, Field(ge=1, le=1000000)]


def _limit_config(limit: Limit) -> RateLimitConfig:
    return RateLimitConfig(rate=limit.rate, burst=limit.burst, hard_limit=limit.hard_limit)


class SipLimitsConfig(_Section):
    """``sip.limits``: flood and size limits (:class:`sip.ratelimit.SipLimits`; the defaults are
    the ones the gateway always had).  ``preparse: null`` turns the pre-parse gate off."""

    invite: RateLimitConfig = Field(default_factory=lambda: _limit_config(DEFAULT_LIMITS["INVITE"]))
    options: RateLimitConfig = Field(default_factory=lambda: _limit_config(DEFAULT_LIMITS["OPTIONS"]))
    preparse: PreParseConfig | None = Field(default_factory=lambda: PreParseConfig(
        rate=DEFAULT_PREPARSE.rate, burst=DEFAULT_PREPARSE.burst))
    max_message_bytes: Annotated[int, Field(ge=512, le=16 * 1024 * 1024)] | None = None
    max_transactions: Annotated[int, Field(ge=1, le=10_000_000)] | None = None

    def to_sip(self) -> SipLimits:
        """The :class:`sip.ratelimit.SipLimits` these settings describe."""
        pre = self.preparse
        return SipLimits(
            invite=Limit(self.invite.rate, self.invite.burst, self.invite.hard_limit),
            options=Limit(self.options.rate, self.options.burst, self.options.hard_limit),
            preparse=Limit(pre.rate, pre.burst, hard_limit=0) if pre is not None else None,
            max_message_bytes=self.max_message_bytes, max_transactions=self.max_transactions)


class SipConfig(_Section):
    """SIP listeners; omit or null one to disable it.

    ``tls`` (RFC 3261 26.2, conventionally port 5061) needs ``tls_cert`` and ``tls_key`` (PEM;
    the certificate file may carry its chain); ``tls_ca`` with ``tls_verify_client: true``
    asks every TLS client for a certificate issued by that CA (mutual TLS).  Paths are
    relative to this file.
    """

    udp: HostPortField | None = None
    tcp: HostPortField | None = None
    tls: HostPortField | None = None
    tls_cert: Annotated[Path, Field(strict=False)] | None = None
    tls_key: Annotated[Path, Field(strict=False)] | None = None
    tls_ca: Annotated[Path, Field(strict=False)] | None = None
    tls_verify_client: bool = False
    limits: SipLimitsConfig = Field(default_factory=SipLimitsConfig)

    @field_validator("tls_cert", "tls_key", "tls_ca", mode="before")
    @classmethod
    def _tls_paths(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        what = {"tls_cert": "TLS certificate file", "tls_key": "TLS key file",
                "tls_ca": "TLS CA file"}[info.field_name or ""]
        return _config_path(value, info, what)


class HttpConfig(_Section):
    """The HTTP listener: the embedded conference core, its web page, and /healthz."""

    listen: HostPortField = Field(default_factory=lambda: HostPort("127.0.0.1", 8080))


class MediaConfig(_Section):
    """Legacy-side RTP: the address the RTP ports bind to, the UDP port range, and
    ``public_address``: the address written into SDP answers (RFC 8866 5.7 ``c=``) when the
    gateway sits behind a 1:1 NAT and peers must reach it on another address than the one it
    binds (default: ``address``).  Never a wildcard: peers must be able to send to it.
    ``passthrough``: whether G.711 calls may take the RTP fast path (``auto``) or not (``off``)."""

    address: ConcreteIp = "127.0.0.1"
    ports: PortRangeField = Field(default_factory=lambda: PortRange(20000, 29999))
    public_address: ConcreteIp | None = None
    #: ``auto``: a G.711 call whose core side answered the same codec both ways relays RTP
    #: packets untouched (:mod:`bridge.fastpath`: no decode, resample or re-encode); ``off``
    #: (the default until the fast path is proven): every call is transcoded.
    passthrough: Literal["auto", "off"] = "off"

    @property
    def advertised_address(self) -> str:
        """The address SDP answers name: ``public_address``, else ``address``."""
        return self.public_address or self.address


class WebRtcConfig(_Section):
    """WebRTC leg: the host addresses ICE gathers candidates on (default: ``media.address``)."""

    ice_addresses: list[ConcreteIp] | None = None

    @field_validator("ice_addresses")
    @classmethod
    def _non_empty_unique(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise _fail("ice_addresses", "must list at least one address (or be left out to use "
                                         "media.address)")
        dupes = sorted({a for a in value if value.count(a) > 1})
        if dupes:
            raise _fail("ice_addresses", f"listed more than once: {', '.join(dupes)}")
        return value


class CoreConfig(_Section):
    """Where the conference core is: null = embedded, on the HTTP listener."""

    url: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _fail("url", f"{value!r} is not an http:// or https:// URL with a host")
        if parts.query or parts.fragment:
            raise _fail("url", f"{value!r}: a base URL takes no ?query or #fragment")
        try:
            _ = parts.port  # raises on a non-numeric or out-of-range port
        except ValueError:
            raise _fail("url", f"{value!r}: invalid port") from None
        return value.rstrip("/")


class LogConfig(_Section):
    """Log output on stderr: ``console`` for people, ``json`` for collectors."""

    format: LogFormat = "console"
    level: LogLevel = "info"
    #: ``redact`` (default): IP addresses, display names, Call-IDs... are logged as keyed hashes
    #: that change every run; ``show`` logs them as they are, for debugging only.
    pii: LogPii = "redact"


class RuntimeConfig(_Section):
    """How the process runs: ``event_loop`` picks the asyncio loop Twisted and aiortc share
    (:mod:`gateway.loop`): ``auto`` = uvloop when it imports, else asyncio's own loop with a
    warning; ``uvloop`` = uvloop or a configuration error; ``asyncio`` = asyncio's own loop."""

    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"


def _config_path(value: Any, info: ValidationInfo, what: str) -> Any:
    """A path given as text, resolved against the config file's directory (like ``policy``)."""
    if not isinstance(value, str) or not value.strip():
        raise _fail("path", f"expected the {what}'s path as text, got {value!r}")
    base = (info.context or {}).get("base_dir")
    path = Path(value).expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return path.resolve() if base is not None else path


def _check_token_hash(value: str) -> str:
    from gateway.api.tokens import TokenError, parse_hash

    try:
        parse_hash(value)
    except TokenError as exc:
        raise _fail("token_hash", str(exc)) from None
    return value.strip()


class TokenConfig(_Section):
    """One control API bearer token: an id for audit logs, a scope, and only its PBKDF2 hash."""

    id: str
    scope: Literal["read", "operate", "admin"]
    hash: str

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        from gateway.api.tokens import TOKEN_ID

        if not TOKEN_ID.fullmatch(value):
            raise _fail("token_id", f"{value!r}: a token id is 1-64 of A-Z a-z 0-9 . _ -")
        return value

    @field_validator("hash")
    @classmethod
    def _hash(cls, value: str) -> str:
        return _check_token_hash(value)


class ControlConfig(_Section):
    """The control API: its own HTTPS listener and the tokens (hashes) it accepts.

    Leaving the section out disables the API. There are no default credentials: a section
    without tokens is an error, not an open API.
    """

    listen: HostPortField
    tls_cert: Annotated[Path, Field(strict=False)]
    tls_key: Annotated[Path, Field(strict=False)]
    tokens: list[TokenConfig] = Field(default_factory=list, validate_default=True)

    @field_validator("tls_cert", "tls_key", mode="before")
    @classmethod
    def _paths(cls, value: Any, info: ValidationInfo) -> Any:
        return _config_path(value, info, f"TLS {(info.field_name or '').removeprefix('tls_')} file")

    @field_validator("tokens")
    @classmethod
    def _tokens(cls, value: list[TokenConfig]) -> list[TokenConfig]:
        if not value:
            raise _fail("tokens", "no token configured: the control API has no default credentials. "
                                  "Run `roomgate token new --scope read` and add the line it prints, "
                                  "or remove the control section to disable the API")
        ids = [t.id for t in value]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise _fail("tokens", f"token id listed more than once: {', '.join(dupes)}")
        return value


class MetricsConfig(_Section):
    """The Prometheus endpoint ``GET /metrics`` (plain HTTP, on its own listener).

    Bound to loopback by default; any other address needs ``token_hash`` (scrapers then send
    ``Authorization: Bearer <token>``). ``per_meeting`` adds series labelled with meeting ids.
    """

    listen: HostPortField = Field(default_factory=lambda: HostPort("127.0.0.1", 9464))
    per_meeting: bool = False
    token_hash: str | None = None

    @field_validator("token_hash")
    @classmethod
    def _hash(cls, value: str | None) -> str | None:
        return None if value is None else _check_token_hash(value)


class H323RasConfig(_Section):
    """RAS (H.225.0 section 7.7, UDP 1719 by convention).  ``gatekeeper`` (an ADDRESS:PORT)
    makes the gateway register there (``discover``: GRQ first), with ``aliases`` (h323-IDs, or
    dialledDigits when all digits) and ``prefixes`` for its meetings, asking for
    ``time_to_live`` seconds; with ``h323.gatekeeper: own`` the gateway answers endpoints on
    ``listen`` itself, granting ``time_to_live``."""

    listen: HostPortField = Field(default_factory=lambda: HostPort("127.0.0.1", 1719))
    gatekeeper: HostPortField | None = None
    gatekeeper_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    discover: bool = False
    aliases: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(default_factory=list)
    prefixes: list[Annotated[str, Field(pattern=r"^[0-9*#,]{1,32}$")]] = Field(default_factory=list)
    time_to_live: Annotated[int, Field(ge=10, le=86400)] = 300


class H323Config(_Section):
    """H.323 call signalling (H.225.0 section 7.1: TCP, port 1720 by default).  Leaving the
    section out disables H.323.  Separate H.245 connections listen on a free port of the same
    address as the call-signalling connection they belong to."""

    listen: HostPortField = Field(default_factory=lambda: HostPort("127.0.0.1", 1720))
    ras: H323RasConfig | None = None
    gatekeeper: Literal["own"] | None = None


class GatewayConfig(_Section):
    """The whole node configuration.  ``policy`` is an absolute path once loaded."""

    sip: SipConfig
    http: HttpConfig = Field(default_factory=HttpConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    webrtc: WebRtcConfig = Field(default_factory=WebRtcConfig)
    core: CoreConfig = Field(default_factory=CoreConfig)
    policy: Annotated[Path, Field(strict=False)]
    log: LogConfig = Field(default_factory=LogConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    control: ControlConfig | None = None
    metrics: MetricsConfig | None = None
    h323: H323Config | None = None

    @field_validator("policy", mode="before")
    @classmethod
    def _policy_path(cls, value: Any, info: ValidationInfo) -> Any:
        # Strict mode would refuse a str for Path; we accept text only (not numbers) and resolve
        # it against the config file's directory so the gateway can start from anywhere.
        if not isinstance(value, str) or not value.strip():
            raise _fail("policy", f"expected the policy file's path as text, got {value!r}")
        base = (info.context or {}).get("base_dir")
        path = Path(value).expanduser()
        if not path.is_absolute() and base is not None:
            path = Path(base) / path
        return path.resolve() if base is not None else path

    @property
    def ice_addresses(self) -> tuple[str, ...]:
        """Addresses ICE gathers on: ``webrtc.ice_addresses`` or else ``(media.address,)``."""
        if self.webrtc.ice_addresses:
            return tuple(self.webrtc.ice_addresses)
        return (self.media.address,)


def _cross_checks(cfg: GatewayConfig, loaded: Loaded) -> list[Issue]:
    """Rules that span sections (pydantic would report them at the root, without a line)."""
    issues: list[Issue] = []
    sip = cfg.sip
    if sip.udp is None and sip.tcp is None and sip.tls is None:
        issues.append(loaded.issue(("sip",), "no SIP listener: set udp, tcp, tls or several "
                                             "(e.g. udp: \"127.0.0.1:5060\")"))
    issues += _sip_tls_checks(cfg, loaded)
    listeners: list[tuple[tuple[str, ...], str, HostPort]] = []
    if sip.udp is not None:
        listeners.append((("sip", "udp"), "udp", sip.udp))
    if sip.tcp is not None:
        listeners.append((("sip", "tcp"), "tcp", sip.tcp))
    listeners.append((("http", "listen"), "tcp", cfg.http.listen))
    issues += _api_checks(cfg, loaded)
    issues += _h323_checks(cfg, loaded)
    issues += _runtime_checks(cfg, loaded)
    if sip.tcp is not None and sip.tcp.port != 0 and sip.tcp.port == cfg.http.listen.port and \
            _overlap(sip.tcp.host, cfg.http.listen.host):
        issues.append(loaded.issue(("http", "listen"), f"{cfg.http.listen} is also sip.tcp's address"))
    for path, proto, hp in listeners:
        if proto == "udp" and hp.port in cfg.media.ports and _overlap(hp.host, cfg.media.address):
            issues.append(loaded.issue(path, f"port {hp.port} lies inside media.ports "
                                             f"{cfg.media.ports}; media calls would collide with it"))
    return issues


def _runtime_checks(cfg: GatewayConfig, loaded: Loaded) -> list[Issue]:
    """``runtime.event_loop: uvloop`` needs uvloop importable here (``auto`` falls back instead)."""
    from gateway.loop import uvloop_import_error

    if cfg.runtime.event_loop != "uvloop":
        return []
    missing = uvloop_import_error()
    if missing is None:
        return []
    return [loaded.issue(("runtime", "event_loop"), f"uvloop cannot be imported ({missing}): install it "
                                                    "(pip install 'uvloop>=0.19') or set auto or asyncio")]


def _h323_checks(cfg: GatewayConfig, loaded: Loaded) -> list[Issue]:
    """h323.listen must not share a TCP address with another listener."""
    if cfg.h323 is None or cfg.h323.listen.port == 0:
        return []
    h = cfg.h323.listen
    others = [(("http", "listen"), cfg.http.listen), (("sip", "tcp"), cfg.sip.tcp), (("sip", "tls"), cfg.sip.tls)]
    issues = [loaded.issue(("h323", "listen"), f"{h} is also {'.'.join(path)}'s address")
              for path, hp in others if hp is not None and hp.port == h.port and _overlap(hp.host, h.host)]
    return issues + _h323_ras_checks(cfg, loaded)


def _h323_ras_checks(cfg: GatewayConfig, loaded: Loaded) -> list[Issue]:
    """h323.gatekeeper: own needs h323.ras and excludes ras.gatekeeper; ras.listen (UDP) must not
    be sip.udp's address."""
    assert cfg.h323 is not None
    ras, issues = cfg.h323.ras, []
    if cfg.h323.gatekeeper == "own" and ras is None:
        issues.append(loaded.issue(("h323", "gatekeeper"), "gatekeeper: own needs an h323.ras section "
                                                            "(its listen address), e.g. ras: {listen: \"127.0.0.1:1719\"}"))
    if ras is None:
        return issues
    if cfg.h323.gatekeeper == "own" and ras.gatekeeper is not None:
        issues.append(loaded.issue(("h323", "ras", "gatekeeper"), "h323.gatekeeper is own: the gateway cannot "
                                                                  "also register to another gatekeeper"))
    if cfg.h323.gatekeeper is None and ras.gatekeeper is None:
        issues.append(loaded.issue(("h323", "ras"), "set ras.gatekeeper (register to that gatekeeper) or "
                                                    "h323.gatekeeper: own (answer endpoints)"))
    u = cfg.sip.udp
    if u is not None and ras.listen.port != 0 and u.port == ras.listen.port and _overlap(u.host, ras.listen.host):
        issues.append(loaded.issue(("h323", "ras", "listen"), f"{ras.listen} is also sip.udp's address"))
    return issues


def _api_checks(cfg: GatewayConfig, loaded: Loaded) -> list[Issue]:
    """Control API and metrics: readable TLS files, distinct ports, no open metrics off loopback."""
    issues: list[Issue] = []
    tcp: list[tuple[tuple[str, ...], HostPort]] = [(("http", "listen"), cfg.http.listen)]
    if cfg.sip.tcp is not None:
        tcp.append((("sip", "tcp"), cfg.sip.tcp))
    if cfg.control is not None:
        for key in ("tls_cert", "tls_key"):
            path: Path = getattr(cfg.control, key)
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                issues.append(loaded.issue(("control", key), f"cannot read {path}: "
                                                             f"{exc.strerror or exc}"))
        tcp.append((("control", "listen"), cfg.control.listen))
    if cfg.metrics is not None:
        m = cfg.metrics
        if m.token_hash is None and not ipaddress.ip_address(m.listen.host).is_loopback:
            issues.append(loaded.issue(("metrics", "listen"),
                                       f"{m.listen} is not a loopback address: set metrics.token_hash "
                                       "(`roomgate token new --scope metrics`) so scrapes need a token"))
        tcp.append((("metrics", "listen"), m.listen))
    for i, (path_i, a) in enumerate(tcp):
        for path_j, b in tcp[:i]:
            if a.port != 0 and a.port == b.port and _overlap(a.host, b.host) and \
                    path_i[0] in ("control", "metrics"):
                issues.append(loaded.issue(path_i, f"{a} is also {'.'.join(path_j)}'s address"))
    return issues


def _sip_tls_checks(cfg: GatewayConfig, loaded: Loaded) -> list[Issue]:
    """sip.tls needs a readable certificate and key; client verification needs a CA."""
    sip = cfg.sip
    issues: list[Issue] = []
    tls_keys = ("tls_cert", "tls_key", "tls_ca")
    if sip.tls is None:
        for key in (*tls_keys, "tls_verify_client"):
            if key in sip.model_fields_set and getattr(sip, key) not in (None, False):
                issues.append(loaded.issue(("sip", key), f"sip.{key} is set but sip.tls (the TLS "
                                                         "listener) is not"))
        return issues
    for key in ("tls_cert", "tls_key"):
        if getattr(sip, key) is None:
            issues.append(loaded.issue(("sip", "tls"), f"sip.tls needs sip.{key} (a PEM file; "
                                                       "`make run` makes a development pair)"))
    if sip.tls_verify_client and sip.tls_ca is None:
        issues.append(loaded.issue(("sip", "tls_verify_client"),
                                   "verifying client certificates needs sip.tls_ca (the CA that "
                                   "issues them)"))
    for key in tls_keys:
        path: Path | None = getattr(sip, key)
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            issues.append(loaded.issue(("sip", key), f"cannot read {path}: {exc.strerror or exc}"))
    if sip.tcp is not None and sip.tls.port != 0 and sip.tls.port == sip.tcp.port and \
            _overlap(sip.tls.host, sip.tcp.host):
        issues.append(loaded.issue(("sip", "tls"), f"{sip.tls} is also sip.tcp's address"))
    if sip.tls.port != 0 and sip.tls.port == cfg.http.listen.port and \
            _overlap(sip.tls.host, cfg.http.listen.host):
        issues.append(loaded.issue(("sip", "tls"), f"{sip.tls} is also http.listen's address"))
    return issues


def _overlap(a: str, b: str) -> bool:
    """Could two bind addresses clash?  Equal, or either is a wildcard of the same family."""
    ia, ib = ipaddress.ip_address(a), ipaddress.ip_address(b)
    if ia == ib:
        return True
    return ia.version == ib.version and (ia.is_unspecified or ib.is_unspecified)


def load_config(path: str | Path, *, check_policy: bool = True) -> GatewayConfig:
    """Read, validate and return the node configuration at ``path``.

    Raises :class:`ConfigUnreadable` when the file cannot be read and :class:`ConfigError`
    (all problems at once, each ``FILE:LINE:COL: reason``) when it is invalid.  With
    ``check_policy`` (the default) the policy file it names is loaded too and its problems
    are included, so nothing starts on a policy that would be refused.
    """
    name = str(path)
    try:
        loaded = load_file(path, display=name)
    except YamlError as exc:
        raise ConfigError([exc.issue]) from None
    except OSError as exc:
        raise ConfigUnreadable(name, exc.strerror or str(exc)) from None
    base_dir = Path(path).resolve().parent
    cfg, issues = validate(GatewayConfig, loaded, context={"base_dir": base_dir})
    if cfg is None:
        raise ConfigError(issues)
    issues = _cross_checks(cfg, loaded)
    if check_policy:
        issues += _policy_issues(cfg, loaded)
    if issues:
        raise ConfigError(issues)
    log.info("config.loaded", file=name, policy=str(cfg.policy))
    return cfg


def _policy_issues(cfg: GatewayConfig, loaded: Loaded) -> list[Issue]:
    from gateway.policy import PolicyError, PolicyUnreadable, load_policy

    try:
        load_policy(cfg.policy)
    except PolicyUnreadable as exc:
        return [loaded.issue(("policy",), f"cannot read policy file {cfg.policy}: {exc.reason}")]
    except PolicyError as exc:
        return list(exc.errors)
    return []
