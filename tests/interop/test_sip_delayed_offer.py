"""Delayed offer end to end (RFC 3261 13.2.1): a real pjsua2 sends its INVITE without SDP
(``PJSUA_CALL_NO_SDP_OFFER``), the gateway offers in the 200 OK and takes pjsua's answer from the
ACK.  Media is proven as in the walking skeleton: pjsua sends 1 kHz, an aiortc participant
440 Hz, and each side's spectrum is measured.

One gateway (``roomgate run``) serves the module; each test has its own meeting id.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tests.interop.test_policy_ivr as ivr
import tests.interop.test_walking_skeleton as skeleton
from tests.interop.test_walking_skeleton import (
    call_with_webrtc_peer,
    run_on_private_loop,
)
from tests.support.audio import assert_tone
from tests.support.gateway_process import GatewayProcess, running_gateway
from tests.support.pjsua import PjsuaResult, run_pjsua_call

pytestmark = pytest.mark.interop

POLICY = {
    "meetings": {
        "5101": {"legacy_media": "prefer-srtp"},
        "5102": {"legacy_media": "require-srtp"},
        "5103": {"legacy_media": "require-srtp"},
        "5301": {"pin": "1234"},
    },
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with running_gateway(tmp_path_factory.mktemp("delayed-offer-gateway"), policy=POLICY) as gateway:
        yield gateway


@pytest.fixture
def delayed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the walking skeleton's pjsua caller send its INVITE without SDP."""
    monkeypatch.setattr(skeleton, "run_pjsua_call", functools.partial(run_pjsua_call, delayed_offer=True))


def two_way(result: PjsuaResult, heard: Any) -> None:
    assert result.connected and result.final_status == 200, result
    assert_tone(heard, 48000, skeleton.CALLER_HZ, min_dbfs=-35, skip_seconds=0.2)
    samples, rate = result.recording()
    spectrum = assert_tone(samples, rate, skeleton.BROWSER_HZ, min_dbfs=-35, skip_seconds=1.5)
    assert spectrum.level_at(skeleton.CALLER_HZ) < -30, "the caller hears its own tone back"


@pytest.mark.parametrize(("codec", "meeting"), [("PCMU", "5001"), ("PCMA", "5002"), ("G722", "5003")])
def test_delayed_offer_tone_both_ways(gw: GatewayProcess, tmp_path: Path, delayed: None,
                                      codec: str, meeting: str) -> None:
    result, heard = run_on_private_loop(call_with_webrtc_peer(gw, tmp_path, codec=codec, meeting=meeting))
    two_way(result, heard)
    admitted = gw.wait_for_event("call.admitted", meeting=meeting)
    assert admitted["delayed_offer"] is True and admitted["media_security"] == "plain", admitted
    taken = gw.wait_for_event("call.answer_taken", meeting=meeting)
    assert taken["codec"] == codec and taken["legacy_encryption"] == "plain", taken
    assert result.codec and result.codec.upper().startswith(codec), result.codec
    done = gw.wait_for_event("bridge.session.closed", timeout=15, meeting=meeting)
    print(f"\ndelayed offer {codec}: legacy_in={done['legacy_in']} legacy_out={done['legacy_out']}")
    assert done["legacy_in"] > 100 and done["legacy_out"] > 100, done


@pytest.mark.parametrize(("meeting", "srtp"), [("5101", "optional"), ("5102", "mandatory")])
def test_delayed_offer_with_sdes_srtp(gw: GatewayProcess, tmp_path: Path, delayed: None,
                                      meeting: str, srtp: str) -> None:
    """prefer-srtp offers RTP/AVP + a=crypto, require-srtp RTP/SAVP + a=crypto: pjsua's answer
    in the ACK picks a crypto line and both directions run SDES-SRTP."""
    result, heard = run_on_private_loop(call_with_webrtc_peer(
        gw, tmp_path, codec="PCMU", meeting=meeting, srtp=srtp))
    two_way(result, heard)
    admitted = gw.wait_for_event("call.admitted", meeting=meeting)
    assert admitted["media_security"] == "sdes", admitted
    taken = gw.wait_for_event("call.answer_taken", meeting=meeting)
    assert taken["legacy_encryption"] == "sdes-srtp", taken
    done = gw.wait_for_event("bridge.session.closed", timeout=15, meeting=meeting)
    assert done["legacy_encryption"] == "sdes-srtp" and done["legacy_srtp_dropped"] == 0, done


def test_require_srtp_and_an_answer_without_crypto_ends_with_bye(gw: GatewayProcess) -> None:
    """pjsua with SRTP off cannot answer our RTP/SAVP offer: pjsua 2.15 ACKs without SDP (and
    reports 406 locally); the gateway ends the call with BYE + Reason and never bridges it."""
    result = run_pjsua_call(gw.sip_uri("5103"), codec="PCMU", seconds=2, timeout=15, srtp="off",
                            delayed_offer=True)
    print(f"\nrequire-srtp + plain answer: connected={result.connected} status={result.final_status} "
          f"reason={result.reason!r}")
    assert gw.events("call.answer_taken", meeting="5103") == []
    assert gw.events("bridge.session.closed", meeting="5103") == []
    refused = gw.events("sip.ack.answer_refused")
    print(f"sip.ack.answer_refused events: {[e.get('reason') for e in refused]}")
    assert not result.connected, result
    assert len(refused) == 1 and "no SDP answer" in refused[0]["reason"], refused
    byes = [e for e in gw.events("sip.bye.sent") if "cause=488" in (e.get("reason") or "")]
    assert len(byes) == 1, gw.events("sip.bye.sent")



def test_delayed_offer_into_the_pin_ivr(gw: GatewayProcess, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A delayed offer to a PIN meeting: our offer in the 200 OK, the IVR runs on the leg built
    from the ACK's answer, pjsua's RFC 4733 PIN is heard, and the caller ends up hearing the
    meeting's 440 Hz participant."""
    monkeypatch.setattr(ivr, "run_pjsua_call", functools.partial(run_pjsua_call, delayed_offer=True))
    result = run_on_private_loop(ivr._call_with_participant(
        gw, "5301", gw.sip_uri("5301"), tmp_path, dtmf="1234#", seconds=12))
    ivr._assert_joined(gw, result, "5301")
    (taken,) = gw.events("call.answer_taken", delayed_offer=True)  # logged by the IVR path only
    assert taken["codec"] == "PCMU" and taken["legacy_encryption"] == "plain", taken
