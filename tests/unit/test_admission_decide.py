"""Admission: each rule (404 unknown, 403 protocol, 488 require-srtp) and admit otherwise,
with the rule, the Warning text and an explanation for every decision."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.admission import Admit, Refuse, decide
from gateway.policy import parse_policy

POLICY = parse_policy("""\
version: 1
unknown_meetings: defaults
defaults:
  legacy_media: allow-plain
  protocols: [sip, h323]
meetings:
  "1000": {}
  "1001": {legacy_media: require-srtp}
  "1002": {protocols: [sip]}
  "1003": {legacy_media: prefer-srtp}
""", "policy.yaml")

REJECTING = parse_policy("version: 1\nunknown_meetings: reject\nmeetings: {'1000': {}}\n")


def call(policy=POLICY, meeting="1000", protocol="sip", transport="udp", media_security="plain"):  # type: ignore[no-untyped-def]
    return decide(policy, meeting=meeting, protocol=protocol, transport=transport,
                  media_security=media_security)


def test_admit_configured_meeting() -> None:
    d = call()
    assert isinstance(d, Admit)
    assert d.rule == "defaults.legacy_media=allow-plain"
    assert d.policy.meeting == "1000" and d.policy.configured
    assert d.explain() == ("admit: meeting '1000' (configured meeting); sip over udp allowed by "
                           "defaults.protocols=[sip, h323]; plain media accepted by "
                           "defaults.legacy_media=allow-plain")


def test_admit_unknown_meeting_with_defaults() -> None:
    d = call(meeting="4242")
    assert isinstance(d, Admit)
    assert not d.policy.configured
    assert "unknown_meetings=defaults" in d.explain()


def test_unknown_meeting_rejected_404() -> None:
    d = call(REJECTING, meeting="4242")
    assert isinstance(d, Refuse)
    assert (d.sip_status, d.reason, d.rule) == (404, "Not Found", "unknown_meetings=reject")
    assert "'4242'" in d.warning and "unknown_meetings=reject" in d.warning
    assert d.policy is None
    assert d.explain().startswith("refuse 404 Not Found: meeting '4242'")
    assert isinstance(call(REJECTING, meeting="1000"), Admit)


def test_protocol_not_allowed_403() -> None:
    d = call(meeting="1002", protocol="h323")
    assert isinstance(d, Refuse)
    assert (d.sip_status, d.reason) == (403, "Forbidden")
    assert d.rule == 'meetings."1002".protocols=[sip]'
    assert d.warning == "meeting '1002' does not accept h323 calls (rule meetings.\"1002\".protocols=[sip])"
    assert isinstance(call(meeting="1002", protocol="sip"), Admit)


def test_require_srtp_vs_plain_488_with_warning_naming_meeting_and_rule() -> None:
    d = call(meeting="1001", media_security="plain")
    assert isinstance(d, Refuse)
    assert (d.sip_status, d.reason) == (488, "Not Acceptable Here")
    assert d.rule == 'meetings."1001".legacy_media=require-srtp'
    assert "meeting '1001'" in d.warning
    assert 'meetings."1001".legacy_media=require-srtp' in d.warning
    assert "plain RTP" in d.warning
    assert d.policy is not None and d.policy.meeting == "1001"
    assert d.rule in d.explain() and "488" in d.explain()


def test_require_srtp_admits_sdes() -> None:
    d = call(meeting="1001", media_security="sdes")
    assert isinstance(d, Admit) and not d.notes
    assert d.rule == 'meetings."1001".legacy_media=require-srtp'
    assert "sdes media accepted by" in d.explain()


def test_require_srtp_vs_dtls_is_refused_explicitly_for_now() -> None:
    d = call(meeting="1001", media_security="dtls")
    assert isinstance(d, Refuse) and d.sip_status == 488
    assert "DTLS-SRTP" in d.warning and "not DTLS-SRTP yet" in d.warning
    assert "require-srtp" in d.warning


@pytest.mark.parametrize("meeting", ["1000", "1003"])
def test_sdes_offer_admitted_under_allow_plain_and_prefer_srtp_without_a_note(meeting: str) -> None:
    d = call(meeting=meeting, media_security="sdes")
    assert isinstance(d, Admit)
    assert not d.notes, d.notes
    assert "not supported" not in d.explain()


SIGNALING = parse_policy("""\
version: 1
defaults: {signaling: any}
meetings:
  "3000": {signaling: tls-required}
  "3001": {signaling: tls-required, protocols: [h323]}
""", "policy.yaml")


@pytest.mark.parametrize("transport", ["udp", "tcp", "UDP"])
def test_tls_required_refuses_other_transports_with_403_naming_the_rule(transport: str) -> None:
    d = call(SIGNALING, meeting="3000", transport=transport)
    assert isinstance(d, Refuse) and d.sip_status == 403 and d.reason == "Forbidden"
    assert d.rule == 'meetings."3000".signaling=tls-required'
    assert "TLS only" in d.warning and d.rule in d.warning and "3000" in d.warning


def test_tls_required_admits_tls_and_protocols_is_checked_first() -> None:
    assert isinstance(call(SIGNALING, meeting="3000", transport="tls"), Admit)
    assert isinstance(call(SIGNALING, meeting="3999", transport="udp"), Admit)  # defaults: any
    d = call(SIGNALING, meeting="3001", transport="udp")
    assert isinstance(d, Refuse) and "protocols" in d.rule


def test_prefer_srtp_plain_offer_admitted_and_says_so() -> None:
    d = call(meeting="1003")
    assert isinstance(d, Admit)
    assert d.rule == 'meetings."1003".legacy_media=prefer-srtp'
    assert "unencrypted" in d.explain()


def test_order_unknown_before_protocol_before_media() -> None:
    p = parse_policy("version: 1\nunknown_meetings: reject\nmeetings:\n  a: {protocols: [sip], legacy_media: require-srtp}\n")
    assert call(p, meeting="b", protocol="h323").sip_status == 404  # type: ignore[union-attr]
    assert call(p, meeting="a", protocol="h323").sip_status == 403  # type: ignore[union-attr]
    assert call(p, meeting="a", protocol="sip").sip_status == 488  # type: ignore[union-attr]


@pytest.mark.parametrize("meeting", ["", "a b", "x" * 65, "..", 'a"b\r\n'])
def test_invalid_meeting_ids_are_404_and_warning_is_printable(meeting: str) -> None:
    d = call(meeting=meeting)
    assert isinstance(d, Refuse) and d.sip_status == 404 and d.rule == "meeting-id"
    assert d.warning.isprintable() and "\r" not in d.warning and len(d.warning) < 200


def test_transport_is_recorded() -> None:
    d = call(transport="TCP")
    assert d.transport == "tcp" and "over tcp" in d.explain()


def test_decisions_are_frozen() -> None:
    d = call(meeting="1001")
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.sip_status = 200  # type: ignore[misc]
