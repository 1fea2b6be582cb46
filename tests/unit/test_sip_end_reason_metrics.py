"""Every way the SIP core can end a call has its own ``reason`` label on roomgate_calls_ended."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import END_REASONS, Metrics, label_value
from sip.calls import EndReason


@pytest.mark.parametrize("reason", list(EndReason))
def test_every_sip_end_reason_is_its_own_label(reason: EndReason) -> None:
    assert reason.value in END_REASONS
    assert label_value("reason", reason.value) == reason.value


def test_answer_refused_is_counted_under_its_own_name() -> None:
    metrics = Metrics()
    metrics.call_ended("sip", EndReason.ANSWER_REFUSED.value, None)
    text = metrics.render().decode()
    samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == "roomgate_calls_ended_total"]
    by_reason = {s.labels["reason"]: s.value for s in samples}
    assert by_reason.get("answer-refused") == 1.0
    assert "other" not in by_reason


def test_end_reasons_are_declared_once() -> None:
    assert len(set(END_REASONS)) == len(END_REASONS)
