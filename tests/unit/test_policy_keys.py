"""Policy v1, complete: every per-meeting key (parse, validation with FILE:LINE:COL, inheritance
meeting > profile > defaults with origins), its enforcement in ``decide``, the warnings of
``policy check`` and the ``policy explain`` command."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from gateway.admission import Admit, Refuse, decide
from gateway.calls import audio_preference, shown_name
from gateway.cli import main
from gateway.policy import PolicyError, parse_policy

BASE = "version: 1\n"


def errors_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "policy.yaml")
    return [str(e) for e in err.value.errors]


def meeting(text: str, mid: str = "m"):
    mp = parse_policy(text, "policy.yaml").for_meeting(mid)
    assert mp is not None
    return mp


# --- each key: parsed, inherited, validated ---------------------------------------------------

def test_builtin_defaults_for_every_key() -> None:
    mp = meeting(BASE + "meetings: {m: {}}")
    assert mp.audio_codecs == ("PCMU", "PCMA", "G722") and mp.video_codecs == ("VP8", "H264")
    assert mp.video is True and mp.max_participants is None and mp.pin is None
    assert mp.pin_attempts == 3 and mp.lobby is False and mp.anonymous_names is True
    assert mp.allowed_networks is None and mp.recording == "forbidden" and mp.profile is None
    assert all(o.startswith("defaults.") for o in mp.origins.values())


def test_every_key_set_on_a_meeting() -> None:
    mp = meeting(BASE + """meetings:
  m:
    audio_codecs: [G722, PCMA]
    video_codecs: [H264]
    video: false
    max_participants: 5
    pin: "0123"
    pin_attempts: 4
    lobby: true
    anonymous_names: false
    allowed_networks: [10.0.0.0/8, "2001:db8::/32"]
    recording: allowed
""")
    assert mp.audio_codecs == ("G722", "PCMA") and mp.video_codecs == ("H264",) and mp.video is False
    assert mp.max_participants == 5 and mp.pin == "0123" and mp.pin_attempts == 4
    assert mp.lobby and not mp.anonymous_names and mp.recording == "allowed"
    assert mp.allowed_networks == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))
    assert mp.origins["pin"] == "meetings.m.pin" and mp.origins["video"] == "meetings.m.video"


def test_profile_precedence_meeting_over_profile_over_defaults() -> None:
    p = parse_policy(BASE + """defaults: {max_participants: 10, recording: allowed}
profiles:
  secure: {legacy_media: require-srtp, max_participants: 4, pin: "99"}
meetings:
  a: {profile: secure, max_participants: 2}
  b: {profile: secure}
  c: {}
""", "policy.yaml")
    a, b, c = (p.for_meeting(x) for x in "abc")
    assert a and b and c
    assert a.max_participants == 2 and a.origins["max_participants"] == "meetings.a.max_participants"
    assert b.max_participants == 4 and b.origins["max_participants"] == "profiles.secure.max_participants"
    assert c.max_participants == 10 and c.origins["max_participants"] == "defaults.max_participants"
    assert b.legacy_media == "require-srtp" and b.rule("legacy_media") == "profiles.secure.legacy_media=require-srtp"
    assert a.recording == "allowed" and a.origins["recording"] == "defaults.recording"
    assert a.profile == "secure" and c.profile is None


def test_unknown_profile_is_an_error_at_its_line() -> None:
    assert errors_of(BASE + "profiles: {secure: {}}\nmeetings:\n  m: {profile: secur}\n") == [
        "policy.yaml:4:16: meetings.m.profile: no profile 'secur' under profiles (known: secure)"]


@pytest.mark.parametrize("entry, fragment", [
    ("pin: 1234", "write the PIN quoted"),
    ('pin: "12a4"', "1-16 digits"),
    ("video: on", "video"),
    ("lobby: yes", "lobby"),
    ("anonymous_names: off", "anonymous_names"),
    ("max_participants: 0", "max_participants"),
    ("pin_attempts: 0", "pin_attempts"),
    ("audio_codecs: []", "at least one codec"),
    ("audio_codecs: [PCMU, PCMU]", "listed more than once"),
    ("audio_codecs: [G729]", "audio_codecs"),
    ("video_codecs: [VP9]", "video_codecs"),
    ("allowed_networks: [10.0.0.1/8]", "host bits set"),
    ("allowed_networks: [nowhere]", "not a network in CIDR form"),
    ("recording: maybe", "recording"),
    ("lobby:", "no value given"),
])
def test_bad_values_are_reported_with_line_and_column(entry: str, fragment: str) -> None:
    (msg,) = errors_of(BASE + "meetings:\n  m: {" + entry + "}\n")
    assert msg.startswith("policy.yaml:3:"), msg
    assert fragment in msg, msg
    assert "1234" not in msg or "pin: 1234" not in entry  # a PIN is never echoed back


def test_pin_never_shown_in_rules_or_repr() -> None:
    mp = meeting(BASE + 'meetings: {m: {pin: "4711"}}')
    assert mp.rule("pin") == "meetings.m.pin=(set)"
    assert "4711" not in repr(mp)


# --- enforcement --------------------------------------------------------------------------------

POLICY = parse_policy(BASE + """meetings:
  net: {allowed_networks: [10.0.0.0/8, "::ffff:192.0.2.0/120"]}
  pin: {pin: "1234", pin_attempts: 2}
  full: {max_participants: 2}
  lobby: {lobby: true}
