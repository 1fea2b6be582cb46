"""gateway/h323_calls.py without sockets: meeting ids from what was dialled, refusal reasons."""

from __future__ import annotations

import pytest

from gateway.admission import Refuse, decide
from gateway.h323_calls import meeting_from_offer, meeting_part, release_for
from gateway.policy import load_policy
from h323.call import CallOffered
from h323.h225 import Alias


@pytest.mark.parametrize(("dialled", "meeting"), [
    ("1000", "1000"), ("1000#4321", "1000"), ("192.0.2.1##1000", "1000"),
    ("192.0.2.1##1000#99", "1000"), ("1000@gw.example", "1000"), (" 1000 ", "1000"), ("#99", ""),
])
def test_meeting_part(dialled: str, meeting: str) -> None:
    assert meeting_part(dialled) == meeting


def offer(number: str | None = None, *aliases: Alias) -> CallOffered:
    return CallOffered(1, b"\0" * 16, number, tuple(aliases), (), None, None, None, (), False, True)


def test_meeting_from_offer_order() -> None:
    assert meeting_from_offer(offer("2000", Alias("dialledDigits", "3000"))) == "2000"
    assert meeting_from_offer(offer(None, Alias("h323-ID", "room"), Alias("dialledDigits", "3000#1"))) == "3000"
    assert meeting_from_offer(offer(None, Alias("h323-ID", "10.0.0.1##4000"))) == "4000"
    assert meeting_from_offer(offer("")) == ""


def test_release_reasons_for_refusals(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "policy.yaml"
    path.write_text('version: 1\nunknown_meetings: reject\ndefaults: {legacy_media: allow-plain, '
                    'protocols: [sip, h323]}\nmeetings:\n  "1": {protocols: [sip]}\n'
                    '  "2": {legacy_media: require-srtp}\n')
    policy = load_policy(path)

    def refusal(meeting: str) -> Refuse:
        d = decide(policy, meeting=meeting, protocol="h323", transport="tcp", media_security="plain")
        assert isinstance(d, Refuse)
        return d

    assert release_for(refusal("1")) == ("calledPartyNotRegistered", 21)
    assert release_for(refusal("2")) == ("securityDenied", 31)
    assert release_for(refusal("9")) == ("calledPartyNotRegistered", 1)


def test_legacy_controllers_route_commands_to_either_controller() -> None:
    import asyncio

    from gateway.h323_calls import LegacyControllers
    from gateway.roster import Roster

    class Fake:
        def __init__(self, roster: Roster, owns: str, calls: int) -> None:
            self.roster, self.owns, self.calls = roster, owns, calls

        def end_participant(self, meeting: str, participant_id: str, reason: str) -> bool:
            return participant_id == self.owns

        async def end_meeting(self, meeting: str, reason: str) -> int:
            return self.calls

    roster = Roster()
    both = LegacyControllers(Fake(roster, "p-sip", 2), Fake(Roster(), "p-h323", 1))
    assert both.roster is roster
    assert both.end_participant("1", "p-h323", "x") and both.end_participant("1", "p-sip", "x")
    assert not both.end_participant("1", "p-none", "x")
    assert asyncio.run(both.end_meeting("1", "x")) == 3
