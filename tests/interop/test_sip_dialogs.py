"""Dialogs that last, with real pjsua2: RFC 4028 session timers over 200 s, and DTMF by RFC 4733
and by SIP INFO reaching the gateway's application as the same digits (issue 3, Done when 4, 5).

The digits are observed through ``call.dtmf.digit``, a debug-level log event whose digit is
personal data (the gateway runs with ``log.level: debug`` and ``log.pii: show`` here); by
default only ``call.dtmf`` (source and count, never the digit, which may be a PIN) is written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.interop.test_walking_skeleton import (
    BROWSER_HZ,
    call_with_webrtc_peer,
    run_on_private_loop,
)
from tests.support.audio import assert_tone
from tests.support.gateway_process import GatewayProcess
from tests.support.pjsua import run_pjsua_call

pytestmark = pytest.mark.interop

DIGITS = "159#"


def _digits(gw: GatewayProcess, source: str) -> str:
    return "".join(e["digit"] for e in gw.events("call.dtmf.digit", by=source))


def test_dtmf_by_rfc4733_and_by_sip_info_reach_the_application_alike(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    gw = gateway_factory(log_level="debug", config={"log": {"pii": "show"}})
    for method in ("rfc4733", "info"):
        result = run_pjsua_call(gw.sip_uri("1000"), codec="PCMU", seconds=6, timeout=30,
                                dtmf=DIGITS, dtmf_pause=1.5, dtmf_method=method)
        assert result.connected and result.final_status == 200, result
    gw.wait_for_event("call.ended", timeout=15)
    assert _digits(gw, "rfc4733") == DIGITS
    assert _digits(gw, "sip-info") == DIGITS
    assert len(gw.events("sip.info.dtmf")) == len(DIGITS)
    # The info-level event never carries the digit.
    assert all("digit" not in e for e in gw.events("call.dtmf"))
    assert [e["count"] for e in gw.events("call.dtmf", by="sip-info")] == [1, 2, 3, 4]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_session_timer_90s_call_stays_up_200s_with_audio(
    gateway_factory: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    gw = gateway_factory()
    result, _heard = run_on_private_loop(
        call_with_webrtc_peer(gw, tmp_path, codec="PCMU", seconds=200, session_expires=90),
        timeout=330)
    assert result.connected and result.final_status == 200, result
    # pjsua was the refresher (it supports timers, so we let the UAC refresh, RFC 4028 9) and
    # refreshed at half of 90 s: at least 4 refreshes answered in 200 s, none missed.
    refreshes = gw.events("sip.reoffer.answered") + gw.events("sip.update.answered")
    assert len(refreshes) >= 4, refreshes
    assert gw.events("sip.session_timer.expired") == []
    ended = gw.wait_for_event("call.ended", timeout=15)
    assert ended["by"] == "remote-bye", ended
    # Audio toward the caller still flows at the end: the meeting's tone in the last seconds.
    samples, rate = result.recording()
    assert len(samples) >= 190 * rate
    assert_tone(samples[-int(3 * rate):], rate, BROWSER_HZ, min_dbfs=-35)
    closed = gw.wait_for_event("bridge.session.closed", timeout=15)
    assert closed["legacy_in"] > 190 * 50 * 0.9, closed
