"""Policy v1: which meetings legacy calls may join, over which protocols, with what media security
and (``signaling``) over which signalling transport.

Policy is data: the YAML file is parsed once per (re)load into frozen objects, and a
bad file is refused as a whole (:class:`PolicyError`, one :class:`PolicyIssue` per
problem with file, line, column and key path), so the caller can keep the previous
policy in force.  Nothing here does I/O beyond reading the file, and nothing is
mutable afterwards, so one :class:`Policy` can be shared by every call.

Decisions about meeting ids (see docs/policy.md):

* ids are strings in the charset the conference core accepts
  (``[A-Za-z0-9._-]{1,64}``, not ``.``/``..``), so every configured meeting is joinable;
* an unquoted key is taken *as written*: ``1001:`` is meeting ``"1001"`` and
  ``0100:`` is ``"0100"`` (our loader keeps key text, it never goes through an int);
  ``1001`` and ``"1001"`` in the same file are therefore a duplicate key;
* lookup is exact (case-sensitive), as SIP user parts are.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import structlog
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator
from pydantic_core import PydanticCustomError

from gateway.yamlmarks import (
    Issue,
    Loaded,
    YamlError,
    format_path,
    load_file,
    loads,
    validate,
)

log = structlog.get_logger("gateway.policy")

LegacyMedia = Literal["allow-plain", "prefer-srtp", "require-srtp"]
Protocol = Literal["sip", "h323"]
UnknownMeetings = Literal["defaults", "reject"]
#: ``tls-required``: a SIP INVITE must arrive over TLS (RFC 3261 26.2), else 403 with a Warning.
Signaling = Literal["any", "tls-required"]
#: What a reload does to calls its tightened ``legacy_media``/``signaling`` no longer admits.
OnTighten = Literal["end", "keep"]

#: Codecs the legacy audio leg can carry (``audio_codecs`` restricts them; written in any case).
AudioCodec = Literal["PCMU", "PCMA", "G722", "OPUS"]
#: Video codecs a meeting may carry toward room systems (metadata until video legs exist).
VideoCodec = Literal["VP8", "H264"]
#: Surfaced to the core as meeting metadata; the gateway itself never records.
Recording = Literal["forbidden", "allowed"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

AUDIO_CODECS: tuple[AudioCodec, ...] = get_args(AudioCodec)
#: Opus is opt-in (``audio_codecs: [OPUS, ...]``): the default keeps answering room systems as
#: before the gateway knew Opus, since many list it first and would silently switch codec.
DEFAULT_AUDIO_CODECS: tuple[AudioCodec, ...] = ("PCMU", "PCMA", "G722")
VIDEO_CODECS: tuple[VideoCodec, ...] = get_args(VideoCodec)
#: Every per-meeting setting (meeting > profile > defaults), in the order ``policy explain`` lists them.
SETTINGS: tuple[str, ...] = (
    "protocols", "signaling", "allowed_networks", "pin", "pin_attempts", "max_participants",
    "lobby", "legacy_media", "audio_codecs", "video", "video_codecs", "anonymous_names", "recording",
    "dtmf_relay")
#: A PIN is 1-16 digits, written as quoted text so leading zeros survive.
PIN = re.compile(r"[0-9]{1,16}")
LEGACY_MEDIA_VALUES: tuple[str, ...] = get_args(LegacyMedia)
SIGNALING_VALUES: tuple[str, ...] = get_args(Signaling)
PROTOCOLS: tuple[Protocol, ...] = get_args(Protocol)
SUPPORTED_VERSION = 1

#: Same charset as ``gateway.core.conference.MEETING_ID`` (a test keeps them equal): a meeting
#: the policy names must be one the core can host, and the id ends up in URLs and logs.
MEETING_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

#: Problems are reported as ``PolicyIssue(file, line, col, message)``; same shape as config's.
PolicyIssue = Issue


class PolicyError(Exception):
    """The policy file is invalid; ``errors`` lists every problem found (not just the first)."""

    def __init__(self, errors: list[PolicyIssue]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


class PolicyUnreadable(PolicyError):
    """The policy file could not be read at all (missing, permissions, a directory)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__([PolicyIssue(path, 0, 0, f"cannot read: {reason}")])

    def __str__(self) -> str:
        return f"{self.path}: cannot read: {self.reason}"


