"""Keyframe requests and DTMF on the application side of H.323 (no sockets)."""

from __future__ import annotations

from typing import Any

from gateway.h323_calls import H323CallController, H323LegacyCall
from h323 import h245
from h323.h245_session import DtmfReceived, H245Session


def test_session_sends_video_fast_update_picture() -> None:
    s = H245Session(local_rtp=("127.0.0.1", 30000))
    assert s.request_fast_update() == 1  # no channel from the peer yet
    assert s.request_fast_update(7) == 7
    typed = [h245.decode(p).typed() for p in s.pdus_to_send()]
    assert typed == [h245.VideoFastUpdatePicture(1), h245.VideoFastUpdatePicture(7)]
    s.end_session()
    s.pdus_to_send()
    s.request_fast_update()
    assert s.pdus_to_send() == []  # not after endSessionCommand


class FakeConn:
    def __init__(self, conn_id: int) -> None:
        self.id, self.label, self.keyframes = conn_id, f"c{conn_id}", 0

    def request_keyframe(self) -> bool:
        self.keyframes += 1
        return True


def controller_with(conn: FakeConn) -> tuple[H323CallController, H323LegacyCall]:
    ctl = H323CallController(reactor=None, policy=None, core_url="", media_address="127.0.0.1",  # type: ignore[arg-type]
                             ports=None)  # type: ignore[arg-type]
    entry = H323LegacyCall(conn=conn, offer=None, meeting="1000", label=conn.label)  # type: ignore[arg-type]
    ctl._calls[conn.id] = entry
    return ctl, entry


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_request_keyframe_by_record_or_connection_id() -> None:
    conn = FakeConn(41)
    ctl, entry = controller_with(conn)
    ctl.clock = clock = FakeClock()
    assert ctl.request_keyframe(entry)
    clock.now += 0.25  # the translator coalesces requests closer than 250 ms
    assert ctl.request_keyframe(41)
    assert not ctl.request_keyframe(999)
    assert conn.keyframes == 2


def test_request_keyframe_coalesces_within_250_ms_through_the_translator() -> None:
    conn = FakeConn(45)
    ctl, entry = controller_with(conn)
    ctl.clock = clock = FakeClock()
    assert ctl.request_keyframe(entry)
    clock.now += 0.1
    assert not ctl.request_keyframe(entry)  # coalesced into the first
    clock.now += 0.15
    assert ctl.request_keyframe(entry, "vas_switch")
    assert conn.keyframes == 2
    assert entry.keyframes is not None
    assert entry.keyframes.sent == {"legacy/h245_fast_update": 2}
    assert entry.keyframes.suppressed == {"legacy": 1}


def test_dtmf_reaches_the_application_hook() -> None:
    conn = FakeConn(42)
    ctl, _entry = controller_with(conn)
    seen: list[tuple[str, str, str]] = []
    ctl.on_dtmf = lambda meeting, who, digit: seen.append((meeting, who, digit))
    for d in "12#":
        ctl.dtmf(conn, DtmfReceived(d, 100))  # type: ignore[arg-type]
    assert seen == [("1000", "c42", "1"), ("1000", "c42", "2"), ("1000", "c42", "#")]


def test_dtmf_without_hook_is_only_logged() -> None:
    conn: Any = FakeConn(43)
    ctl, _ = controller_with(conn)
    ctl.dtmf(conn, DtmfReceived("5", None))


def test_dtmf_reaches_the_per_call_digit_hook_like_sip() -> None:
    conn = FakeConn(44)
    ctl, entry = controller_with(conn)
    digits: list[str] = []
    entry.on_digit = digits.append
    for d in "9*":
        ctl.dtmf(conn, DtmfReceived(d, 100))  # type: ignore[arg-type]
    assert digits == ["9", "*"]
