"""Roster lifecycle (pseudonyms, nothing kept after a meeting) and metric label hygiene."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.api.http import ROUTES
from gateway.metrics import (
    LABELS,
    METRICS,
    Metrics,
    MetricsError,
    label_value,
    refusal_reason,
)
from gateway.roster import Roster, new_pseudonym

PSEUDONYM = re.compile(r"[A-Z][a-z]+ [A-Z][a-z]+ \d{4}")


def _stats(packets_in: int = 10, lost: int = 2) -> dict[str, Any]:
    return {"codec": "PCMU", "legacy": {"encryption": "plain", "packets_in": packets_in, "packets_out": 7,
                                        "packets_lost": lost, "dropped": 1, "dropped_late": 1},
            "webrtc": {"encryption": "dtls-srtp"}}


def test_pseudonyms_are_random_and_unique_in_a_meeting() -> None:
    names = {new_pseudonym() for _ in range(50)}
    assert all(PSEUDONYM.fullmatch(n) for n in names) and len(names) > 40
    roster = Roster()
    people = [roster.add("1000", protocol="sip", transport="udp", codec="PCMU") for _ in range(30)]
    assert len({p.pseudonym for p in people}) == 30


def test_roster_lifecycle_drops_the_meeting_with_its_last_participant() -> None:
    roster = Roster()
    a = roster.add("1000", protocol="sip", transport="udp", codec="PCMU", stats=_stats)
    b = roster.add("1000", protocol="sip", transport="tcp", codec="G722")
    assert "1000" in roster and len(roster) == 2
    snap = a.snapshot()
    assert snap["encryption"] == {"legacy": "plain", "webrtc": "dtls-srtp"}
    assert snap["packets"] == {"received": 10, "sent": 7, "lost": 2, "dropped": 1}
    assert snap["packet_loss"] == pytest.approx(2 / 12, abs=1e-4)
    assert set(snap) == {"id", "pseudonym", "protocol", "transport", "codec", "encryption", "packets",
                         "packet_loss", "jitter_ms", "rtt_ms", "muted"}
    assert (snap["jitter_ms"], snap["rtt_ms"]) == (None, None)  # the fake leg reports neither
    gone = roster.remove("1000", a.id)
    assert gone is not None and gone.stats is None and gone.final_counters["packets_in"] == 10
    assert "1000" in roster
    roster.remove("1000", b.id)
    assert "1000" not in roster and roster.meeting_ids() == [] and len(roster) == 0
    assert roster.remove("1000", b.id) is None


def test_every_metric_is_declared_once_with_declared_labels() -> None:
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names))
    for spec in METRICS:
        assert set(spec.labels) <= set(LABELS), spec.name
        assert spec.per_meeting == ("meeting" in spec.labels), spec.name


@pytest.mark.parametrize("value", ["192.0.2.7", "::1", "Alice Smith", "sip:1000@192.0.2.7",
                                   "roomgate-test-pjsua/2.15.1", "PolycomVVX"])
def test_personal_data_never_becomes_a_label_value(value: str) -> None:
    for label, allowed in LABELS.items():
        if allowed is not None:
            assert label_value(label, value) == "other"
    assert label_value("meeting", "sip:1000@192.0.2.7") == "other"
    with pytest.raises(MetricsError):
        label_value("caller", value)


def test_refusal_rules_map_to_key_words() -> None:
    assert refusal_reason('meetings."10.01".legacy_media=require-srtp') == "legacy_media"
    assert refusal_reason("defaults.protocols=[sip]") == "protocols"
    assert refusal_reason("unknown_meetings=reject") == "unknown_meetings"
    assert refusal_reason("192.0.2.7") == "other"


def test_scrape_counts_events_and_live_roster_and_keeps_totals_after_the_end() -> None:
    roster = Roster()
    metrics = Metrics(roster=roster, per_meeting=True)
    metrics.call_admitted("sip", "udp")
    metrics.call_refused("sip", 'meetings."1001".legacy_media=require-srtp')
    p = roster.add("1001", protocol="sip", transport="udp", codec="PCMU", stats=_stats)

    def families() -> dict[str, Any]:
        return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}

    fam = families()
    assert [(s.labels, s.value) for s in fam["roomgate_meeting_participants"].samples] == [
        ({"meeting": "1001", "protocol": "sip", "encryption": "plain"}, 1.0)]
    refused = [s for s in fam["roomgate_calls_refused"].samples if s.name.endswith("_total")]
    assert refused[0].labels == {"protocol": "sip", "reason": "legacy_media"}
    gone = roster.remove("1001", p.id)
    metrics.call_ended("sip", "remote-bye", gone.final_counters if gone else None)
    fam = families()
    assert fam["roomgate_meeting_participants"].samples == []
    packets = {s.labels["direction"]: s.value for s in fam["roomgate_rtp_packets"].samples}
    assert packets == {"in": 10.0, "out": 7.0}
    with pytest.raises(MetricsError):
        metrics.inc("roomgate_participants", protocol="sip")


def test_openapi_documents_exactly_the_routes() -> None:
    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml").read_text())
    documented = {(m.upper(), p) for p, item in spec["paths"].items() for m in item if m != "parameters"}
    served = {(r.method, re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", r.pattern.pattern)) for r in ROUTES}
    assert documented == served
    assert spec["openapi"].startswith("3.1")
