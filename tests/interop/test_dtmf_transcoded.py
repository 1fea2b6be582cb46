"""DTMF through a transcoded call arrives with valid RFC 4733 timestamps (issue 4, Done-when 5).

Two real pjsua2 callers join one meeting with different codecs (A: PCMU, B: PCMA), so the audio
between them is decoded, mixed and encoded again by B's leg on its own 20 ms clock. The meeting
has ``dtmf_relay: true``; A keys digits by RFC 4733, and the gateway must send them to B as
events on *B's* stream. tshark, capturing B's RTP port, is the judge: its own ``rtpevent``
decode must show every digit in order, each event's packets sharing one timestamp that sits in
B's audio timestamp progression, durations growing by 160 per packet, the end packet three
times, and sequence numbers running on from the audio without a gap. pjsua B must also report
the digits through its ``onDtmfDigit`` callback.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.peers.h323_caller import run_h323_call
from tests.support.control_api import ControlAccess
from tests.support.gateway_process import GatewayProcess, free_tcp_port
from tests.support.pjsua import PjsuaResult, free_rtp_port, run_pjsua_call
from tests.support.tshark import capture, decode

pytestmark = pytest.mark.interop

MEETING = "4733"
DIGITS = ["1234#", "*9"]
EXPECTED = "".join(DIGITS)
FIELDS = ["frame.number", "rtp.ssrc", "rtp.seq", "rtp.timestamp", "rtp.marker", "rtp.p_type",
          "rtpevent.event_id", "rtpevent.end_of_event", "rtpevent.duration", "rtpevent.volume"]
EVENT_NAMES = "0123456789*#ABCD"


def _two_callers(gw: GatewayProcess, b_rtp: int, tmp_path: Path) -> tuple[PjsuaResult, PjsuaResult]:
    """B (PCMA) joins and listens; once it is in, A (PCMU) joins and keys ``DIGITS``."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        b = pool.submit(run_pjsua_call, gw.sip_uri(MEETING), codec="PCMA", rtp_port=b_rtp, seconds=18,
                        timeout=30, log_file=tmp_path / "b.log")
        gw.wait_for_event("call.answered", timeout=30, meeting=MEETING)
        a = pool.submit(run_pjsua_call, gw.sip_uri(MEETING), codec="PCMU", seconds=11, timeout=30,
                        dtmf=",".join(DIGITS), dtmf_pause=3.0, log_file=tmp_path / "a.log")
        return a.result(timeout=90), b.result(timeout=90)


def _rows(path: Path, b_rtp: int, audio_pt: int = 8) -> list[dict[str, Any]]:
    """What the gateway sent to B's RTP port, decoded by tshark (telephone-event PT learnt from
    the first pass: whatever dynamic PT besides the audio's the stream carries)."""
    where = f"rtp && udp.dstport == {b_rtp}"
    first = decode(path, where, ["rtp.p_type"], decode_as=[f"udp.port=={b_rtp},rtp"])
    pts = {int(r["rtp.p_type"]) for r in first if r["rtp.p_type"]}
    assert audio_pt in pts, f"no audio (PT {audio_pt}) toward B: payload types {pts}"
    events_pt = pts - {audio_pt}
    assert len(events_pt) == 1, f"expected one telephone-event payload type besides 8, got {pts}"
    te = events_pt.pop()
    rows = decode(path, where, FIELDS, decode_as=[f"udp.port=={b_rtp},rtp", f"rtp.pt=={te},rtpevent"])
    out = []
    for r in rows:
        is_event = int(r["rtp.p_type"]) == te
        out.append({
            "frame": int(r["frame.number"]), "ssrc": r["rtp.ssrc"], "seq": int(r["rtp.seq"]),
            "ts": int(r["rtp.timestamp"]), "marker": r["rtp.marker"] in ("1", "True"),
            "event": int(r["rtpevent.event_id"]) if is_event else None,
            "end": r["rtpevent.end_of_event"] in ("1", "True") if is_event else None,
            "duration": int(r["rtpevent.duration"]) if is_event else None,
            "volume": int(r["rtpevent.volume"]) if is_event else None,
        })
    return sorted(out, key=lambda row: row["frame"])


