"""Reload re-checks calls still joining (IVR with a meeting chosen, lobby): issue 7.

Answered participants keep the policy they joined under unless ``legacy_media``/``signaling``
tightened (tests/unit/test_policy_reload.py); callers not yet in the meeting get the new policy's
full decision, whatever ``on_tighten`` says.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.calls import CallController, LegacyCall
from gateway.policy import parse_policy
from gateway.policy_reload import joining_refused
from gateway.roster import Roster

OPEN = 'version: 1\nmeetings:\n  "1001": {lobby: true}\n  "2002": {pin: "12"}\n'


class FakeCall:
    def __init__(self, call_id: str) -> None:
        self.call_id, self.transport, self.source = call_id, "udp", ("192.0.2.7", 5060)
        self.hangups: list[str | None] = []

    def hangup(self, reason: str | None = None) -> None:
        self.hangups.append(reason)


class FakeLeg:
    encryption = "plain"

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def _controller() -> tuple[CallController, dict[str, LegacyCall]]:
    roster = Roster()
    controller = CallController(reactor=None, policy=parse_policy(OPEN), core_url="http://core",
                                media_address="127.0.0.1", ports=None, roster=roster)  # type: ignore[arg-type]
    entries = {
        "lobby": LegacyCall(call=FakeCall("c-lobby"), meeting="1001", label="l1"),  # type: ignore[arg-type]
        "pin": LegacyCall(call=FakeCall("c-pin"), meeting="2002", label="l2"),  # type: ignore[arg-type]
        "no-meeting-yet": LegacyCall(call=FakeCall("c-ivr"), meeting="", label="l3"),  # type: ignore[arg-type]
        "joined": LegacyCall(call=FakeCall("c-in"), meeting="1001", label="l4"),  # type: ignore[arg-type]
    }
    for name, entry in entries.items():
        if name == "joined":
            entry.participant = roster.add("1001", protocol="sip", transport="udp", codec="PCMU",
                                           pseudonym=roster.new_pseudonym("1001"))
        else:
            entry.legacy = FakeLeg()  # type: ignore[assignment]
        entries["lobby"].lobby_id = "p-waiting"
        controller._calls[entry.call.call_id] = entry
    return controller, entries


@pytest.mark.parametrize("on_tighten", ["end", "keep"])
def test_lobby_and_ivr_callers_are_ended_when_their_meeting_now_refuses_them(on_tighten: str) -> None:
    async def scenario() -> None:
        controller, e = _controller()
        no_sip = parse_policy(f'version: 1\non_tighten: {on_tighten}\nmeetings:\n'
                              '  "1001": {lobby: true, protocols: [h323]}\n  "2002": {pin: "12", protocols: [h323]}\n')
        assert controller.apply_policy(no_sip) == 2
        for name in ("lobby", "pin"):
            (reason,) = e[name].call.hangups  # type: ignore[attr-defined]
            assert reason is not None and reason.startswith("policy reloaded: ") and "protocols=[h323]" in reason
            assert e[name].ended and e[name].legacy is None
        # Not yet in a meeting: the IVR's next entry meets the new policy anyway.
        assert e["no-meeting-yet"].call.hangups == []  # type: ignore[attr-defined]
        # Answered: a protocols change applies to new calls only.
        assert e["joined"].call.hangups == []  # type: ignore[attr-defined]
        assert controller.active_calls == 2

    asyncio.run(scenario())


def test_a_reload_that_still_admits_them_leaves_joining_callers_alone() -> None:
    async def scenario() -> None:
        controller, e = _controller()
        assert controller.apply_policy(parse_policy(OPEN + '  "3003": {}\n')) == 0
        assert all(x.call.hangups == [] for x in e.values())  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_joining_refused_ignores_the_pin_and_names_every_other_rule() -> None:
    strict = parse_policy('version: 1\nunknown_meetings: reject\nmeetings:\n'
                          '  "1": {pin: "99"}\n  "2": {allowed_networks: [10.0.0.0/8]}\n'
                          '  "3": {legacy_media: require-srtp}\n')
    kw = {"protocol": "sip", "transport": "udp", "legacy_encryption": "plain", "source": "192.0.2.1"}
    assert joining_refused(strict, meeting="1", **kw) is None  # type: ignore[arg-type]
    for meeting, rule in (("2", 'meetings."2".allowed_networks'), ("3", 'meetings."3".legacy_media'),
                          ("4", "unknown_meetings=reject")):
        refusal = joining_refused(strict, meeting=meeting, **kw)  # type: ignore[arg-type]
        assert refusal is not None and refusal.rule.startswith(rule), (meeting, refusal)
    assert joining_refused(strict, meeting="3", **kw | {"legacy_encryption": "sdes-srtp"}) is None  # type: ignore[arg-type]


class FakeH323Conn:
    def __init__(self, ident: int) -> None:
        self.id, self.label, self.peer = ident, f"h{ident}", ("192.0.2.8", 1720)
        self.rejected: list[tuple[str, int | None, str | None]] = []
        self.released: list[str] = []

    def reject(self, reason: str, *, cause: int | None = None, display: str | None = None) -> None:
        self.rejected.append((reason, cause, display))

    def release(self, reason: str) -> None:
        self.released.append(reason)


def test_h323_lobby_caller_is_released_with_the_rule_in_display() -> None:
    from gateway.h323_calls import H323CallController, H323LegacyCall

    async def scenario() -> None:
        controller = H323CallController(reactor=None, policy=parse_policy(OPEN), core_url="http://core",
                                        media_address="127.0.0.1", ports=None)  # type: ignore[arg-type]
        waiting = H323LegacyCall(conn=FakeH323Conn(1), offer=None, meeting="1001", label="h1")  # type: ignore[arg-type]
        waiting.legacy, waiting.lobby_id, waiting.answered = FakeLeg(), "p-w", True  # type: ignore[assignment]
        asking = H323LegacyCall(conn=FakeH323Conn(2), offer=None, meeting="", label="h2")  # type: ignore[arg-type]
        asking.legacy = FakeLeg()  # type: ignore[assignment]
        controller._calls.update({1: waiting, 2: asking})
        no_h323 = parse_policy('version: 1\non_tighten: keep\nmeetings:\n  "1001": {lobby: true, protocols: [sip]}\n')
        assert controller.apply_policy(no_h323) == 1
        ((reason, cause, display),) = waiting.conn.rejected  # type: ignore[attr-defined]
        assert (reason, cause) == ("calledPartyNotRegistered", 21)
        assert display == 'refused by rule meetings."1001".protocols=[sip]'
        assert waiting.ended and waiting.legacy is None and asking.conn.rejected == []  # type: ignore[attr-defined]

    asyncio.run(scenario())


@pytest.mark.parametrize(("rule", "expected"), [
    ('meetings."7".pin=(set)', ("securityDenied", 21)),
    ("defaults.pin_attempts=3", ("securityDenied", 21)),
    ("operator.pin=(set)", ("securityDenied", 21)),
    ("operator.lock", ("destinationRejection", 21)),
    ("ivr.attempts", ("undefinedReason", 16)),
    ("unknown_meetings=reject", ("calledPartyNotRegistered", 21)),
])
def test_h323_ivr_release_reasons(rule: str, expected: tuple[str, int]) -> None:
    from gateway.h323_calls import release_for_ivr
    from gateway.ivr import IvrHangup

    assert release_for_ivr(IvrHangup("why", rule)) == expected
