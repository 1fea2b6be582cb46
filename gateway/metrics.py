"""Prometheus metrics: every series the gateway exports, declared once in :data:`METRICS`.

Privacy is enforced here rather than trusted to call sites: a label may only be
one of :data:`LABELS`, and every label value is checked against that label's
closed set of words (anything else becomes ``other``), so an IP address, a SIP
display name, a dial string or a user agent cannot become a label value even by
mistake. The only open-ended label is ``meeting``, and it exists only when
``metrics.per_meeting: true`` (small deployments), holds only ids that pass the
meeting-id charset, and its series vanish when the meeting ends.

Two kinds of series:

- *event* series are prometheus_client counters bumped by the call controller and
  the control API (calls admitted, refused by reason, ended, API requests);
- *sampled* series are read from the roster at scrape time (participants by
  protocol and encryption, RTP packets, loss, drops by reason), so a scrape always
  agrees with what the control API shows. Counters of calls that ended are kept as
  node-wide totals (without any meeting label), which keeps them monotonic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.roster import LEGACY_ENCRYPTIONS, PROTOCOLS, TRANSPORTS

if TYPE_CHECKING:
    from gateway.roster import Roster

MetricKind = Literal["counter", "gauge"]
MetricSource = Literal["event", "sampled"]

#: Why a call was refused; ``refusal_reason()`` maps admission rules onto these words.
REFUSAL_REASONS = ("meeting-id", "unknown_meetings", "protocols", "legacy_media", "signaling",
                   "audio-codec", "offer-required", "media-port", "join-failed", "other")
#: Who or what ended a call (``sip.calls.EndReason`` values plus the gateway's own reasons).
END_REASONS = ("remote-bye", "cancelled", "ack-timeout", "local-hangup", "transport-error",
               "session-expired", "answer-refused", "media", "api", "shutdown", "policy", "other")
DROP_REASONS = ("wrong_source", "bad_packet", "wrong_pt", "late")
DIRECTIONS = ("in", "out")
HTTP_METHODS = ("GET", "DELETE", "POST", "PUT", "PATCH", "other")
API_OUTCOMES = ("ok", "bad_request", "unauthorized", "forbidden", "not_found", "conflict", "error")
RELOAD_RESULTS = ("ok", "failed")
#: Summary statistics a gauge over the live calls carries (not per call: no call ids as labels).
STATS = ("mean", "max")

#: Every label any series may carry, with its closed vocabulary (None: checked by a pattern).
LABELS: Mapping[str, tuple[str, ...] | None] = {
    "protocol": (*PROTOCOLS, "other"),
    "transport": (*TRANSPORTS, "other"),
    "encryption": (*LEGACY_ENCRYPTIONS, "other"),
    "reason": (*REFUSAL_REASONS, *END_REASONS[:-1], *DROP_REASONS),
    "direction": DIRECTIONS,
    "method": HTTP_METHODS,
    "outcome": API_OUTCOMES,
    "result": RELOAD_RESULTS,
    "stat": STATS,
    "meeting": None,
}
_MEETING_LABEL = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class MetricSpec:
    """One exported series family: its name, type, help text, labels and where values come from."""

    name: str
    kind: MetricKind
    help: str
    labels: tuple[str, ...]
    source: MetricSource
    per_meeting: bool = False
    """Only exported when ``metrics.per_meeting: true``; its first label is ``meeting``."""


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("roomgate_calls_admitted", "counter", "Legacy calls admitted by the policy.",
               ("protocol", "transport"), "event"),
    MetricSpec("roomgate_calls_refused", "counter",
               "Legacy calls refused, by the rule that refused them.", ("protocol", "reason"), "event"),
    MetricSpec("roomgate_calls_ended", "counter", "Answered legacy calls that ended, by who ended them.",
               ("protocol", "reason"), "event"),
    MetricSpec("roomgate_api_requests", "counter", "Control API requests by method and outcome.",
               ("method", "outcome"), "event"),
    MetricSpec("roomgate_policy_reloads", "counter",
               "Policy reloads (SIGHUP, file change, API) by result; a failed one left the old policy in force.",
               ("result",), "event"),
    MetricSpec("roomgate_meetings", "gauge", "Meetings with at least one legacy participant.",
               (), "sampled"),
    MetricSpec("roomgate_participants", "gauge",
               "Legacy participants by protocol and encryption of their legacy leg "
               "(the WebRTC leg is always dtls-srtp).", ("protocol", "encryption"), "sampled"),
    MetricSpec("roomgate_rtp_packets", "counter", "RTP packets on legacy legs (accepted in, sent out).",
               ("direction",), "sampled"),
    MetricSpec("roomgate_rtp_lost", "counter",
               "RTP packets the legacy callers sent that never arrived (sequence gaps).", (), "sampled"),
    MetricSpec("roomgate_rtp_dropped", "counter",
               "Inbound RTP packets the legacy legs dropped, by reason.", ("reason",), "sampled"),
    MetricSpec("roomgate_rtp_jitter_seconds", "gauge",
               "Interarrival jitter (RFC 3550) of the legacy callers' audio, over live calls.",
               ("stat",), "sampled"),
    MetricSpec("roomgate_rtt_seconds", "gauge",
               "Round trip to the legacy callers from their RTCP reports, over live calls that reported.",
               ("stat",), "sampled"),
    MetricSpec("roomgate_meeting_participants", "gauge", "Legacy participants of one meeting.",
               ("meeting", "protocol", "encryption"), "sampled", per_meeting=True),
    MetricSpec("roomgate_meeting_rtp_packets", "counter",
               "RTP packets on the legacy legs of one meeting's live calls.",
               ("meeting", "direction"), "sampled", per_meeting=True),
    MetricSpec("roomgate_meeting_rtp_lost", "counter",
               "RTP packets lost on the legacy legs of one meeting's live calls.",
               ("meeting",), "sampled", per_meeting=True),
)

SPECS: Mapping[str, MetricSpec] = {s.name: s for s in METRICS}


class MetricsError(Exception):
    """A metric or label was used that the table does not declare (a programming error)."""


def label_value(label: str, value: object) -> str:
    """``value`` if it belongs to ``label``'s vocabulary, else ``"other"``.

    This is the one gate every label value passes, which is what keeps personal data
    (addresses, names, user agents, dial strings) out of the metrics.
    """
    if label not in LABELS:
        raise MetricsError(f"label {label!r} is not declared in gateway.metrics.LABELS")
    text = str(value)
    allowed = LABELS[label]
    if allowed is None:  # meeting ids
        return text if _MEETING_LABEL.fullmatch(text) and text not in (".", "..") else "other"
    return text if text in allowed else "other"


def refusal_reason(rule: str) -> str:
    """Map an admission rule (``meetings."1001".legacy_media=require-srtp``) to its key word.

    Rules embed meeting ids and values; the metric keeps only which key refused.
    """
    head = rule.split("=", 1)[0]
    key = head.rsplit(".", 1)[-1]
    return key if key in REFUSAL_REASONS else "other"


class Metrics:
    """The gateway's series in their own registry (not the process-global one, so tests and
    several gateways in one process never share counters)."""

    def __init__(self, *, roster: Roster | None = None, per_meeting: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.per_meeting = per_meeting
        self._roster = roster
        self._counters: dict[str, Counter] = {}
        for spec in METRICS:
            for label in spec.labels:
                if label not in LABELS:
                    raise MetricsError(f"{spec.name}: undeclared label {label!r}")
            if spec.source == "event":
                self._counters[spec.name] = Counter(spec.name, spec.help, list(spec.labels),
                                                    registry=self.registry)
        # Totals of legacy legs whose calls ended (node-wide, never per meeting).
        self._retired: dict[str, int] = {"packets_in": 0, "packets_out": 0, "packets_lost": 0,
                                         **{f"dropped_{r}": 0 for r in DROP_REASONS}}
        self.registry.register(_SampledCollector(self))

    def attach_roster(self, roster: Roster) -> None:
        self._roster = roster

    # -- events ------------------------------------------------------------------------------------

    def inc(self, name: str, **labels: object) -> None:
        """Add one to the event counter ``name`` (labels checked against the table)."""
        spec = SPECS.get(name)
        if spec is None or spec.source != "event":
            raise MetricsError(f"{name!r} is not an event counter in gateway.metrics.METRICS")
        if set(labels) != set(spec.labels):
            raise MetricsError(f"{name}: expected labels {spec.labels}, got {tuple(labels)}")
        self._counters[name].labels(**{k: label_value(k, v) for k, v in labels.items()}).inc()

    def call_admitted(self, protocol: str, transport: str) -> None:
        self.inc("roomgate_calls_admitted", protocol=protocol, transport=transport)

    def call_refused(self, protocol: str, rule: str) -> None:
        self.inc("roomgate_calls_refused", protocol=protocol, reason=refusal_reason(rule))

    def call_ended(self, protocol: str, reason: str, final_counters: Mapping[str, int] | None) -> None:
        """Count the end and fold the call's last legacy counters into the node totals."""
        self.inc("roomgate_calls_ended", protocol=protocol, reason=reason)
        for key in self._retired:
            self._retired[key] += int((final_counters or {}).get(key, 0))

    def api_request(self, method: str, outcome: str) -> None:
        self.inc("roomgate_api_requests", method=method, outcome=outcome)

    def policy_reload(self, result: str) -> None:
        self.inc("roomgate_policy_reloads", result=result)

    # -- exposition --------------------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition format (what ``GET /metrics`` returns)."""
        return generate_latest(self.registry)

    def sampled(self) -> Iterator[Metric]:
        """The sampled families, computed now from the roster."""
        live: list[tuple[str, str, str, Mapping[str, int]]] = []
        timing: dict[str, list[float]] = {"jitter_ms": [], "rtt_ms": []}
        for p in self._roster or ():
            snapshot = p.snapshot()
            live.append((p.meeting, p.protocol, snapshot["encryption"]["legacy"], p.legacy_counters()))
            for key, values in timing.items():
                if isinstance(snapshot.get(key), int | float):
                    values.append(float(snapshot[key]) / 1000.0)
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for spec in METRICS:
            if spec.source != "sampled" or (spec.per_meeting and not self.per_meeting):
                continue
            families[spec.name] = (
                CounterMetricFamily(spec.name, spec.help, labels=list(spec.labels)) if spec.kind == "counter"
                else GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels)))

        def add(name: str, value: float, *labels: object) -> None:
            family = families.get(name)
            if family is not None:
                spec = SPECS[name]
                family.add_metric([label_value(k, v) for k, v in zip(spec.labels, labels, strict=True)],
                                  value)

        add("roomgate_meetings", len({m for m, *_ in live}))
        for protocol in PROTOCOLS:
            for enc in LEGACY_ENCRYPTIONS:
                add("roomgate_participants",
                    sum(1 for _, p, e, _c in live if p == protocol and e == enc), protocol, enc)
        total = dict(self._retired)
        for *_, counters in live:
            for key in total:
                total[key] += int(counters.get(key, 0))
        add("roomgate_rtp_packets", total["packets_in"], "in")
        add("roomgate_rtp_packets", total["packets_out"], "out")
        add("roomgate_rtp_lost", total["packets_lost"])
        for reason in DROP_REASONS:
            add("roomgate_rtp_dropped", total[f"dropped_{reason}"], reason)
        for name, values in (("roomgate_rtp_jitter_seconds", timing["jitter_ms"]),
                             ("roomgate_rtt_seconds", timing["rtt_ms"])):
            if values:
                add(name, sum(values) / len(values), "mean")
                add(name, max(values), "max")
        if self.per_meeting:
            for meeting in sorted({m for m, *_ in live}):
                mine = [x for x in live if x[0] == meeting]
                for proto_enc in sorted({(p, e) for _, p, e, _c in mine}):
                    add("roomgate_meeting_participants",
                        sum(1 for _, p, e, _c in mine if (p, e) == proto_enc), meeting, *proto_enc)
                for direction, key in (("in", "packets_in"), ("out", "packets_out")):
                    add("roomgate_meeting_rtp_packets", sum(int(c.get(key, 0)) for *_, c in mine),
                        meeting, direction)
                add("roomgate_meeting_rtp_lost", sum(int(c.get("packets_lost", 0)) for *_, c in mine),
                    meeting)
        yield from families.values()


class _SampledCollector(Collector):
    """Adapter: prometheus_client calls ``collect()`` at every scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return list(self._metrics.sampled())

    def describe(self) -> Iterable[Metric]:
        return []