def _check_stream(rows: list[dict[str, Any]]) -> str:
    """Assert the RFC 4733 rules on B's stream; returns the digits the events spell."""
    assert len({r["ssrc"] for r in rows}) == 1, "the events must ride B's own stream (one SSRC)"
    for a, b in itertools.pairwise(rows):
        assert (b["seq"] - a["seq"]) & 0xFFFF == 1, f"sequence gap {a['seq']} -> {b['seq']}"
    groups: list[list[int]] = []  # indexes into rows, one list per event
    for i, r in enumerate(rows):
        if r["event"] is None:
            continue
        if groups and rows[groups[-1][-1]]["ts"] == r["ts"] and groups[-1][-1] == i - 1:
            groups[-1].append(i)
        else:
            groups.append([i])
    spelled = ""
    for g in groups:
        evs = [rows[i] for i in g]
        first, last = g[0], g[-1]
        assert first > 0 and rows[first - 1]["event"] is None, "an event starts after audio"
        assert last + 1 < len(rows) and rows[last + 1]["event"] is None, "audio follows the event"
        before, after = rows[first - 1], rows[last + 1]
        ts = evs[0]["ts"]
        assert len({e["event"] for e in evs}) == 1
        assert [e["marker"] for e in evs] == [True] + [False] * (len(evs) - 1), "marker on the first only"
        ends = [e for e in evs if e["end"]]
        assert len(ends) == 3 and evs[-3:] == ends, "the end packet is sent three times, last"
        assert len({e["duration"] for e in ends}) == 1, "end copies repeat the final duration"
        tone = [e["duration"] for e in evs[:-2]]
        assert all(b - a == 160 for a, b in itertools.pairwise(tone)) and tone[0] == 160, tone
        # On B's clock: one or more packet times after the audio before, and the audio after
        # continues from the event's start at least the event's whole duration later.
        since = (ts - before["ts"]) & 0xFFFFFFFF
        assert since % 160 == 0 and 0 < since < 0x8000, f"event ts {ts} not on B's clock after {before['ts']}"
        assert 0 < ((after["ts"] - ts) & 0xFFFFFFFF) < 0x80000000
        assert (after["ts"] - ts) & 0xFFFFFFFF >= ends[0]["duration"], "audio resumed inside the event"
        assert ((after["ts"] - ts) & 0xFFFFFFFF) % 160 == 0
        spelled += EVENT_NAMES[evs[0]["event"]]
        print(f"event {EVENT_NAMES[evs[0]['event']]}: ts={ts} (+{since} after audio ts {before['ts']}), "
              f"{len(evs)} packets, durations {[e['duration'] for e in evs]}, seq {evs[0]['seq']}..{evs[-1]['seq']}")
    return spelled


