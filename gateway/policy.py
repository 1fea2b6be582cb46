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

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator
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


@dataclass(frozen=True)
class MeetingPolicy:
    """The effective policy for one meeting, with where each setting came from.

    ``origins`` maps each setting to the rule that set it (``meetings."1001".legacy_media``
    or ``defaults.protocols``) so every admission decision can name its rule.
    ``configured`` is False for a meeting admitted through ``unknown_meetings: defaults``.
    """

    meeting: str
    legacy_media: LegacyMedia
    protocols: tuple[Protocol, ...]
    configured: bool
    origins: Mapping[str, str] = field(default_factory=dict, hash=False)
    signaling: Signaling = "any"

    def allows(self, protocol: str) -> bool:
        return protocol in self.protocols

    def rule(self, setting: Literal["legacy_media", "protocols", "signaling"]) -> str:
        """``<origin>=<value>``, e.g. ``meetings."1001".legacy_media=require-srtp``."""
        value: str
        if setting == "legacy_media":
            value = self.legacy_media
        elif setting == "signaling":
            value = self.signaling
        else:
            value = _protocols_text(self.protocols)
        return f"{self.origins.get(setting, f'defaults.{setting}')}={value}"


@dataclass(frozen=True)
class Defaults:
    """What meetings inherit for every key they do not set."""

    legacy_media: LegacyMedia = "allow-plain"
    protocols: tuple[Protocol, ...] = PROTOCOLS
    signaling: Signaling = "any"


@dataclass(frozen=True)
class Policy:
    """A whole, validated policy.  Immutable; share it freely."""

    version: int
    unknown_meetings: UnknownMeetings
    defaults: Defaults
    meetings: Mapping[str, MeetingPolicy] = field(default_factory=dict, hash=False)
    source: str | None = None

    def for_meeting(self, meeting: str) -> MeetingPolicy | None:
        """The effective policy for ``meeting``: its own entry, else the defaults (as an
        unconfigured meeting), or None when unknown meetings are rejected."""
        found = self.meetings.get(meeting)
        if found is not None:
            return found
        if self.unknown_meetings == "reject":
            return None
        return MeetingPolicy(
            meeting=meeting,
            legacy_media=self.defaults.legacy_media,
            protocols=self.defaults.protocols,
            configured=False,
            origins=MappingProxyType({"legacy_media": "defaults.legacy_media",
                                      "protocols": "defaults.protocols",
                                      "signaling": "defaults.signaling"}),
            signaling=self.defaults.signaling,
        )

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


class _DefaultsDoc(_MeetingSettingsDoc):
    legacy_media: LegacyMedia = "allow-plain"
    protocols: list[Protocol] = Field(default_factory=lambda: list(PROTOCOLS))
    signaling: Signaling = "any"


class _MeetingDoc(_MeetingSettingsDoc):
    # Declared Optional so that "not written" (inherit) is representable; an explicit null is
    # refused by the before-validators, because it is far more often a slip than a wish.
    legacy_media: LegacyMedia | None = None
    protocols: list[Protocol] | None = None
    signaling: Signaling | None = None


class _PolicyDoc(_Doc):
    version: int
    unknown_meetings: UnknownMeetings = "defaults"
    defaults: _DefaultsDoc = Field(default_factory=_DefaultsDoc)
    meetings: dict[str, _MeetingDoc | None] = Field(default_factory=dict)

    @field_validator("version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != SUPPORTED_VERSION:
            raise PydanticCustomError(
                "version", "unsupported policy version {v}; this roomgate reads version {s}",
                {"v": value, "s": SUPPORTED_VERSION})
        return value

    @field_validator("meetings", mode="before")
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


def _build(doc: _PolicyDoc, loaded: Loaded) -> Policy:
    defaults = Defaults(legacy_media=doc.defaults.legacy_media,
                        protocols=tuple(doc.defaults.protocols),
                        signaling=doc.defaults.signaling)
    meetings: dict[str, MeetingPolicy] = {}
    for meeting_id, entry in doc.meetings.items():
        written = entry.model_fields_set if entry is not None else set()
        here = format_path(("meetings", meeting_id))
        origins = {
            "legacy_media": f"{here}.legacy_media" if "legacy_media" in written else "defaults.legacy_media",
            "protocols": f"{here}.protocols" if "protocols" in written else "defaults.protocols",
            "signaling": f"{here}.signaling" if "signaling" in written else "defaults.signaling",
        }
        legacy_media = entry.legacy_media if entry is not None and entry.legacy_media is not None \
            else defaults.legacy_media
        protocols = tuple(entry.protocols) if entry is not None and entry.protocols is not None \
            else defaults.protocols
        signaling = entry.signaling if entry is not None and entry.signaling is not None \
            else defaults.signaling
        meetings[meeting_id] = MeetingPolicy(
            meeting=meeting_id, legacy_media=legacy_media, protocols=protocols, configured=True,
            origins=MappingProxyType(origins), signaling=signaling)
    return Policy(version=doc.version, unknown_meetings=doc.unknown_meetings, defaults=defaults,
                  meetings=MappingProxyType(meetings), source=loaded.file)


def _from_loaded(loaded: Loaded) -> Policy:
    doc, issues = validate(_PolicyDoc, loaded)
    issues = sorted(set(issues + _meeting_id_issues(loaded)))
    if doc is None or issues:
        raise PolicyError(issues)
    return _build(doc, loaded)


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
