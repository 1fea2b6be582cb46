"""Policy v1: parsing into immutable objects, inheritance, meeting ids, errors with file:line:col."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.policy import (
    MEETING_ID,
    Policy,
    PolicyError,
    PolicyIssue,
    PolicyUnreadable,
    load_policy,
    parse_policy,
)

ROOT = Path(__file__).resolve().parents[2]

EXAMPLE = """\
version: 1
unknown_meetings: defaults
defaults:
  legacy_media: prefer-srtp
  protocols: [sip, h323]
meetings:
  "1000": {}
  "1001": {legacy_media: require-srtp}
  "1002":
    protocols: [sip]
"""


def errors_of(text: str, file: str = "policy.yaml") -> list[str]:
    with pytest.raises(PolicyError) as err:
        parse_policy(text, file)
    return [str(e) for e in err.value.errors]


def test_shipped_policy_yaml_is_valid() -> None:
    policy = load_policy(ROOT / "config" / "policy.yaml")
    assert policy.version == 1
    assert policy.unknown_meetings == "defaults"
    m1000, m1001 = policy.for_meeting("1000"), policy.for_meeting("1001")
    assert m1000 is not None and m1000.legacy_media == "allow-plain" and m1000.configured
    assert m1001 is not None and m1001.legacy_media == "require-srtp"


def test_inheritance_from_defaults() -> None:
    p = parse_policy(EXAMPLE)
    m = p.for_meeting("1001")
    assert m is not None
    assert m.legacy_media == "require-srtp"
    assert m.protocols == ("sip", "h323")  # inherited
    assert {k: m.origins[k] for k in ("legacy_media", "protocols", "signaling")} == {
        "legacy_media": 'meetings."1001".legacy_media', "protocols": "defaults.protocols",
        "signaling": "defaults.signaling"}
    assert all(m.origins[k] == f"defaults.{k}" for k in m.origins if k != "legacy_media")
    m2 = p.for_meeting("1002")
    assert m2 is not None and m2.legacy_media == "prefer-srtp" and m2.protocols == ("sip",)
    assert m2.rule("protocols") == 'meetings."1002".protocols=[sip]'
    assert m2.rule("legacy_media") == "defaults.legacy_media=prefer-srtp"


def test_unknown_meeting_uses_defaults_or_is_rejected() -> None:
    p = parse_policy(EXAMPLE)
    m = p.for_meeting("9999")
    assert m is not None and not m.configured and m.legacy_media == "prefer-srtp"
    r = parse_policy(EXAMPLE.replace("unknown_meetings: defaults", "unknown_meetings: reject"))
    assert r.for_meeting("9999") is None
    assert r.for_meeting("1000") is not None


def test_built_in_defaults() -> None:
    p = parse_policy("version: 1\n")
    assert p.unknown_meetings == "defaults"
    assert p.defaults.legacy_media == "allow-plain"
    assert p.defaults.protocols == ("sip", "h323")
    assert dict(p.meetings) == {}


def test_null_meeting_entry_and_empty_meetings() -> None:
    p = parse_policy('version: 1\nmeetings:\n  "7":\n')
    assert p.for_meeting("7") is not None and p.for_meeting("7").configured  # type: ignore[union-attr]
    assert dict(parse_policy("version: 1\nmeetings:\n").meetings) == {}


def test_int_keys_are_taken_as_written() -> None:
    p = parse_policy("version: 1\nunknown_meetings: reject\nmeetings:\n  1001: {}\n  0100: {}\n")
    assert set(p.meetings) == {"1001", "0100"}
    assert p.for_meeting("100") is None


def test_objects_are_immutable() -> None:
    p = parse_policy(EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.unknown_meetings = "reject"  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.meetings["x"] = p.meetings["1000"]  # type: ignore[index]
    with pytest.raises(TypeError):
        p.meetings["1000"].origins["protocols"] = "x"  # type: ignore[index]


def test_summary() -> None:
    assert parse_policy(EXAMPLE).summary() == "version 1, 3 meetings, unknown meetings use defaults"
    assert parse_policy("version: 1\nunknown_meetings: reject\nmeetings: {a: {}}\n").summary() == \
        "version 1, 1 meeting, unknown meetings are rejected"


def test_wrong_enum_value_names_file_line_col_and_key() -> None:
    text = EXAMPLE.replace("require-srtp", "require-srpt")
    assert errors_of(text) == [
        ("policy.yaml:8:26: meetings.\"1001\".legacy_media: 'require-srpt' is not one of "
         "allow-plain, prefer-srtp, require-srtp")]


def test_issue_fields() -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy("version: 1\ndefaults: {legacy_media: x}\n", "p.yaml")
    (issue,) = err.value.errors
    assert issue == PolicyIssue("p.yaml", 2, 26, issue.message)
    assert issue.message.startswith("defaults.legacy_media: 'x' is not one of")


@pytest.mark.parametrize("word", ["off", "no", "yes", "on"])
def test_yaml11_boolean_words_are_reported_as_words(word: str) -> None:
    (msg,) = errors_of(f"version: 1\nunknown_meetings: {word}\n")
    assert msg == f"policy.yaml:2:19: unknown_meetings: '{word}' is not one of defaults, reject"


def test_real_boolean_is_reported_clearly() -> None:
    (msg,) = errors_of("version: 1\ndefaults: {legacy_media: false}\n")
    assert "defaults.legacy_media: false is not one of allow-plain" in msg
    assert "quotes" in msg


def test_unknown_key_reported_with_its_line() -> None:
    msgs = errors_of("version: 1\ndefaults:\n  legacy_media: allow-plain\n  protocol: [sip]\n")
    assert msgs == ["policy.yaml:4:3: defaults.protocol: unknown key (expected one of: legacy_media, protocols, signaling, audio_codecs, video_codecs, video, max_participants, pin, pin_attempts, lobby, anonymous_names, allowed_networks, recording, dtmf_relay)"]
    (top,) = errors_of("version: 1\nmeeting: {}\n")
    assert top.startswith("policy.yaml:2:1: meeting: unknown key (expected one of: version,")


def test_wrong_indentation_reported_with_file_and_line() -> None:
    (msg,) = errors_of("version: 1\nmeetings:\n  \"1\":\n    legacy_media: allow-plain\n   protocols: [sip]\n")
    assert msg.startswith("policy.yaml:5:")
    assert "indentation" in msg


def test_duplicate_meeting() -> None:
    (msg,) = errors_of('version: 1\nmeetings:\n  1001: {}\n  "1001": {}\n')
    assert msg == 'policy.yaml:4:3: duplicate key "1001" (first defined at line 3)'


def test_all_errors_reported_at_once() -> None:
    msgs = errors_of("version: 1\nmeetings:\n  a: {legacy_media: x}\n  'b c': {}\n  d: {protocols: [sip, sip]}\n"
                     "  e: {protocols: [h232]}\n  f: {legacy_media: }\n")
    assert [m.split(": ", 2)[1] for m in msgs] == [
        "meetings.a.legacy_media", 'meetings."b c"', "meetings.d.protocols",
        "meetings.e.protocols[0]", "meetings.f.legacy_media"]
    assert "listed more than once" in msgs[2]
    assert "remove the key to inherit" in msgs[4]


@pytest.mark.parametrize("text,fragment", [
    ("version: 2\n", "unsupported policy version 2"),
    ('version: "1"\n', "expected a whole number, got text '1'"),
    ("unknown_meetings: reject\n", "version: required key is missing"),
    ("", "the file is empty"),
    ("- 1\n", "expected a mapping at the top level"),
    ("version: 1\nmeetings: [a]\n", "meetings: expected a mapping, got a list"),
    ("version: 1\ndefaults: {protocols: sip}\n", "expected a list, got text 'sip'"),
    ("version: 1\ndefaults: {protocols: null}\n", "got null"),
    ("version: 1\nmeetings: {" + "x" * 65 + ": {}}\n", "not a valid meeting id"),
    ("version: 1\nmeetings: {'..': {}}\n", "not a valid meeting id"),
])
def test_schema_errors(text: str, fragment: str) -> None:
    msgs = errors_of(text)
    assert any(fragment in m for m in msgs), msgs


def test_empty_protocol_list_is_allowed() -> None:
    p = parse_policy("version: 1\nmeetings: {closed: {protocols: []}}\n")
    assert p.meetings["closed"].protocols == ()


def test_load_policy_names_file_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "policy.yaml").write_text("version: 1\nunknown_meetings: nope\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PolicyError) as err:
        load_policy("policy.yaml")
    assert str(err.value.errors[0]).startswith("policy.yaml:2:19: unknown_meetings:")


def test_unreadable(tmp_path: Path) -> None:
    with pytest.raises(PolicyUnreadable) as err:
        load_policy(tmp_path / "nope.yaml")
    assert isinstance(err.value, PolicyError)
    with pytest.raises(PolicyUnreadable):
        load_policy(tmp_path)  # a directory


def test_meeting_id_charset_matches_the_core() -> None:
    from gateway.core.conference import MEETING_ID as CORE_MEETING_ID

    assert MEETING_ID.pattern == CORE_MEETING_ID.pattern


def test_policy_type() -> None:
    assert isinstance(parse_policy(EXAMPLE), Policy)