def test_relayed_dtmf_is_retimed_onto_the_transcoded_stream(
        gateway_factory: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    gw = gateway_factory(policy={"meetings": {MEETING: {"dtmf_relay": True}}})
    b_rtp = free_rtp_port()
    with capture([b_rtp], tmp_path / "b.pcapng") as cap:
        a, b = _two_callers(gw, b_rtp, tmp_path)
    assert a.connected and b.connected, (a, b)
    assert (a.codec, b.codec) == ("PCMU/8000", "PCMA/8000"), "the two legs must use different codecs"
    rows = _rows(cap.path, b_rtp)
    audio = sum(1 for r in rows if r["event"] is None)
    events = len(rows) - audio
    print(f"toward B: {len(rows)} RTP packets, {audio} audio, {events} telephone-event")
    assert _check_stream(rows) == EXPECTED
    assert b.raw.get("dtmf_received") == EXPECTED, b.raw
    assert gw.events("dtmf.relayed", meeting=MEETING), "the gateway logged no relay"
    for name in ("dtmf.relayed", "call.dtmf_sent", "bridge.dtmf.queued"):
        # ``digits``/``digit`` are PII keys (hashed); these events carry only a count.
        assert gw.events(name) and all(isinstance(e["count"], int) and "digits" not in e
                                       for e in gw.events(name)), f"{name} missing or logged digits"


def test_digits_are_not_relayed_without_the_policy(
        gateway_factory: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    gw = gateway_factory(policy={"meetings": {MEETING: {}}})
    b_rtp = free_rtp_port()
    with capture([b_rtp], tmp_path / "b.pcapng") as cap:
        a, b = _two_callers(gw, b_rtp, tmp_path)
    assert a.connected and b.connected, (a, b)
    assert len(gw.events("call.dtmf", meeting=MEETING)) == len(EXPECTED), "A's digits did not arrive"
    pts = {r["rtp.p_type"] for r in decode(cap.path, f"rtp && udp.dstport == {b_rtp}", ["rtp.p_type"],
                                           decode_as=[f"udp.port=={b_rtp},rtp"])}
    assert pts == {"8"}, f"B got more than PCMA audio: {pts}"
    assert b.raw.get("dtmf_received") == "", b.raw


def test_control_api_keys_digits_toward_a_caller_on_its_own_clock(
        gateway_factory: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    control = ControlAccess.create(tmp_path / "tls", "read", "operate", id_prefix="t")
    gw = gateway_factory(config={"control": control.config()})
    b_rtp = free_rtp_port()
    api_digits = "0#A"
    with capture([b_rtp], tmp_path / "b.pcapng") as cap, ThreadPoolExecutor(max_workers=1) as pool:
        b = pool.submit(run_pjsua_call, gw.sip_uri(MEETING), codec="G722", rtp_port=b_rtp, seconds=8,
                        timeout=30)
        gw.wait_for_event("call.answered", timeout=30, meeting=MEETING)
        status, meeting = control.request(f"/api/v1/meetings/{MEETING}", "read")
        assert status == 200, meeting
        pid = meeting["participants"][0]["id"]
        path = f"/api/v1/meetings/{MEETING}/participants/{pid}/dtmf"
        assert control.request(path, "read", "POST", {"digits": api_digits})[0] == 403
        status, body = control.request(path, "operate", "POST", {"digits": "12x"})
        assert status == 400 and "x" in body["error"]["message"], body
        status, body = control.request(f"/api/v1/meetings/{MEETING}/participants/nobody/dtmf", "operate",
                                       "POST", {"digits": "1"})
        assert status == 404, body
        status, body = control.request(path, "operate", "POST", {"digits": api_digits.lower()})
        assert (status, body.get("queued")) == (200, 3), body
        result = b.result(timeout=60)
    assert result.connected and result.codec == "G722/16000", result
    audit = gw.wait_for_event("audit.command", action="participant.dtmf", result="ok")
    assert audit["token"] == "t-operate"
    te_rows = _rows(cap.path, b_rtp, audio_pt=9)
    assert _check_stream(te_rows) == api_digits
    assert result.raw.get("dtmf_received") == api_digits, result.raw


def test_sip_digits_reach_an_h323_participant_as_user_input(
        gateway_factory: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    """The relay crosses protocols: pjsua's RFC 4733 digits reach the project's H.323 caller as
    H.245 userInputIndication ``signal`` (its TCS lists ``dtmf``), in order, with the duration."""
    h323_port = free_tcp_port()
    gw = gateway_factory(policy={"meetings": {MEETING: {"dtmf_relay": True}}},
                         config={"h323": {"listen": f"127.0.0.1:{h323_port}"}})
    with ThreadPoolExecutor(max_workers=2) as pool:
        h = pool.submit(run_h323_call, "127.0.0.1", h323_port, MEETING, fast_start=True, tunnelling=True,
                        codec="PCMA", seconds=14, timeout=30)
        gw.wait_for_event("call.answered", timeout=30, meeting=MEETING)
        a = pool.submit(run_pjsua_call, gw.sip_uri(MEETING), codec="PCMU", seconds=9, timeout=30,
                        dtmf=",".join(DIGITS), dtmf_pause=3.0)
        a_result, h_result = a.result(timeout=90), h.result(timeout=90)
    assert a_result.connected and h_result.connected, (a_result, h_result.error)
    print(f"H.323 caller got userInputIndication: {h_result.user_input}")
    assert "".join(key for _, key, _ in h_result.user_input) == EXPECTED
    assert all(form == "signal" and duration == 160 for form, _, duration in h_result.user_input)
    sent = gw.events("call.dtmf_sent", by="h245-uii", why="relay")
    assert sum(e["count"] for e in sent) == len(EXPECTED)