def is_meeting_id(text: str) -> bool:
    """Whether ``text`` is a meeting id the policy (and the conference core) accepts."""
    return bool(MEETING_ID.fullmatch(text)) and text not in (".", "..")


def _protocols_text(protocols: tuple[str, ...]) -> str:
    return "[" + ", ".join(protocols) + "]"


def setting_text(setting: str, value: Any) -> str:
    """A setting's value as a rule shows it.  A PIN is never shown (rules end up in Warning
    headers, logs and ``policy explain`` output): only whether one is set."""
    if setting == "pin":
        return "none" if value is None else "(set)"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


@dataclass(frozen=True, kw_only=True)
class MeetingSettings:
    """Every per-meeting setting (:data:`SETTINGS`) with its built-in default: what
    :class:`Defaults` holds and each :class:`MeetingPolicy` resolves."""

    legacy_media: LegacyMedia = "allow-plain"
    protocols: tuple[Protocol, ...] = PROTOCOLS
    signaling: Signaling = "any"
    audio_codecs: tuple[AudioCodec, ...] = DEFAULT_AUDIO_CODECS
    video_codecs: tuple[VideoCodec, ...] = VIDEO_CODECS
    video: bool = True
    #: None: no limit.  Counts the meeting's legacy roster and the core's participants.
    max_participants: int | None = None
    #: None: no PIN.  Kept out of repr so it never reaches a log line by accident.
    pin: str | None = field(default=None, repr=False)
    pin_attempts: int = 3
    lobby: bool = False
    anonymous_names: bool = True
    #: None: callers from anywhere; else only sources inside one of these networks.
    allowed_networks: tuple[IPNetwork, ...] | None = None
    recording: Recording = "forbidden"
    #: Digits a joined legacy participant keys are sent on to the meeting's other legacy
    #: participants (a cascaded bridge's PIN); IVR/PIN digits never are.
    dtmf_relay: bool = False


@dataclass(frozen=True, kw_only=True)
class MeetingPolicy(MeetingSettings):
    """The effective policy for one meeting, with where each setting came from.

    ``origins`` maps each setting to the rule that set it (``meetings."1001".legacy_media``
    or ``defaults.protocols``) so every admission decision can name its rule.
    ``configured`` is False for a meeting admitted through ``unknown_meetings: defaults``.
    """

    meeting: str
    configured: bool
    origins: Mapping[str, str] = field(default_factory=dict, hash=False)
    #: The profile the meeting inherits (``profile: secure``), if any.
    profile: str | None = None

    def allows(self, protocol: str) -> bool:
        return protocol in self.protocols

    def allows_source(self, address: str) -> bool:
        """Whether a caller at ``address`` may join (``allowed_networks``); unparsable -> no."""
        if self.allowed_networks is None:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.allowed_networks)

    def rule(self, setting: str) -> str:
        """``<origin>=<value>``, e.g. ``meetings."1001".legacy_media=require-srtp`` (a PIN shows
        as ``(set)``, never its digits)."""
        if setting == "protocols":
            value = _protocols_text(self.protocols)
        else:
            value = setting_text(setting, getattr(self, setting))
        return f"{self.origins.get(setting, f'defaults.{setting}')}={value}"


@dataclass(frozen=True, kw_only=True)
class Defaults(MeetingSettings):
    """What meetings inherit for every key they do not set."""


