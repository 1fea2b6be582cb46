"""Editing a running meeting (issue 7): lock, PIN change, mute -- the sans-IO parts and the API service.

The wire behaviour (SIP 403, FFT of the muted tone) is in tests/interop/test_control_api_edit.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.admission import Admit, Refuse
from gateway.api.http import _change_pin, _mute_participant
from gateway.api.service import MUTE_IN_LOBBY, MUTE_UNREACHABLE, ControlService
from gateway.calls import CallController, LegacyCall
from gateway.core.meeting import Meeting, Participant
from gateway.core.mixer import BLOCK_SAMPLES, SampleFifo
from gateway.h323_calls import release_for
from gateway.live_meeting import LOCK_RULE, InvalidPin, LiveOverrides, set_muted
from gateway.policy import parse_policy
from gateway.roster import Roster

POLICY = parse_policy("""\
version: 1
unknown_meetings: defaults
meetings:
  "1000": {pin: "1234"}
  "2000": {}
""", "policy.yaml")


def _decide(live: LiveOverrides, meeting: str = "1000", pin: str | None = None,
            protocol: str = "sip") -> Admit | Refuse:
    return live.decide(POLICY, meeting=meeting, protocol=protocol, transport="udp",  # type: ignore[arg-type]
                       media_security="plain", pin=pin)


def test_lock_refuses_new_callers_with_the_operator_rule_and_unlock_restores() -> None:
    live = LiveOverrides()
    live.set_locked("2000", True)
    d = _decide(live, "2000")
    assert isinstance(d, Refuse) and d.sip_status == 403 and d.rule == LOCK_RULE
    assert "locked by operator" in d.warning and "2000" in d.warning
    assert release_for(d) == ("destinationRejection", 21)  # H.323: the meeting refuses, cause 21
    assert isinstance(_decide(live, "1000", "1234"), Admit)  # other meetings are not locked
    live.set_locked("2000", False)
    assert isinstance(_decide(live, "2000"), Admit)
    assert repr(live) == "LiveOverrides(meetings=0)"  # nothing left once unlocked


def test_lock_never_turns_an_invalid_meeting_id_into_a_lock_refusal() -> None:
    live = LiveOverrides()
    live.set_locked("bad id", True)
    d = _decide(live, "bad id")
    assert isinstance(d, Refuse) and d.sip_status == 404


def test_pin_change_refuses_the_old_pin_admits_the_new_and_never_shows_it() -> None:
    live = LiveOverrides()
    live.set_pin("1000", "987654")
    old = _decide(live, "1000", "1234")
    assert isinstance(old, Refuse) and old.rule == "operator.pin=(set)"
    assert "987654" not in old.warning + old.rule + repr(old) + repr(live)
    assert isinstance(_decide(live, "1000", "987654"), Admit)
    asks = _decide(live, "1000")
    assert isinstance(asks, Admit) and asks.pin_required  # the IVR asks for the new one
    live.set_pin("2000", "55")  # a meeting without a PIN in the policy gets one
    assert isinstance(_decide(live, "2000", "55"), Admit)
    assert isinstance(_decide(live, "2000", "56"), Refuse)


@given(st.text(max_size=40))
def test_any_pin_text_is_either_taken_or_a_typed_error(text: str) -> None:
    live = LiveOverrides()
    try:
        live.set_pin("1000", text)
    except InvalidPin as exc:
        assert str(exc) == "the PIN must be 1-16 digits"  # never the text itself
        assert not live.has_pin("1000")
    else:
        assert text.isascii() and text.isdigit() and 1 <= len(text) <= 16
        assert isinstance(_decide(live, "1000", text), Admit)


def test_edits_die_with_the_meeting() -> None:
    running = {"1000", "2000"}
    live = LiveOverrides(lambda m: m in running)
    live.set_pin("1000", "4444")
    live.set_locked("2000", True)
    running.discard("1000")
    live.prune()
    assert not live.has_pin("1000") and live.locked("2000")
    assert isinstance(_decide(live, "1000", "1234"), Admit)  # the policy's PIN again
    running.clear()
    assert not live.locked("2000")  # every read prunes first
    assert live._edits == {}


class _Leg:
    def __init__(self) -> None:
        self.on_audio: Any = None


class _WebRtc:
    def __init__(self) -> None:
        self.fed: list[np.ndarray] = []

    def feed(self, pcm: np.ndarray) -> None:
        self.fed.append(pcm)


class _Session:
    def __init__(self) -> None:
        self.legacy, self.webrtc = _Leg(), _WebRtc()
        self.legacy.on_audio = self.webrtc.feed


def test_set_muted_forwards_silence_of_the_same_length_then_the_voice_again() -> None:
    session = _Session()
    voice = np.full(160, 8000, dtype=np.int16)
    set_muted(session, True)
    session.legacy.on_audio(voice)
    set_muted(session, False)
    session.legacy.on_audio(voice)
    muted, unmuted = session.webrtc.fed
    assert muted.shape == voice.shape and not muted.any()
    assert np.array_equal(unmuted, voice)


def test_core_mutes_a_publishers_mix_contribution() -> None:
    async def scenario() -> None:
        meeting = Meeting("m")
        for pid in ("a", "b"):
            meeting.participants[pid] = Participant(id=pid, kind="whip", pc=None)  # type: ignore[arg-type]
            fifo = meeting._fifos[pid] = SampleFifo()
            fifo.write(np.full(BLOCK_SAMPLES * 8, 1000 if pid == "a" else 300, dtype=np.int16))
        meeting.add(Participant(id="sub", kind="whep", pc=None))  # type: ignore[arg-type]
        meeting.stop_clock()  # ticks by hand
        assert meeting.set_muted("a", True) and not meeting.set_muted("sub", True)
        assert not meeting.set_muted("nobody", True)
        for _ in range(4):
            meeting.tick()
        sub = meeting.participants["sub"].audio
        assert sub is not None
        heard = np.concatenate(list(sub._queue))
        assert heard.max() == 300  # only b: a's 1000 never reaches the mix
        assert meeting.energies["a"] == 0.0 and meeting.energies["b"] > 0.0  # nor the speaker switch
        meeting.set_muted("a", False)
        meeting.tick()
        assert sub._queue[-1].max() == 1300
        meeting.set_muted("a", True)
        meeting.remove("a")
        assert "a" not in meeting.muted

    asyncio.run(scenario())


class _FakeCall:
    def __init__(self, call_id: str) -> None:
        self.call_id, self.source, self.transport = call_id, ("192.0.2.9", 5060), "udp"
        self.hangups: list[str | None] = []

    def hangup(self, reason: str | None = None) -> None:
        self.hangups.append(reason)


class _FakeCore:
    def __init__(self, meeting: Meeting | None) -> None:
        self._meeting = meeting

    def meeting_ids(self) -> list[str]:
        return ["1000"]

    def roster(self, meeting_id: str) -> list[Any]:
        from gateway.core.meeting import ParticipantInfo

        return [ParticipantInfo("web1", "whip", None, 0.0)]

    async def leave(self, meeting_id: str, participant_id: str, kind: Any = None) -> None:
        return None


def _service(core_meeting: Meeting | None, *, external: bool = False) -> tuple[ControlService, CallController, LegacyCall]:
    roster = Roster()
    controller = CallController(reactor=None, policy=POLICY, core_url="http://core", media_address="127.0.0.1",
                                ports=None, roster=roster)  # type: ignore[arg-type]
    entry = LegacyCall(call=_FakeCall("c1"), meeting="1000", label="l1")  # type: ignore[arg-type]
    entry.participant = roster.add("1000", protocol="sip", transport="udp", codec="PCMU",
                                   pseudonym=roster.new_pseudonym("1000"))
    entry.session = _Session()  # type: ignore[assignment]
    controller._calls["c1"] = entry
    core: Any = _FakeCore(core_meeting)
    if external:
        core = _FakeCore(None)
    else:
        core.meeting = lambda m: core_meeting
    return ControlService(controller, core, dict), controller, entry


def test_service_mutes_legacy_and_browser_participants_and_the_roster_shows_it() -> None:
    meeting = Meeting("1000")
    meeting.participants["web1"] = Participant(id="web1", kind="whip", pc=None)  # type: ignore[arg-type]
    svc, _, entry = _service(meeting)
    assert entry.participant is not None
    pid = entry.participant.id
    r = svc.mute_participant("1000", pid, True)
    assert r.found and r.conflict is None and r.body == {"id": pid, "meeting": "1000", "muted": True,
                                                         "protocol": "legacy"}
    body = svc.meeting("1000")
    assert body is not None and body["participants"][0]["muted"] is True and body["locked"] is False
    r = svc.mute_participant("1000", "web1", True)
    assert r.body["protocol"] == "webrtc" and meeting.muted == {"web1"}
    body = svc.meeting("1000")
    assert body is not None and body["webrtc_participants"][0]["muted"] is True
    assert not svc.mute_participant("1000", "p-nobody", True).found
    svc.mute_participant("1000", pid, False)
    assert entry.participant.muted is False


def test_service_mute_conflicts_say_why() -> None:
    svc, controller, _ = _service(None, external=True)
    r = svc.mute_participant("1000", "web1", True)
    assert r.found and r.conflict == MUTE_UNREACHABLE
    waiting = LegacyCall(call=_FakeCall("c2"), meeting="1000", label="l2")  # type: ignore[arg-type]
    waiting.lobby_id = "p-waiting"
    controller._calls["c2"] = waiting
    assert svc.mute_participant("1000", "p-waiting", True).conflict == MUTE_IN_LOBBY


def test_service_lock_and_pin_need_a_running_meeting() -> None:
    svc, controller, _ = _service(None)
    assert not svc.lock_meeting("3000", True).found  # not running: nothing to edit
    assert svc.lock_meeting("1000", True).body == {"id": "1000", "locked": True}
    assert controller.live.locked("1000")
    assert svc.change_pin("1000", "7777").body == {"id": "1000", "pin_changed": True}
    with pytest.raises(InvalidPin):
        svc.change_pin("1000", "12ab")
    controller._calls.clear()  # the last participant leaves...
    controller.roster.remove("1000", controller.roster.participants("1000")[0].id)
    controller.live.prune()
    assert controller.live._edits == {}  # ...and the edits go with the meeting


@pytest.mark.parametrize("body, status", [
    ('{"pin": "2468"}', 200), ('{"pin": "12a"}', 400), ('{"pin": 1234}', 400), ("not json", 400), ("", 400),
])
def test_pin_endpoint_body_handling(body: str, status: int) -> None:
    svc, _, _ = _service(None)
    reply = asyncio.run(_change_pin(svc, {"meeting": "1000", "_body": body}))
    assert reply.status == status
    assert "2468" not in json.dumps(reply.body)


def test_mute_endpoint_maps_conflict_to_409() -> None:
    svc, _, _ = _service(None, external=True)
    reply = asyncio.run(_mute_participant(svc, {"meeting": "1000", "participant": "web1"}))
    assert reply.status == 409 and reply.body["error"]["message"] == MUTE_UNREACHABLE


@given(st.one_of(st.text(max_size=80), st.binary(max_size=80).map(lambda b: b.decode("latin-1")),
                 st.builds(lambda v: json.dumps({"pin": v}),
                           st.one_of(st.text(max_size=20), st.integers(), st.none(), st.lists(st.integers())))))
def test_any_pin_body_is_200_or_a_typed_400_and_never_echoed(body: str) -> None:
    svc, controller, _ = _service(None)
    reply = asyncio.run(_change_pin(svc, {"meeting": "1000", "_body": body}))
    assert reply.status in (200, 400)
    if reply.status == 200:
        assert reply.body == {"id": "1000", "pin_changed": True} and controller.live.has_pin("1000")
    else:
        assert reply.body["error"]["code"] == "bad_request" and not controller.live.has_pin("1000")


def test_a_caller_mid_pin_entry_is_checked_against_the_new_pin() -> None:
    """The IVR asks the policy again at every entry, so an operator's PIN change applies at once."""
    from gateway.ivr import run_ivr

    live = LiveOverrides()

    class ScriptedIO:
        def __init__(self, entries: list[str]) -> None:
            self.entries, self.played = entries, []

        async def play(self, prompt: str) -> None:
            self.played.append(prompt)

        async def entry(self, timeout: float) -> str | None:
            if len(self.entries) == 2:  # the caller is typing when the operator changes the PIN
                live.set_pin("1000", "5678")
            return self.entries.pop(0) if self.entries else None

    def check(meeting: str, pin: str | None) -> Admit | Refuse:
        return _decide(live, meeting, pin)

    io = ScriptedIO(["1234", "5678"])  # the old PIN, refused now; then the new one
    first = _decide(live, "1000")
    assert isinstance(first, Admit) and first.pin_required
    result = asyncio.run(run_ivr(io, check, meeting="1000", first=first))
    assert isinstance(result, Admit) and not result.pin_required
    assert io.played == ["enter_pin", "wrong_pin", "enter_pin"]
