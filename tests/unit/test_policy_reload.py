"""Policy reload without sockets: validation before the swap, the tightening rule, the controllers'
``apply_policy`` (with fake SIP calls), and that an ended meeting leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from gateway.calls import CallController, LegacyCall
from gateway.metrics import Metrics
from gateway.policy import Policy, PolicyError, parse_policy
from gateway.policy_reload import PolicyReloader, tightened_out
from gateway.roster import Roster

OPEN = "version: 1\nmeetings:\n  \"1001\": {}\n"
STRICT = "version: 1\nmeetings:\n  \"1001\": {legacy_media: require-srtp}\n"


class FakeTarget:
    def __init__(self) -> None:
        self.applied: list[Policy] = []

    def apply_policy(self, policy: Policy) -> int:
        self.applied.append(policy)
        return 0


class FakeCall:
    """The parts of ``sip.calls.InboundCall`` that ``CallController`` touches after the answer."""

    def __init__(self, call_id: str, transport: str = "udp") -> None:
        self.call_id, self.transport = call_id, transport
        self.hangups: list[str | None] = []

    def hangup(self, reason: str | None = None) -> None:
        self.hangups.append(reason)


def _reload_counts(metrics: Metrics) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        if family.name == "roomgate_policy_reloads":
            for s in family.samples:
                if s.name.endswith("_total"):
                    out[s.labels["result"]] = s.value
    return out


def _write(path: Path, text: str) -> None:
    """Write and move the mtime on, so a poll sees a change even within one mtime tick."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


