"""One field list for the per-meeting settings: ``defaults``, profiles and meetings take the same
keys with the same types and bounds (gateway/policy.py writes them once), and the frozen objects
hold exactly :data:`gateway.policy.SETTINGS`."""

from __future__ import annotations

from dataclasses import fields

import pytest

from gateway.policy import (
    SETTINGS,
    Defaults,
    MeetingPolicy,
    MeetingSettings,
    PolicyError,
    parse_policy,
)

BAD_VALUES = [
    "pin: 1234", 'pin: "12a4"', "video: on", "lobby: yes", "max_participants: 0",
    "max_participants: 10001", "pin_attempts: 0", "pin_attempts: 21", "audio_codecs: []",
    "audio_codecs: [G729]", "video_codecs: [VP9]", "protocols: [sip, sip]", "protocols: [sip, x]",
    "legacy_media: maybe", "signaling: tls", "allowed_networks: [nowhere]", "recording: maybe",
    "dtmf_relay: 1", "lobby:",
]


def test_the_frozen_objects_hold_every_setting_once() -> None:
    names = [f.name for f in fields(MeetingSettings)]
    assert sorted(names) == sorted(SETTINGS) and len(names) == len(set(names))
    assert [f.name for f in fields(Defaults)] == names
    assert set(SETTINGS) <= {f.name for f in fields(MeetingPolicy)}
    assert {f.name for f in fields(MeetingPolicy)} - set(SETTINGS) == {"meeting", "configured", "origins",
                                                                      "profile"}


def test_a_meeting_inherits_every_default_it_does_not_set() -> None:
    policy = parse_policy("version: 1\nunknown_meetings: defaults\n")
    mp = policy.for_meeting("anything")
    assert mp is not None
    assert all(getattr(mp, k) == getattr(policy.defaults, k) == getattr(MeetingSettings(), k) for k in SETTINGS)


def _message(text: str) -> str:
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "policy.yaml")
    (issue,) = err.value.errors
    return issue.message


@pytest.mark.parametrize("entry", BAD_VALUES)
def test_defaults_profiles_and_meetings_refuse_a_bad_value_alike(entry: str) -> None:
    """The same message (after the key path) wherever the key is written."""
    in_defaults = _message("version: 1\ndefaults: {" + entry + "}\n")
    in_profile = _message("version: 1\nprofiles:\n  p: {" + entry + "}\n")
    in_meeting = _message("version: 1\nmeetings:\n  m: {" + entry + "}\n")
    key = entry.split(":")[0]
    texts = {m.split(f"{key}", 1)[1] for m in (in_defaults, in_profile, in_meeting)}
    assert len(texts) == 1, (in_defaults, in_profile, in_meeting)
    assert "1234" not in in_profile  # a PIN is never echoed back
