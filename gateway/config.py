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


# --- the document ---------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class SipConfig(_Section):
    """SIP listeners; omit or null one to disable it."""

    udp: HostPortField | None = None
    tcp: HostPortField | None = None


class HttpConfig(_Section):
    """The HTTP listener: the embedded conference core, its web page, and /healthz."""

    listen: HostPortField = Field(default_factory=lambda: HostPort("127.0.0.1", 8080))


class MediaConfig(_Section):
    """Legacy-side RTP: the address written into SDP answers and the UDP port range."""

    address: ConcreteIp = "127.0.0.1"
    ports: PortRangeField = Field(default_factory=lambda: PortRange(20000, 29999))


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


class GatewayConfig(_Section):
    """The whole node configuration.  ``policy`` is an absolute path once loaded."""

    sip: SipConfig
    http: HttpConfig = Field(default_factory=HttpConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    webrtc: WebRtcConfig = Field(default_factory=WebRtcConfig)
    core: CoreConfig = Field(default_factory=CoreConfig)
    policy: Annotated[Path, Field(strict=False)]
    log: LogConfig = Field(default_factory=LogConfig)

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
    if sip.udp is None and sip.tcp is None:
        issues.append(loaded.issue(("sip",), "no SIP listener: set udp, tcp or both "
                                             "(e.g. udp: \"127.0.0.1:5060\")"))
    listeners: list[tuple[tuple[str, ...], str, HostPort]] = []
    if sip.udp is not None:
        listeners.append((("sip", "udp"), "udp", sip.udp))
    if sip.tcp is not None:
        listeners.append((("sip", "tcp"), "tcp", sip.tcp))
    listeners.append((("http", "listen"), "tcp", cfg.http.listen))
    if sip.tcp is not None and sip.tcp.port != 0 and sip.tcp.port == cfg.http.listen.port and \
            _overlap(sip.tcp.host, cfg.http.listen.host):
        issues.append(loaded.issue(("http", "listen"), f"{cfg.http.listen} is also sip.tcp's address"))
    for path, proto, hp in listeners:
        if proto == "udp" and hp.port in cfg.media.ports and _overlap(hp.host, cfg.media.address):
            issues.append(loaded.issue(path, f"port {hp.port} lies inside media.ports "
                                             f"{cfg.media.ports}; media calls would collide with it"))
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