def test_valid_reload_swaps_into_every_target(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    _write(path, OPEN)
    metrics = Metrics()
    a, b = FakeTarget(), FakeTarget()
    reloader = PolicyReloader(path, [a, b], parse_policy(OPEN), metrics)
    _write(path, STRICT)
    with structlog.testing.capture_logs() as logs:
        result = reloader.reload("sighup")
    assert result.ok and result.trigger == "sighup"
    assert a.applied[0].for_meeting("1001").legacy_media == "require-srtp"  # type: ignore[union-attr]
    assert b.applied == a.applied and reloader.current is a.applied[0]
    assert [e["event"] for e in logs if e["event"].startswith("policy.")][-1] == "policy.reloaded"
    assert _reload_counts(metrics) == {"ok": 1.0}


def test_broken_file_is_refused_with_line_marks_and_old_policy_kept(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    _write(path, OPEN)
    old = parse_policy(OPEN)
    metrics = Metrics()
    target = FakeTarget()
    reloader = PolicyReloader(path, [target], old, metrics)
    _write(path, "version: 1\non_tighten: sometimes\nmeetings:\n  \"1001\": {legacy_media: require-tls}\n")
    with structlog.testing.capture_logs() as logs:
        result = reloader.reload("api")
    assert not result.ok and target.applied == [] and reloader.current is old
    (failed,) = [e for e in logs if e["event"] == "policy.reload.failed"]
    assert any(err.startswith(f"{path}:2:13: on_tighten") for err in failed["errors"]), failed
    assert any(err.startswith(f"{path}:4:") and "legacy_media" in err for err in failed["errors"]), failed
    assert _reload_counts(metrics) == {"failed": 1.0}


def test_poll_reloads_only_on_change(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    _write(path, OPEN)
    target = FakeTarget()
    reloader = PolicyReloader(path, [target], parse_policy(OPEN))
    assert reloader.poll() is None
    _write(path, STRICT)
    result = reloader.poll()
    assert result is not None and result.ok and result.trigger == "file-change"
    assert reloader.poll() is None and len(target.applied) == 1
    path.unlink()  # an editor's rename in progress: wait, do not fail
    assert reloader.poll() is None


def test_on_tighten_is_validated_and_defaults_to_end() -> None:
    assert parse_policy("version: 1\n").on_tighten == "end"
    assert parse_policy("version: 1\non_tighten: keep\n").on_tighten == "keep"
    with pytest.raises(PolicyError) as err:
        parse_policy("version: 1\non_tighten: never\n", "p.yaml")
    assert str(err.value.errors[0]).startswith("p.yaml:2:13: on_tighten")


def test_tightened_out_only_for_legacy_media_and_signaling() -> None:
    strict = parse_policy(STRICT)
    refusal = tightened_out(strict, meeting="1001", protocol="sip", transport="udp", legacy_encryption="plain")
    assert refusal is not None and refusal.rule == 'meetings."1001".legacy_media=require-srtp'
    assert tightened_out(strict, meeting="1001", protocol="sip", transport="udp",
                         legacy_encryption="sdes-srtp") is None
    tls = parse_policy("version: 1\ndefaults: {signaling: tls-required}\n")
    refusal = tightened_out(tls, meeting="7", protocol="sip", transport="tcp", legacy_encryption="sdes-srtp")
    assert refusal is not None and refusal.rule == "defaults.signaling=tls-required"
    assert tightened_out(tls, meeting="7", protocol="sip", transport="tls", legacy_encryption="plain") is None
    # Other changes (here: protocols) apply to new calls only.
    no_sip = parse_policy("version: 1\ndefaults: {protocols: [h323]}\n")
    assert tightened_out(no_sip, meeting="7", protocol="sip", transport="udp", legacy_encryption="plain") is None


def _controller_with_calls(policy: Policy, roster: Roster, metrics: Metrics) -> tuple[CallController, list[LegacyCall]]:
    controller = CallController(reactor=None, policy=policy, core_url="http://core", media_address="127.0.0.1",
                                ports=None, roster=roster, metrics=metrics)  # type: ignore[arg-type]
    entries = []
    for i, (meeting, enc) in enumerate([("1001", "plain"), ("1001", "sdes-srtp"), ("2002", "plain")]):
        entry = LegacyCall(call=FakeCall(f"c{i}@192.0.2.{i}"), meeting=meeting, label=f"l{i}")  # type: ignore[arg-type]
        entry.participant = roster.add(meeting, protocol="sip", transport="udp", codec="PCMU",
                                       legacy_encryption=enc, pseudonym=roster.new_pseudonym(meeting))  # type: ignore[arg-type]
        controller._calls[entry.call.call_id] = entry
        entries.append(entry)
    return controller, entries


def test_tightening_ends_only_the_calls_that_no_longer_qualify() -> None:
    async def scenario() -> None:
        roster, metrics = Roster(), Metrics()
        controller, (plain, srtp, other) = _controller_with_calls(parse_policy(OPEN), roster, metrics)
        ended = controller.apply_policy(parse_policy(STRICT))
        assert ended == 1 and controller.policy.for_meeting("1001").legacy_media == "require-srtp"  # type: ignore[union-attr]
        (reason,) = plain.call.hangups  # type: ignore[attr-defined]
        assert reason is not None and 'meetings."1001".legacy_media=require-srtp' in reason
        assert srtp.call.hangups == [] and other.call.hangups == []  # type: ignore[attr-defined]
        assert [p.legacy_encryption for p in roster.participants("1001")] == ["sdes-srtp"]
        assert controller.active_calls == 2

    asyncio.run(scenario())


def test_on_tighten_keep_keeps_calls_but_uses_the_new_policy_for_new_ones() -> None:
    async def scenario() -> None:
        roster, metrics = Roster(), Metrics()
        controller, entries = _controller_with_calls(parse_policy(OPEN), roster, metrics)
        keep = parse_policy("on_tighten: keep\n" + STRICT)
        assert controller.apply_policy(keep) == 0
        assert controller.policy is keep and all(e.call.hangups == [] for e in entries)  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_ended_meeting_leaves_no_state_in_controller_or_roster() -> None:
    """Issue 7: when a meeting ends, its roster entry, pseudonyms and calls are all dropped."""

    async def scenario() -> None:
        roster, metrics = Roster(), Metrics(per_meeting=True)
        controller, entries = _controller_with_calls(parse_policy(OPEN), roster, metrics)
        pseudonyms = {e.participant.pseudonym for e in entries[:2]}  # type: ignore[union-attr]
        assert await controller.end_meeting("1001", "meeting ended by an operator") == 2
        assert "1001" not in roster and roster.participants("1001") == []
        assert roster.meeting_ids() == ["2002"]
        assert all(e.meeting != "1001" for e in controller._calls.values())
        assert all(e.participant is None and e.session is None for e in entries[:2])
        text = repr(vars(roster)) + repr(controller._calls) + metrics.render().decode()
        assert not any(name in text for name in pseudonyms)
        assert 'meeting="1001"' not in metrics.render().decode()

    asyncio.run(scenario())


class FakeH323Conn:
    def __init__(self, ident: int) -> None:
        self.id, self.label = ident, f"h{ident}"
        self.released: list[str] = []

    def release(self, reason: str) -> None:
        self.released.append(reason)


def test_h323_calls_are_released_when_their_meeting_now_requires_srtp() -> None:
    from gateway.h323_calls import H323CallController, H323LegacyCall

    async def scenario() -> None:
        roster = Roster()
        controller = H323CallController(reactor=None, policy=parse_policy(OPEN), core_url="http://core",
                                        media_address="127.0.0.1", ports=None, roster=roster)  # type: ignore[arg-type]
        entries = []
        for ident, meeting in ((1, "1001"), (2, "2002")):
            conn = FakeH323Conn(ident)
            entry = H323LegacyCall(conn=conn, offer=None, meeting=meeting, label=conn.label)  # type: ignore[arg-type]
            entry.answered = True
            entry.participant = roster.add(meeting, protocol="h323", transport="tcp", codec="PCMU",
                                           legacy_encryption="plain", pseudonym=roster.new_pseudonym(meeting))
            controller._calls[ident] = entry
            entries.append(entry)
        assert controller.apply_policy(parse_policy(STRICT)) == 1
        assert entries[0].conn.released and not entries[1].conn.released  # type: ignore[attr-defined]
        assert roster.meeting_ids() == ["2002"]

    asyncio.run(scenario())
