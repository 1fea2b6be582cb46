"""Who sends DTMF toward legacy callers: the meeting-wide relay (policy ``dtmf_relay``) and the
control API's command, without sockets (fake legs that record what they were asked to key)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from bridge.dtmf_sender import DtmfError
from gateway.api.service import DTMF_UNREACHABLE, ControlService
from gateway.calls import CallController, LegacyCall
from gateway.h323_calls import H323CallController, H323LegacyCall
from gateway.participation import relay_dtmf
from gateway.policy import parse_policy
from gateway.roster import RosterParticipant
from h323.h245_session import DtmfReceived
from sip.calls import CallState
from sip.info import parse_dtmf_relay

POLICY = parse_policy('''
version: 1
unknown_meetings: defaults
meetings:
  "relay": {dtmf_relay: true}
  "quiet": {}
''')


class FakeLeg:
    def __init__(self, can: bool = True) -> None:
        self.can_send_dtmf = can
        self.sent: list[tuple[str, int]] = []

    def send_dtmf(self, digits: str, duration_ms: int) -> int:
        self.sent.append((digits, duration_ms))
        return len(digits)


def controller() -> CallController:
    return CallController(reactor=None, policy=POLICY, core_url="http://core", media_address="127.0.0.1",
                          ports=None)  # type: ignore[arg-type]


def joined(ctl: CallController, meeting: str, pid: str, leg: FakeLeg | None,
           state: CallState = CallState.ANSWERED) -> LegacyCall:
    """An answered caller on the roster; ``state`` CONFIRMED lets it take SIP INFO."""
    infos: list[tuple[str, bytes]] = []

    def send_info(ctype: str, body: bytes) -> bool:
        infos.append((ctype, body))
        return True

    call: Any = SimpleNamespace(call_id=f"call-{pid}", state=state, infos=infos, send_info=send_info)
    entry = LegacyCall(call=call, meeting=meeting, label=pid)
    entry.session = SimpleNamespace(legacy=leg) if leg is not None else None  # type: ignore[assignment]
    entry.participant = RosterParticipant(id=pid, meeting=meeting, pseudonym=pid, protocol="sip",
                                          transport="udp", codec="PCMU")
    ctl._calls[call.call_id] = entry
    return entry


@pytest.mark.parametrize(("meeting", "relayed"), [("relay", True), ("quiet", False), ("unlisted", False)])
def test_a_joined_callers_digit_reaches_the_others_only_under_dtmf_relay(meeting: str, relayed: bool) -> None:
    ctl = controller()
    legs = {pid: FakeLeg() for pid in ("a", "b", "c")}
    entries = {pid: joined(ctl, meeting, pid, leg) for pid, leg in legs.items()}
    other = joined(ctl, "elsewhere", "z", FakeLeg())
    ctl._digit(entries["a"], "5", "rfc4733")
    assert legs["a"].sent == [], "never echoed back to the one who keyed it"
    assert other.session.legacy.sent == []  # type: ignore[union-attr]
    expected = [("5", 160)] if relayed else []
    assert legs["b"].sent == expected and legs["c"].sent == expected


def test_ivr_and_lobby_digits_are_never_relayed() -> None:
    ctl = controller()
    b = FakeLeg()
    a = joined(ctl, "relay", "a", FakeLeg())
    joined(ctl, "relay", "b", b)
    collected: list[str] = []
    a.on_digit = collected.append  # the IVR's collector: a PIN is being keyed
    ctl._digit(a, "1", "rfc4733")
    a.on_digit, a.participant = None, None  # answered but not (yet) on the roster
    ctl._digit(a, "2", "sip-info")
    assert collected == ["1"] and b.sent == []


def test_relay_skips_callers_without_telephone_event_and_counts_the_rest() -> None:
    ctl = controller()
    joined(ctl, "relay", "b", FakeLeg(can=False))
    joined(ctl, "relay", "c", None)  # media already gone
    d = FakeLeg()
    joined(ctl, "relay", "d", d)
    assert relay_dtmf(POLICY, "relay", "#", sender="a", targets=[ctl]) == 1
    assert d.sent == [("#", 160)]


def test_send_dtmf_command_finds_the_participant_or_says_why_not() -> None:
    ctl = controller()
    leg = FakeLeg()
    joined(ctl, "m", "p1", leg)
    joined(ctl, "m", "p2", FakeLeg(can=False))
    assert ctl.send_dtmf("m", "p1", "12#", 100) and leg.sent == [("12#", 100)]
    assert not ctl.send_dtmf("m", "nobody", "1") and not ctl.send_dtmf("other", "p1", "1")
    with pytest.raises(DtmfError, match="telephone-event"):
        ctl.send_dtmf("m", "p2", "1")


def service(ctl: CallController, web_ids: tuple[str, ...] = ()) -> ControlService:
    svc = ControlService(ctl, None, dict)
    svc._web_ids = lambda meeting: list(web_ids)  # type: ignore[method-assign,assignment]
    return svc


def test_control_service_maps_outcomes_to_found_conflict_and_errors() -> None:
    ctl = controller()
    leg = FakeLeg()
    joined(ctl, "m", "p1", leg)
    joined(ctl, "m", "p2", FakeLeg(can=False))
    svc = service(ctl, web_ids=("browser",))
    ok = svc.send_dtmf("m", "p1", "9a")
    assert ok.found and ok.conflict is None and ok.body == {"id": "p1", "meeting": "m", "queued": 2}
    assert leg.sent == [("9A", 160)]
    assert "telephone-event" in (svc.send_dtmf("m", "p2", "1").conflict or "")
    assert svc.send_dtmf("m", "browser", "1").conflict == DTMF_UNREACHABLE
    assert not svc.send_dtmf("m", "ghost", "1").found
    for bad in ("", "12x", "1 2"):
        with pytest.raises(DtmfError):
            svc.send_dtmf("m", "p1", bad)
    with pytest.raises(DtmfError, match="duration"):
        svc.send_dtmf("m", "p1", "1", duration_ms=10)
    assert leg.sent == [("9A", 160)], "refused commands sent nothing"


def test_without_telephone_event_a_confirmed_sip_dialog_gets_paced_info() -> None:
    async def scenario() -> list[tuple[str, bytes]]:
        ctl = controller()
        entry = joined(ctl, "m", "p1", FakeLeg(can=False), state=CallState.CONFIRMED)
        assert ctl.send_dtmf("m", "p1", "4*", 40)  # one INFO now, the next 40 + 80 ms later
        await asyncio.sleep(0.5)
        call: Any = entry.call
        return list(call.infos)

    infos = asyncio.run(scenario())
    assert [c for c, _ in infos] == ["application/dtmf-relay"] * 2
    assert [(parse_dtmf_relay(b).digit, parse_dtmf_relay(b).duration_ms) for _, b in infos] == [("4", 40), ("*", 40)]


# -- H.323: userInputIndication, and the relay across both controllers ------------------------


class FakeConn:
    def __init__(self, cid: int) -> None:
        self.id = cid
        self.uii: list[tuple[str, int | None]] = []

    def send_user_input(self, digit: str, duration_ms: int | None = None) -> str:
        self.uii.append((digit, duration_ms))
        return "signal"


def h323_joined(ctl: H323CallController, meeting: str, pid: str) -> H323LegacyCall:
    conn: Any = FakeConn(len(ctl._calls) + 1)
    entry = H323LegacyCall(conn=conn, offer=None, meeting=meeting, label=pid)  # type: ignore[arg-type]
    entry.participant = RosterParticipant(id=pid, meeting=meeting, pseudonym=pid, protocol="h323",
                                          transport="tcp", codec="PCMU")
    ctl._calls[conn.id] = entry
    return entry


def test_relay_crosses_sip_and_h323_and_h323_gets_paced_user_input() -> None:
    async def scenario() -> tuple[list[Any], list[Any], list[Any]]:
        sip_ctl = controller()
        h_ctl = H323CallController(reactor=None, policy=POLICY, core_url="http://core",
                                   media_address="127.0.0.1", ports=None)  # type: ignore[arg-type]
        sip_ctl.dtmf_relay_targets.append(h_ctl)
        h_ctl.dtmf_relay_targets.append(sip_ctl)
        sip_leg = FakeLeg()
        sip_a = joined(sip_ctl, "relay", "sip-a", FakeLeg())
        joined(sip_ctl, "relay", "sip-b", sip_leg)
        h_b = h323_joined(h_ctl, "relay", "h323-b")
        h_c = h323_joined(h_ctl, "relay", "h323-c")
        sip_ctl._digit(sip_a, "7", "rfc4733")  # SIP -> SIP and H.323
        h_ctl.dtmf(h_c.conn, DtmfReceived("8", None))  # H.323 -> SIP and the other H.323
        h_ctl.dtmf(h_c.conn, DtmfReceived("!", None))  # a hookflash is no key: not relayed
        await asyncio.sleep(0.1)
        b_conn: Any = h_b.conn
        c_conn: Any = h_c.conn
        return sip_leg.sent, b_conn.uii, c_conn.uii

    sip_b, h_b, h_c = asyncio.run(scenario())
    assert sip_b == [("7", 160), ("8", 160)]
    assert h_b == [("7", 160), ("8", 160)]
    assert h_c == [("7", 160)], "the sender never hears its own digit back"


def test_rfc4733_digits_of_a_joined_h323_call_take_the_user_input_path() -> None:
    """RFC 4733 on a joined H.323 leg (payload type 101 by convention) is the same digit as a
    userInputIndication: it reaches ``on_dtmf`` and the relay, and a digit after the call
    ended goes nowhere."""
    async def scenario() -> tuple[list[Any], list[tuple[str, str, str]]]:
        sip_ctl = controller()
        h_ctl = H323CallController(reactor=None, policy=POLICY, core_url="http://core",
                                   media_address="127.0.0.1", ports=None)  # type: ignore[arg-type]
        h_ctl.dtmf_relay_targets.append(sip_ctl)
        heard: list[tuple[str, str, str]] = []
        h_ctl.on_dtmf = lambda meeting, who, digit: heard.append((meeting, who, digit))
        sip_leg = FakeLeg()
        joined(sip_ctl, "relay", "sip-b", sip_leg)
        h_a = h323_joined(h_ctl, "relay", "h323-a")
        h_ctl._leg_digit(h_a, "4")
        h_a.ended = True
        h_ctl._leg_digit(h_a, "5")
        await asyncio.sleep(0.1)
        return sip_leg.sent, heard

    sent, heard = asyncio.run(scenario())
    assert sent == [("4", 160)]
    assert heard == [("relay", "h323-a", "4")]
