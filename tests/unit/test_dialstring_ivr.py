"""Dial strings (one parser for SIP and H.323), PIN lockout, and the IVR conversation with a
scripted caller (no sockets)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gateway.admission import Admit, Refuse, decide
from gateway.dialstring import DialString, parse_dial_string
from gateway.ivr import PROMPTS, IvrHangup, LegIO, prompt_pcm, run_ivr
from gateway.pinlock import PinAttempts
from gateway.policy import parse_policy


@pytest.mark.parametrize("text, meeting, pin", [
    ("1000", "1000", None),
    ("1000*4321", "1000", "4321"),
    ("1000#4321", "1000", "4321"),
    ("1000.4321", "1000", "4321"),
    ("1000#", "1000", None),
    ("1000@gw.example", "1000", None),
    ("192.0.2.1##1000", "1000", None),
    ("192.0.2.1##1000#77", "1000", "77"),
    ("board.room", "board.room", None),
    ("", "", None),
    ("ivr", "", None),
    ("IVR", "", None),
])
def test_dial_string_forms(text: str, meeting: str, pin: str | None) -> None:
    d = parse_dial_string(text)
    assert (d.meeting, d.pin) == (meeting, pin)
    assert d.to_ivr == (meeting == "")


def test_dot_is_a_pin_only_when_the_whole_text_is_not_a_meeting() -> None:
    assert parse_dial_string("v1.2", is_meeting={"v1.2"}.__contains__) == DialString("v1.2")
    assert parse_dial_string("v1.2", is_meeting=set().__contains__) == DialString("v1", "2")
    assert "4321" not in repr(parse_dial_string("1000*4321"))


def test_h323_uses_the_same_parser() -> None:
    from gateway.h323_calls import meeting_part

    assert meeting_part("1000*99") == "1000" and meeting_part("ivr") == "ivr"


def test_pin_lockout_per_source_with_a_window() -> None:
    now = [0.0]
    pins = PinAttempts(window=60, clock=lambda: now[0])
    assert pins.wrong("m", "a") == 1 and pins.wrong("m", "a") == 2
    assert not pins.locked("m", "a", 3)
    pins.wrong("m", "a")
    assert pins.locked("m", "a", 3) and not pins.locked("m", "b", 3) and not pins.locked("n", "a", 3)
    now[0] = 61.0
    assert not pins.locked("m", "a", 3)
    pins.wrong("m", "a")
    pins.succeeded("m", "a")
    assert not pins.locked("m", "a", 1)


def test_prompts_exist_and_resample() -> None:
    for name in PROMPTS:
        pcm = prompt_pcm(name, 8000)
        assert pcm.dtype == np.int16 and 2000 < len(pcm) < 8000 * 8, name
        assert len(prompt_pcm(name, 16000)) == 2 * len(pcm)


# --- the conversation ---------------------------------------------------------------------------

POLICY = parse_policy('version: 1\nunknown_meetings: reject\nmeetings:\n  "1000": {}\n'
                      '  "1003": {pin: "1234", pin_attempts: 3}\n', "p.yaml")


class ScriptedCaller:
    """Answers each prompt with the next entry (None: silence until the timeout)."""

    def __init__(self, entries: list[str | None]) -> None:
        self.entries = list(entries)
        self.heard: list[str] = []

    async def play(self, prompt: str) -> None:
        self.heard.append(prompt)

    async def entry(self, timeout: float) -> str | None:
        return self.entries.pop(0) if self.entries else None


def checker(pins: PinAttempts):
    def check(meeting: str, pin: str | None) -> Admit | Refuse:
        mp = POLICY.for_meeting(meeting)
        locked = mp is not None and mp.pin is not None and pins.locked(meeting, "src", mp.pin_attempts)
        d = decide(POLICY, meeting=meeting, protocol="sip", transport="udp", media_security="plain",
                   pin=pin, locked_out=locked)
        if isinstance(d, Refuse) and d.policy is not None and d.rule == d.policy.rule("pin"):
            pins.wrong(meeting, "src")
        return d
    return check


def run(coro):
    return asyncio.run(coro)


def test_meeting_then_pin_by_dtmf_joins() -> None:
    caller = ScriptedCaller(["1003", "1234"])
    result = run(run_ivr(caller, checker(PinAttempts())))
    assert isinstance(result, Admit) and result.meeting == "1003" and not result.pin_required
    assert caller.heard == ["enter_meeting", "enter_pin"]


def test_wrong_pin_three_times_hangs_up_naming_the_rule() -> None:
    caller = ScriptedCaller(["1111", "2222", "3333", "1234"])
    check = checker(PinAttempts())
    first = check("1003", None)
    result = run(run_ivr(caller, check, meeting="1003", first=first))  # type: ignore[arg-type]
    assert isinstance(result, IvrHangup) and result.rule == 'meetings."1003".pin_attempts=3'
    assert caller.heard.count("wrong_pin") == 3 and caller.entries == ["1234"]


def test_unknown_meeting_three_times_hangs_up() -> None:
    caller = ScriptedCaller(["9", "", None])
    result = run(run_ivr(caller, checker(PinAttempts()), timeout=0.01))
    assert isinstance(result, IvrHangup) and result.rule == "unknown_meetings=reject"
    assert caller.heard == ["enter_meeting", "unknown_meeting", "enter_meeting", "enter_meeting"]


def test_open_meeting_needs_no_pin() -> None:
    result = run(run_ivr(ScriptedCaller(["1000"]), checker(PinAttempts())))
    assert isinstance(result, Admit) and result.meeting == "1000"


def test_leg_io_collects_hash_terminated_entries_and_barges_in() -> None:
    async def scenario() -> tuple[list[str | None], int]:
        pushed: list[np.ndarray] = []
        io = LegIO(pushed.append, 8000)
        for d in "12*34#":
            io.digit(d)
        await io.play("enter_pin")  # the caller already typed: no prompt
        first = await io.entry(1)
        none = await io.entry(0.01)
        return [first, none], len(pushed)

    entries, pushed = run(scenario())
    assert entries == ["34", None] and pushed == 0


def test_h323_offer_gives_meeting_and_pin() -> None:
    from gateway.h323_calls import dial_from_offer
    from tests.unit.test_h323_gateway_mapping import offer

    d = dial_from_offer(offer("1003#1234"))
    assert (d.meeting, d.pin) == ("1003", "1234")
    assert dial_from_offer(offer("")) == DialString("")