@dataclass(frozen=True)
class Policy:
    """A whole, validated policy.  Immutable; share it freely."""

    version: int
    unknown_meetings: UnknownMeetings
    defaults: Defaults
    meetings: Mapping[str, MeetingPolicy] = field(default_factory=dict, hash=False)
    source: str | None = None
    #: On reload, whether calls the new policy no longer admits (``legacy_media``/``signaling``
    #: tightened for their meeting) are ended (``end``) or keep the policy they joined under.
    on_tighten: OnTighten = "end"
    #: Named settings bundles meetings inherit (``profile: secure``), as written (partial).
    #: Out of repr: a profile may hold a PIN.
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False, repr=False)
    #: ``policy check`` warnings: valid but probably not what was meant (FILE:LINE:COL).
    warnings: tuple[PolicyIssue, ...] = ()

    def for_meeting(self, meeting: str) -> MeetingPolicy | None:
        """The effective policy for ``meeting``: its own entry, else the defaults (as an
        unconfigured meeting), or None when unknown meetings are rejected."""
        found = self.meetings.get(meeting)
        if found is not None:
            return found
        if self.unknown_meetings == "reject":
            return None
        values = {f.name: getattr(self.defaults, f.name) for f in fields(Defaults)}
        return MeetingPolicy(
            meeting=meeting, configured=False,
            origins=MappingProxyType({k: f"defaults.{k}" for k in SETTINGS}), **values)

    def summary(self) -> str:
        """One line for ``roomgate policy check``."""
        n = len(self.meetings)
        unknown = ("unknown meetings use defaults" if self.unknown_meetings == "defaults"
                   else "unknown meetings are rejected")
        return f"version {self.version}, {n} meeting{'' if n == 1 else 's'}, {unknown}"


# --- the document schema (validation only; converted to the objects above) -----------------