""", "policy.yaml")


def sip(meeting_id: str, **kw: object) -> Admit | Refuse:
    return decide(POLICY, meeting=meeting_id, protocol="sip", transport="udp",
                  media_security="plain", **kw)  # type: ignore[arg-type]


def test_allowed_networks_refuses_others_with_403_naming_the_rule() -> None:
    assert isinstance(sip("net", source="10.1.2.3"), Admit)
    refused = sip("net", source="192.168.1.1")
    assert isinstance(refused, Refuse) and refused.sip_status == 403
    assert refused.rule == "meetings.net.allowed_networks=[10.0.0.0/8, ::ffff:c000:200/120]"
    assert "rule meetings.net.allowed_networks" in refused.warning and "192.168" not in refused.warning
    assert isinstance(sip("net", source="not-an-ip"), Refuse)
    assert isinstance(sip("1000", source="192.168.1.1"), Admit)  # no allowed_networks: anywhere


def test_pin_right_wrong_missing_and_locked_out() -> None:
    assert isinstance(sip("pin", pin="1234"), Admit) and not sip("pin", pin="1234").pin_required  # type: ignore[union-attr]
    missing = sip("pin")
    assert isinstance(missing, Admit) and missing.pin_required
    wrong = sip("pin", pin="0000")
    assert isinstance(wrong, Refuse) and wrong.sip_status == 403 and wrong.rule == "meetings.pin.pin=(set)"
    assert "0000" not in wrong.explain() and "1234" not in wrong.explain()
    locked = sip("pin", pin="1234", locked_out=True)
    assert isinstance(locked, Refuse) and locked.rule == "meetings.pin.pin_attempts=2"


def test_max_participants_refuses_486_when_full() -> None:
    assert isinstance(sip("full", participants=1), Admit)
    full = sip("full", participants=2)
    assert isinstance(full, Refuse) and (full.sip_status, full.reason) == (486, "Busy Here")
    assert full.rule == "meetings.full.max_participants=2"


def test_lobby_admits_with_the_waiting_flag() -> None:
    d = sip("lobby")
    assert isinstance(d, Admit) and d.lobby and "lobby" in d.explain()


def test_audio_codecs_restrict_and_order_the_choice() -> None:
    mp = meeting(BASE + "meetings: {m: {audio_codecs: [G722, PCMU]}}")
    assert audio_preference(mp) == ("G722", "PCMU")


def test_display_name_only_printable_and_bounded() -> None:
    assert shown_name("Board\x07 Room") == "Board Room"
    assert shown_name("") is None and shown_name(None) is None
    assert len(shown_name("x" * 300) or "") == 64


# --- policy check warnings and policy explain ------------------------------------------------

WARNED = """version: 1
profiles:
  secure: {legacy_media: require-srtp}
meetings:
  "1001": {profile: secure}
  "1002": {pin: "12", lobby: true}
  "1003": {pin_attempts: 5}
"""


def test_policy_check_prints_warnings_with_positions(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "policy.yaml").write_text(WARNED)
    monkeypatch.chdir(tmp_path)
    assert main(["policy", "check", "policy.yaml"]) == 0
    out = capsys.readouterr()
    assert out.out.endswith("3 warnings\n")
    assert out.err.splitlines() == [
        ('policy.yaml:5:3: warning: meetings."1001": allows h323 but profiles.secure.legacy_media='
         "require-srtp: H.323 legs are plain RTP, so every H.323 call will be refused"),
        ('policy.yaml:6:30: warning: meetings."1002": has both a pin and lobby=true: callers who know '
         "the PIN still wait in the lobby"),
        'policy.yaml:7:26: warning: meetings."1003": sets pin_attempts but has no pin',
    ]


def test_policy_explain_names_the_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(WARNED)
    code = main(["policy", "explain", "--policy", str(path), "--meeting", "1001", "--protocol", "sip",
                 "--transport", "udp", "--srtp", "no"])
    out = capsys.readouterr().out
    assert code == 3
    assert out.startswith("refuse 488 Not Acceptable Here: meeting '1001'")
    assert "rule: profiles.secure.legacy_media=require-srtp\n" in out
    assert "  pin: defaults.pin=none\n" in out
    assert main(["policy", "explain", "--policy", str(path), "--meeting", "1001", "--srtp", "yes"]) == 0
    code = main(["policy", "explain", "--policy", str(path), "--meeting", "1002*12"])
    out = capsys.readouterr().out
    assert code == 0 and "PIN accepted" in out and "*12" not in out
    assert main(["policy", "explain", "--policy", str(path), "--meeting", "1002", "--pin", "99"]) == 3


def test_anonymous_names_false_shows_the_display_name_and_true_a_pseudonym() -> None:
    import types

    from bridge.ports import PortAllocator
    from gateway.calls import CallController

    ctl = CallController(reactor=None, policy=POLICY, core_url="http://127.0.0.1:1",
                         media_address="127.0.0.1", ports=PortAllocator(40000, 40001, address="127.0.0.1"))
    entry = types.SimpleNamespace(meeting="m", pseudonym="", call=types.SimpleNamespace(from_display="Board Room"))
    ctl._name(entry, meeting(BASE + "meetings: {m: {anonymous_names: false}}"))  # type: ignore[arg-type]
    assert entry.pseudonym == "Board Room"
    ctl._name(entry, meeting(BASE + "meetings: {m: {}}"))  # type: ignore[arg-type]
    assert entry.pseudonym != "Board Room" and entry.pseudonym
