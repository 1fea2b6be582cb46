"""``GatewayProcess.logged``, the secret-in-the-log check the PIN and token tests rely on: it must
find a leaked secret wherever a string carries it, and not fire on digits that timestamps and
counters hold by chance (both made interop tests fail before)."""

from __future__ import annotations

import json

from tests.support.gateway_process import GatewayProcess


class FakeLog:
    def __init__(self, *lines: str) -> None:
        self.text = "\n".join(lines)

    def stderr_text(self) -> str:
        return self.text

    def logged(self, secret: str) -> bool:
        return GatewayProcess.logged(self, secret)  # type: ignore[arg-type]


def event(**fields: object) -> str:
    return json.dumps({"timestamp": "2026-11-24T23:11:51.874321Z", "level": "info", **fields})


def test_digits_in_timestamps_and_numbers_are_not_a_leak() -> None:
    log = FakeLog(event(event="bridge.backlog.shed", shed_total=1111, units=3333),
                  event(event="call.answered", local_port=4321))
    assert not log.logged("4321") and not log.logged("1111") and not log.logged("3333")


def test_a_secret_in_a_string_value_a_key_or_a_nested_value_is_found() -> None:
    assert FakeLog(event(event="call.offered", uri="sip:1003*1234@gw")).logged("1234")
    assert FakeLog(event(event="x", pin_1234=True)).logged("1234")
    assert FakeLog(event(event="x", digits=["5", {"entered": "1234#"}])).logged("1234")


def test_lines_that_are_not_events_are_searched_whole() -> None:
    assert FakeLog("Traceback: bad pin 1234", event(event="ok")).logged("1234")
    assert FakeLog('{"broken json 1234').logged("1234")
    assert not FakeLog("plain line", event(event="ok")).logged("1234")
