"""The steps both call controllers share (:class:`gateway.participation.LegacyCallController`).

A minimal protocol (``FakeController``) stands in for SIP and H.323: it records how each call was
hung up and which digits it keyed, so the shared steps are checked apart from any signalling.
The real controllers run the same steps in tests/unit/test_policy_reload*.py,
test_gateway_dtmf_relay.py and the interop tests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.dtmf_sender import DtmfError
from gateway.admission import Refuse
from gateway.calls import CallController
from gateway.h323_calls import H323CallController
from gateway.participation import LegacyCallController
from gateway.policy import parse_policy
from gateway.roster import Roster, RosterParticipant

POLICY = parse_policy('version: 1\non_tighten: end\nmeetings:\n  "1001": {}\n')
KEEP = parse_policy('version: 1\non_tighten: keep\nmeetings:\n  "1001": {}\n')


class FakeLeg:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeEntry:
    meeting: str
    label: str
    ended: bool = False
    session: Any = None
    participant: RosterParticipant | None = None
    legacy: Any = None
    ivr_task: asyncio.Task[Any] | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    lobby_id: str | None = None
    admitted: asyncio.Event | None = None
    on_digit: Any = None
    pseudonym: str = ""


class FakeController(LegacyCallController[FakeEntry]):
    protocol = "sip"

    def __init__(self) -> None:
        super().__init__(reactor=None, policy=POLICY, core_url="http://core", media_address="127.0.0.1",
                         ports=None, roster=Roster(), metrics=None, pins=None, live=None,  # type: ignore[arg-type]
                         has_participants=lambda m: bool(self.roster.participants(m)))
        self.hung_up: list[tuple[str, str, str]] = []
        self.keyed: list[tuple[str, str, str]] = []

    def _hang_up(self, entry: FakeEntry, reason: str, *, by: str) -> None:
        entry.ended = True
        self._calls.pop(entry.label, None)
        self.hung_up.append((entry.label, reason, by))
        self._leave_roster(entry, by)
        self._close_media(entry)

    def _send_dtmf(self, entry: FakeEntry, digits: str, duration_ms: int, *, why: str) -> None:
        if entry.label == "deaf":
            raise DtmfError("no telephone-event")
        self.keyed.append((entry.label, digits, why))


def _add(ctl: FakeController, label: str, meeting: str = "1001", *, joined: bool = True) -> FakeEntry:
    entry = FakeEntry(meeting=meeting, label=label)
    if joined:
        entry.participant = ctl.roster.add(meeting, protocol="sip", transport="udp", codec="PCMU",
                                           pseudonym=ctl.roster.new_pseudonym(meeting))
    ctl._calls[label] = entry
    return entry


def test_both_controllers_are_the_shared_base() -> None:
    assert issubclass(CallController, LegacyCallController)
    assert issubclass(H323CallController, LegacyCallController)
    assert (CallController.protocol, H323CallController.protocol) == ("sip", "h323")


def test_hangup_all_waits_for_the_media_of_the_calls_it_ended() -> None:
    async def scenario() -> tuple[list[str], bool]:
        ctl = FakeController()
        closing = asyncio.Event()

        async def leave_core() -> None:
            await asyncio.sleep(0.05)
            closing.set()

        for label in ("a", "b"):
            entry = _add(ctl, label)
            entry.tasks.add(asyncio.ensure_future(leave_core()))
        await ctl.hangup_all()
        return [h[0] for h in ctl.hung_up], closing.is_set()

    labels, waited = asyncio.run(scenario())
    assert sorted(labels) == ["a", "b"]
    assert waited, "hangup_all returned before the calls' media had left"


def test_end_participant_finds_a_joined_caller_or_one_waiting_in_the_lobby() -> None:
    ctl = FakeController()
    joined = _add(ctl, "joined")
    waiting = _add(ctl, "waiting", joined=False)
    waiting.lobby_id = "p-lobby"
    assert not ctl.end_participant("1001", "p-nobody", "bye")
    assert not ctl.end_participant("2002", "p-lobby", "bye")  # another meeting's id space
    assert ctl.end_participant("1001", "p-lobby", "removed")
    assert joined.participant is not None
    assert ctl.end_participant("1001", joined.participant.id, "removed")
    assert ctl.hung_up == [("waiting", "removed", "api"), ("joined", "removed", "api")]
    assert ctl.roster.participants("1001") == []


def test_relay_goes_to_every_other_answered_caller_and_skips_one_that_cannot_take_it() -> None:
    ctl = FakeController()
    sender = _add(ctl, "sender")
    _add(ctl, "other")
    _add(ctl, "deaf")
    _add(ctl, "joining", joined=False)
    _add(ctl, "elsewhere", meeting="2002")
    assert sender.participant is not None
    assert ctl.send_dtmf_to_meeting("1001", "5", besides=sender.participant.id) == 1
    assert ctl.keyed == [("other", "5", "relay")]


def test_send_dtmf_reaches_only_an_answered_live_caller() -> None:
    ctl = FakeController()
    entry = _add(ctl, "a")
    assert entry.participant is not None
    pid = entry.participant.id
    assert not ctl.send_dtmf("2002", pid, "1")
    assert ctl.send_dtmf("1001", pid, "12")
    entry.ended = True
    assert not ctl.send_dtmf("1001", pid, "3")
    assert ctl.keyed == [("a", "12", "api")]


@pytest.mark.parametrize(("policy", "ends_joined"), [(POLICY, True), (KEEP, False)])
def test_reload_ends_joining_calls_always_and_joined_ones_only_under_on_tighten_end(
        policy: Any, ends_joined: bool) -> None:
    ctl = FakeController()
    joined = _add(ctl, "joined")
    joining = _add(ctl, "joining", joined=False)
    joining.legacy = leg = FakeLeg()
    no_meeting_yet = _add(ctl, "ivr", meeting="", joined=False)
    no_meeting_yet.legacy = FakeLeg()
    refuse = Refuse(meeting="1001", sip_status=403, reason="Forbidden", rule="rule.x", warning="no",
                    protocol="sip", transport="udp", media_security="plain")
    ended: list[str] = []
    asked: list[str] = []

    def joining_check(e: FakeEntry) -> Refuse | None:
        asked.append(e.label)
        return refuse

    def end(e: FakeEntry, refusal: Refuse) -> None:
        ended.append(e.label)
        ctl._hang_up(e, refusal.rule, by="policy")

    count = ctl._apply_policy(policy, joining=joining_check, joined=lambda e: refuse, end=end)
    assert ctl.policy is policy
    assert asked == ["joining"], "only calls with a chosen meeting and a leg are re-checked as joining"
    assert ended == (["joining", "joined"] if ends_joined else ["joining"])
    assert count == len(ended)
    assert joined.ended is ends_joined
    assert leg.closed and not no_meeting_yet.ended


@given(st.lists(st.tuples(st.sampled_from(["1001", "2002"]), st.booleans(), st.booleans()), max_size=8),
       st.sampled_from(["1001", "2002"]))
def test_relay_count_is_the_answered_live_callers_of_the_meeting_but_the_sender(
        calls: list[tuple[str, bool, bool]], meeting: str) -> None:
    ctl = FakeController()
    expected = 0
    for i, (m, joined, ended) in enumerate(calls):
        entry = _add(ctl, f"c{i}", meeting=m, joined=joined)
        entry.ended = ended
        expected += m == meeting and joined and not ended
    assert ctl.send_dtmf_to_meeting(meeting, "1", besides=None) == expected