class _Doc(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def _unique_protocols(value: list[str]) -> list[str]:
    dupes = sorted({p for p in value if value.count(p) > 1})
    if dupes:
        raise PydanticCustomError("protocols", "{dupes} listed more than once", {"dupes": ", ".join(dupes)})
    return value


def _refuse_null(value: Any, allowed: tuple[str, ...]) -> Any:
    if value is None:
        raise PydanticCustomError(
            "not_null", "no value given: write one of {values}, or remove the key to inherit",
            {"values": ", ".join(allowed)})
    return value


class _MeetingSettingsDoc(_Doc):
    """The checks shared by ``defaults`` and each meeting (the fields are declared by each)."""

    @field_validator("signaling", mode="before", check_fields=False)
    @classmethod
    def _check_signaling(cls, value: Any) -> Any:
        return _refuse_null(value, SIGNALING_VALUES)

    @field_validator("legacy_media", mode="before", check_fields=False)
    @classmethod
    def _check_media(cls, value: Any) -> Any:
        return _refuse_null(value, LEGACY_MEDIA_VALUES)

    @field_validator("protocols", mode="before", check_fields=False)
    @classmethod
    def _protocols_given(cls, value: Any) -> Any:
        if value is None:
            raise PydanticCustomError("protocols", "expected a list of protocols (sip, h323), got null")
        return value

    @field_validator("protocols", check_fields=False)
    @classmethod
    def _check_protocols(cls, value: Any) -> Any:
        return _unique_protocols(value)

    @field_validator("audio_codecs", "video_codecs", "video", "max_participants", "pin_attempts",
                     "lobby", "anonymous_names", "allowed_networks", "recording", "dtmf_relay",
                     mode="before", check_fields=False)
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise PydanticCustomError("not_null", "no value given: remove the key to inherit")
        return value

    @field_validator("audio_codecs", mode="before", check_fields=False)
    @classmethod
    def _audio_codec_case(cls, value: Any) -> Any:
        # SDP encoding names are case-insensitive (RFC 4855 3) and Opus is usually written "opus".
        if isinstance(value, list):
            return [c.upper() if isinstance(c, str) else c for c in value]
        return value

    @field_validator("audio_codecs", "video_codecs", check_fields=False)
    @classmethod
    def _codec_list(cls, value: Any) -> Any:
        if not value:
            raise PydanticCustomError("codecs", "list at least one codec (or leave the key out)")
        dupes = sorted({c for c in value if value.count(c) > 1})
        if dupes:
            raise PydanticCustomError("codecs", "{dupes} listed more than once", {"dupes": ", ".join(dupes)})
        return value

    @field_validator("pin", mode="before", check_fields=False)
    @classmethod
    def _check_pin(cls, value: Any) -> Any:
        # The digits are never echoed back: error messages end up in logs.
        if value is None:
            raise PydanticCustomError("pin", "no value given: remove the key for no PIN")
        if isinstance(value, int) and not isinstance(value, bool):
            raise PydanticCustomError("pin", 'write the PIN quoted, as text (pin: "0123"), so '
                                             "leading zeros are kept")
        if not isinstance(value, str) or not PIN.fullmatch(value):
            raise PydanticCustomError("pin", "a PIN is 1-16 digits 0-9, quoted")
        return value

    @field_validator("allowed_networks", check_fields=False)
    @classmethod
    def _check_networks(cls, value: Any) -> Any:
        for text in value:
            try:
                ipaddress.ip_network(text, strict=True)
            except ValueError as exc:
                raise PydanticCustomError("network", "{text!r} is not a network in CIDR form: {why}",
                                          {"text": text, "why": str(exc)}) from None
        return value


class _DefaultsDoc(_MeetingSettingsDoc):
    legacy_media: LegacyMedia = "allow-plain"
    protocols: list[Protocol] = Field(default_factory=lambda: list(PROTOCOLS))
    signaling: Signaling = "any"
    audio_codecs: list[AudioCodec] = Field(default_factory=lambda: list(DEFAULT_AUDIO_CODECS))
    video_codecs: list[VideoCodec] = Field(default_factory=lambda: list(VIDEO_CODECS))
    video: bool = True
    max_participants: int | None = Field(default=None, ge=1, le=10000)
    pin: str | None = None
    pin_attempts: int = Field(default=3, ge=1, le=20)
    lobby: bool = False
    anonymous_names: bool = True
    allowed_networks: list[str] | None = None
    recording: Recording = "forbidden"
    dtmf_relay: bool = False


def _inheriting(name: str, settings: type[_MeetingSettingsDoc], **extra: Any) -> Any:
    """A document model with ``settings``' fields, each Optional with default None and the same
    bounds, plus ``extra`` fields: so that "not written" (inherit) is representable while the
    field list, types and bounds are written once (:class:`_DefaultsDoc`).  An explicit null is
    refused by the before-validators, because it is far more often a slip than a wish."""
    optional: dict[str, Any] = {}
    for key, info in settings.model_fields.items():
        annotation: Any = info.annotation
        optional[key] = (Annotated[(annotation | None, *info.metadata)] if info.metadata
                         else annotation | None, None)
    return create_model(name, __base__=_MeetingSettingsDoc, **optional, **extra)


if TYPE_CHECKING:  # what the type checker needs to know of the models built below
    class _ProfileDoc(_MeetingSettingsDoc):
        pass

    class _MeetingDoc(_ProfileDoc):
        profile: str | None
else:
    _ProfileDoc = _inheriting("_ProfileDoc", _DefaultsDoc)
    #: ``profile``: the name of a profile under ``profiles`` whose settings this meeting inherits.
    _MeetingDoc = _inheriting("_MeetingDoc", _DefaultsDoc, profile=(str | None, None))


class _PolicyDoc(_Doc):
    version: int
    unknown_meetings: UnknownMeetings = "defaults"
    on_tighten: OnTighten = "end"
    defaults: _DefaultsDoc = Field(default_factory=_DefaultsDoc)
    profiles: dict[str, _ProfileDoc | None] = Field(default_factory=dict)
    meetings: dict[str, _MeetingDoc | None] = Field(default_factory=dict)

    @field_validator("version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != SUPPORTED_VERSION:
            raise PydanticCustomError(
                "version", "unsupported policy version {v}; this roomgate reads version {s}",
                {"v": value, "s": SUPPORTED_VERSION})
        return value

    @field_validator("meetings", "profiles", mode="before")
    @classmethod
    def _null_meetings(cls, value: Any) -> Any:
        return {} if value is None else value  # "meetings:" with nothing under it = none


def _meeting_id_issues(loaded: Loaded) -> list[PolicyIssue]:
    """Bad meeting ids, found on the raw data so they are reported alongside schema errors."""
    meetings = loaded.data.get("meetings") if isinstance(loaded.data, dict) else None
    if not isinstance(meetings, dict):
        return []
    return [loaded.issue(("meetings", m), "not a valid meeting id: use 1-64 letters, digits, "
                                          "'.', '_' or '-'", prefer="key")
            for m in meetings if not is_meeting_id(m)]


def _setting_value(key: str, value: Any) -> Any:
    """A validated document value as :class:`MeetingPolicy` holds it (tuples, networks)."""
    if key == "allowed_networks":
        return None if value is None else tuple(ipaddress.ip_network(t) for t in value)
    return tuple(value) if isinstance(value, list) else value


def _profile_issues(loaded: Loaded) -> list[PolicyIssue]:
    """``profile:`` naming no entry under ``profiles`` (found on the raw data, with its mark)."""
    data = loaded.data if isinstance(loaded.data, dict) else {}
    meetings, profiles = data.get("meetings"), data.get("profiles") or {}
    if not isinstance(meetings, dict) or not isinstance(profiles, dict):
        return []
    issues = []
    for m, entry in meetings.items():
        name = entry.get("profile") if isinstance(entry, dict) else None
        if isinstance(name, str) and name not in profiles:
            known = ", ".join(sorted(profiles)) or "none defined"
            issues.append(loaded.issue(("meetings", m, "profile"),
                                       f"no profile {name!r} under profiles (known: {known})"))
    return issues


def _build(doc: _PolicyDoc, loaded: Loaded) -> Policy:
    """The frozen policy: each meeting setting resolved meeting > profile > defaults, with its
    origin recorded so decisions can name the rule."""
    defaults = Defaults(**{k: _setting_value(k, getattr(doc.defaults, k)) for k in SETTINGS})
    profiles = {name: (entry.model_dump(include=entry.model_fields_set) if entry is not None else {})
                for name, entry in doc.profiles.items()}
    meetings: dict[str, MeetingPolicy] = {}
    for meeting_id, entry in doc.meetings.items():
        here = format_path(("meetings", meeting_id))
        written = entry.model_fields_set if entry is not None else set()
        profile = entry.profile if entry is not None else None
        layers: list[tuple[str, Mapping[str, Any]]] = [
            (here, {k: getattr(entry, k) for k in written if k in SETTINGS} if entry else {})]
        if profile is not None:
            layers.append((format_path(("profiles", profile)), profiles.get(profile, {})))
        values: dict[str, Any] = {}
        origins: dict[str, str] = {}
        for key in SETTINGS:
            for origin, layer in layers:
                if key in layer:
                    values[key], origins[key] = _setting_value(key, layer[key]), f"{origin}.{key}"
                    break
            else:
                values[key], origins[key] = getattr(defaults, key), f"defaults.{key}"
        meetings[meeting_id] = MeetingPolicy(meeting=meeting_id, configured=True, profile=profile,
                                             origins=MappingProxyType(origins), **values)
    return Policy(version=doc.version, unknown_meetings=doc.unknown_meetings, defaults=defaults,
                  meetings=MappingProxyType(meetings), source=loaded.file, on_tighten=doc.on_tighten,
                  profiles=MappingProxyType(profiles))


def _origin_path(origin: str, loaded: Loaded) -> tuple[str, ...]:
    """The YAML path of an origin like ``meetings."1001".pin`` (for a warning's mark)."""
    for top in ("meetings", "profiles"):
        data = loaded.data.get(top) if isinstance(loaded.data, dict) else None
        for name in (data or {}):
            prefix = format_path((top, name)) + "."
            if origin.startswith(prefix):
                return (top, name, origin[len(prefix):])
    return tuple(origin.split("."))


def policy_warnings(policy: Policy, loaded: Loaded) -> list[PolicyIssue]:
    """Settings that are valid but cannot do what they seem to mean, at FILE:LINE:COL."""
    out: list[PolicyIssue] = []

    def warn(mp: MeetingPolicy, key: str, text: str) -> None:
        origin = mp.origins[key]
        issue = (loaded.issue(("meetings", mp.meeting), text, prefer="key")
                 if origin.startswith("defaults.") else loaded.issue(_origin_path(origin, loaded), text))
        out.append(PolicyIssue(issue.file, issue.line, issue.col,
                               f"warning: meetings.{format_path((mp.meeting,))}: {text}"))

    for mp in policy.meetings.values():
        if "h323" in mp.protocols and mp.legacy_media == "require-srtp":
            warn(mp, "protocols", f"allows h323 but {mp.rule('legacy_media')}: H.323 legs are plain "
                                  "RTP, so every H.323 call will be refused")
        if "h323" in mp.protocols and mp.signaling == "tls-required":
            warn(mp, "protocols", f"allows h323 but {mp.rule('signaling')}: H.323 signalling is "
                                  "plain TCP, so every H.323 call will be refused")
        if mp.pin is not None and mp.lobby:
            warn(mp, "lobby", "has both a pin and lobby=true: callers who know the PIN still wait "
                              "in the lobby")
        if mp.pin is None and not mp.origins["pin_attempts"].startswith("defaults."):
            warn(mp, "pin_attempts", "sets pin_attempts but has no pin")
        if mp.allowed_networks == ():
            warn(mp, "allowed_networks", "allowed_networks is empty: no legacy caller can join")
        if not mp.video and not mp.origins["video_codecs"].startswith("defaults."):
            warn(mp, "video_codecs", "sets video_codecs but video is false")
        if not mp.protocols:
            warn(mp, "protocols", "protocols is empty: no legacy caller can join")
    return sorted(set(out))


def _from_loaded(loaded: Loaded) -> Policy:
    doc, issues = validate(_PolicyDoc, loaded)
    issues = sorted(set(issues + _meeting_id_issues(loaded) + _profile_issues(loaded)))
    if doc is None or issues:
        raise PolicyError(issues)
    policy = _build(doc, loaded)
    return replace(policy, warnings=tuple(policy_warnings(policy, loaded)))


def parse_policy(text: str, file: str = "<policy>") -> Policy:
    """Parse policy YAML given as text (``file`` names it in errors).  Raises :class:`PolicyError`."""
    try:
        loaded = loads(text, file)
    except YamlError as exc:
        raise PolicyError([exc.issue]) from None
    return _from_loaded(loaded)


def load_policy(path: str | Path) -> Policy:
    """Read and validate the policy file at ``path``.

    Raises :class:`PolicyUnreadable` if it cannot be read, :class:`PolicyError` (every
    problem, each with file, line, column and key) if it is invalid.  Errors name the file
    as ``path`` was given, so ``roomgate policy check policy.yaml`` says ``policy.yaml:7:19``.
    """
    name = str(path)
    try:
        loaded = load_file(path, display=name)
    except YamlError as exc:
        raise PolicyError([exc.issue]) from None
    except OSError as exc:
        raise PolicyUnreadable(name, exc.strerror or str(exc)) from None
    policy = _from_loaded(loaded)
    log.info("policy.loaded", file=name, meetings=len(policy.meetings),
             unknown_meetings=policy.unknown_meetings)
    return policy
