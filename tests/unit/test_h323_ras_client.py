"""The sans-IO RAS client (h323/ras_client.py) and own gatekeeper (h323/gatekeeper.py) with a
fake clock; the other side is built with the codec layer (h323/ras.py) only."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h323 import ras
from h323.gatekeeper import TTL_GRACE, Gatekeeper
from h323.h225 import Alias, TransportAddress
from h323.ras_client import (
    KEEPALIVE_FRACTION,
    RAS_RETRIES,
    RAS_TIMEOUT,
    AdmissionRejected,
    Admitted,
    Disengaged,
    DisengageOrdered,
    RasClient,
    Registered,
    RegistrationFailed,
    Unregistered,
)

GK = ("127.0.0.1", 1719)
ME_RAS = TransportAddress("127.0.0.1", 11719)
ME_SIG = TransportAddress("127.0.0.1", 11720)
CALL = bytes(range(16))


def client(**kw: object) -> RasClient:
    return RasClient(gatekeeper=GK, ras_address=ME_RAS, call_signal_address=ME_SIG,
                     aliases=(Alias("h323-ID", "roomgate"), Alias("dialledDigits", "1000")),
                     rng=random.Random(1), **kw)  # type: ignore[arg-type]


def sent(c: RasClient) -> list[ras.RasMessage]:
    out = []
    for data, to in c.datagrams_to_send():
        assert to == GK
        out.append(ras.decode(data))
    return out


def events(c: RasClient) -> list[object]:
    out = []
    while (e := c.next_event()) is not None:
        out.append(e)
    return out


def answer(c: RasClient, msg: ras.RasMessage, now: float) -> None:
    c.receive_datagram(msg.encode(), GK, now)


def register(c: RasClient, now: float = 0.0, ttl: int = 60) -> None:
    c.start(now)
    [rrq] = sent(c)
    answer(c, ras.registration_confirm(rrq.request_seq_num, ME_SIG, "ep1", gatekeeper_identifier="gk",
                                       time_to_live=ttl), now + 0.01)
    assert [type(e) for e in events(c)] == [Registered]


def test_discovery_then_registration_with_aliases_and_prefixes() -> None:
    c = client(discover=True, prefixes=("10", "20"), time_to_live=120)
    c.start(0.0)
    [grq] = sent(c)
    assert grq.name == "gatekeeperRequest"
    answer(c, ras.gatekeeper_confirm(grq.request_seq_num, TransportAddress(*GK), "gk-1"), 0.1)
    [rrq] = sent(c)
    assert rrq.name == "registrationRequest" and not rrq.keep_alive
    assert rrq.gatekeeper_identifier == "gk-1" and rrq.time_to_live == 120
    assert [a.value for a in rrq.aliases("terminalAlias")] == ["roomgate", "1000"]
    prefixes = rrq.value["terminalType"]["gateway"]["protocol"][0][1]["supportedPrefixes"]
    assert [p["prefix"] for p in prefixes] == [("dialledDigits", "10"), ("dialledDigits", "20")]
    assert rrq.addresses("callSignalAddress") == (ME_SIG,)
    answer(c, ras.registration_confirm(rrq.request_seq_num, ME_SIG, "ep1", time_to_live=60), 0.2)
    [ev] = events(c)
    assert ev == Registered("ep1", "gk-1", 60, False) and c.registered


def test_keep_alive_before_expiry_and_fallback_to_full_registration() -> None:
    c = client()
    register(c, ttl=40)
    due = 0.01 + 40 * KEEPALIVE_FRACTION
    assert c.get_timer() == pytest.approx(due)
    c.handle_timer(due - 1)
    assert sent(c) == []
    c.handle_timer(due)
    [ka] = sent(c)
    assert ka.keep_alive and ka.endpoint_identifier == "ep1" and not ka.aliases("terminalAlias")
    # the gatekeeper forgot us: RRJ fullRegistrationRequired -> full RRQ
    answer(c, ras.reject("registrationRequest", ka.request_seq_num, "fullRegistrationRequired"), due + 0.1)
    [full] = sent(c)
    assert not full.keep_alive and full.aliases("terminalAlias")
    answer(c, ras.registration_confirm(full.request_seq_num, ME_SIG, "ep2", time_to_live=40), due + 0.2)
    assert events(c)[-1] == Registered("ep2", "gk", 40, False)


def test_retries_with_same_sequence_number_then_backoff() -> None:
    c = client()
    c.start(0.0)
    [rrq] = sent(c)
    now = 0.0
    for _ in range(RAS_RETRIES["registrationRequest"]):
        now += RAS_TIMEOUT["registrationRequest"]
        c.handle_timer(now)
        [again] = sent(c)
        assert again.request_seq_num == rrq.request_seq_num
    now += RAS_TIMEOUT["registrationRequest"]
    c.handle_timer(now)
    assert sent(c) == [] and events(c) == [RegistrationFailed("timeout")]
    retry = c.get_timer()
    assert retry is not None and retry > now
    c.handle_timer(retry)
    [rrq2] = sent(c)
    assert rrq2.name == "registrationRequest"


def test_request_in_progress_postpones_the_retry() -> None:
    c = client()
    c.start(0.0)
    [rrq] = sent(c)
    answer(c, ras.request_in_progress(rrq.request_seq_num, 10_000), 1.0)
    c.handle_timer(RAS_TIMEOUT["registrationRequest"] + 0.5)
    assert sent(c) == []
    assert c.get_timer() == pytest.approx(11.0)


def test_admission_confirm_then_disengage() -> None:
    c = client()
    register(c)
    c.admit("call-1", 1.0, conference_id=CALL, call_identifier=CALL, call_reference=0x8123,
            destination=(Alias("dialledDigits", "1000"),))
    [arq] = sent(c)
    assert arq.name == "admissionRequest" and arq.value["answerCall"] is True
    assert arq.endpoint_identifier == "ep1" and arq.value["callIdentifier"]["guid"] == CALL
    assert arq.value["callReferenceValue"] == 0x0123
    answer(c, ras.admission_confirm(arq.request_seq_num, ME_SIG), 1.1)
    assert events(c) == [Admitted("call-1", ME_SIG, 1280)]
    c.disengage("call-1", 5.0)
    [drq] = sent(c)
    assert drq.name == "disengageRequest" and drq.value["answeredCall"] is True
    answer(c, ras.disengage_confirm(drq.request_seq_num), 5.1)
    assert events(c) == [Disengaged("call-1", True)]
    c.disengage("call-1", 6.0)  # only once
    assert sent(c) == []


def test_admission_reject_and_timeout() -> None:
    c = client()
    register(c)
    c.admit("a", 1.0, conference_id=CALL, call_identifier=CALL, call_reference=1)
    [arq] = sent(c)
    answer(c, ras.reject("admissionRequest", arq.request_seq_num, "requestDenied"), 1.1)
    assert events(c) == [AdmissionRejected("a", "requestDenied")]
    c.disengage("a", 2.0)  # never admitted: no DRQ
    assert sent(c) == []
    c.admit("b", 10.0, conference_id=CALL, call_identifier=CALL, call_reference=2)
    sent(c)
    now = 10.0
    for _ in range(RAS_RETRIES["admissionRequest"] + 1):
        now += RAS_TIMEOUT["admissionRequest"]
        c.handle_timer(now)
    assert AdmissionRejected("b", "timeout") in events(c)


def test_arq_before_registration_is_refused_at_once() -> None:
    c = client()
    c.admit("x", 0.0, conference_id=CALL, call_identifier=CALL, call_reference=1)
    assert events(c) == [AdmissionRejected("x", "notRegistered")]


def test_unregister_and_gatekeeper_initiated_messages() -> None:
    c = client()
    register(c)
    c.admit("k", 1.0, conference_id=CALL, call_identifier=CALL, call_reference=3)
    [arq] = sent(c)
    answer(c, ras.admission_confirm(arq.request_seq_num, ME_SIG), 1.1)
    events(c)
    # the gatekeeper disengages the call: DCF and an order to release it
    drq = ras.disengage_request(77, "ep1", CALL, CALL, 3)
    answer(c, drq, 2.0)
    [dcf] = sent(c)
    assert dcf.name == "disengageConfirm" and dcf.request_seq_num == 77
    assert events(c) == [DisengageOrdered("k", "normalDrop")]
    # the gatekeeper unregisters us: UCF and a full RRQ
    answer(c, ras.unregistration_request_from_gatekeeper(78, ME_SIG, "ep1"), 3.0)
    ucf, rrq = sent(c)
    assert ucf.name == "unregistrationConfirm" and rrq.name == "registrationRequest" and not rrq.keep_alive
    answer(c, ras.registration_confirm(rrq.request_seq_num, ME_SIG, "ep9", time_to_live=60), 3.1)
    events(c)
    c.unregister(4.0)
    [urq] = sent(c)
    assert urq.name == "unregistrationRequest" and urq.endpoint_identifier == "ep9"
    answer(c, ras.unregistration_confirm(urq.request_seq_num), 4.1)
    assert events(c) == [Unregistered(True)] and c.state == "unregistered" and c.get_timer() is None


def test_foreign_and_garbage_datagrams_are_dropped() -> None:
    c = client()
    c.start(0.0)
    [rrq] = sent(c)
    c.receive_datagram(ras.registration_confirm(rrq.request_seq_num, ME_SIG, "evil").encode(), ("127.0.0.2", 1719), 0.1)
    c.receive_datagram(b"\x00\xffnot ras", GK, 0.1)
    c.receive_datagram(ras.disengage_confirm(999).encode(), GK, 0.1)
    assert events(c) == [] and not c.registered


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_random_datagrams_never_raise(data: bytes) -> None:
    c = client()
    register(c)
    c.receive_datagram(data, GK, 1.0)
    gk = gatekeeper()
    gk.receive_datagram(data, ("127.0.0.1", 5000), 1.0)


# ------------------------------------------------------------------------- own gatekeeper

GW_SIG = TransportAddress("127.0.0.1", 1720)
EP = ("127.0.0.1", 30000)
EP_RAS = TransportAddress(*EP)
EP_SIG = TransportAddress("127.0.0.1", 30001)


def gatekeeper() -> Gatekeeper:
    return Gatekeeper(ras_address=TransportAddress("127.0.0.1", 1719), call_signal_address=GW_SIG,
                      is_meeting=lambda a: a.split("#")[0].isdigit() and a != "2000", time_to_live=60)


def ask(gk: Gatekeeper, msg: ras.RasMessage, now: float = 0.0) -> ras.RasMessage:
    gk.receive_datagram(msg.encode(), EP, now)
    [(data, to)] = gk.datagrams_to_send()
    assert to == EP
    reply = ras.decode(data)
    assert reply.request_seq_num == msg.request_seq_num
    return reply


def gk_register(gk: Gatekeeper, alias: str = "alice", sig: TransportAddress = EP_SIG) -> str:
    rcf = ask(gk, ras.registration_request(2, sig, EP_RAS, aliases=(Alias("h323-ID", alias),),
                                           time_to_live=600, role="terminal"))
    assert rcf.name == "registrationConfirm" and rcf.time_to_live == 60
    assert rcf.endpoint_identifier
    return rcf.endpoint_identifier


def test_gatekeeper_grq_rrq_keepalive_expiry() -> None:
    gk = gatekeeper()
    gcf = ask(gk, ras.gatekeeper_request(1, EP_RAS, role="terminal"))
    assert gcf.name == "gatekeeperConfirm" and gcf.gatekeeper_identifier == "roomgate"
    grj = ask(gk, ras.gatekeeper_request(1, EP_RAS, gatekeeper_identifier="other", role="terminal"))
    assert grj.abbreviation == "GRJ" and ras.reject_reason(grj) == "terminalExcluded"
    eid = gk_register(gk)
    ka = ask(gk, ras.registration_request(3, EP_SIG, EP_RAS, keep_alive=True, endpoint_identifier=eid), 50.0)
    assert ka.name == "registrationConfirm" and ka.endpoint_identifier == eid
    assert gk.get_timer() == pytest.approx(110.0 + TTL_GRACE)
    gk.handle_timer(110.0 + TTL_GRACE - 0.1)
    assert eid in gk.registrations
    gk.handle_timer(110.0 + TTL_GRACE)
    assert not gk.registrations
    rrj = ask(gk, ras.registration_request(4, EP_SIG, EP_RAS, keep_alive=True, endpoint_identifier=eid), 200.0)
    assert ras.reject_reason(rrj) == "fullRegistrationRequired"


def test_gatekeeper_duplicate_alias_is_refused() -> None:
    gk = gatekeeper()
    gk_register(gk, "alice")
    rrj = ask(gk, ras.registration_request(5, TransportAddress("127.0.0.1", 40001), EP_RAS,
                                           aliases=(Alias("h323-ID", "alice"),)))
    assert ras.reject_reason(rrj) == "duplicateAlias"


def test_gatekeeper_admission_location_disengage_unregister() -> None:
    gk = gatekeeper()
    eid = gk_register(gk, "alice")
    acf = ask(gk, ras.admission_request(10, eid, CALL, CALL, 5, answer_call=False,
                                        destination=(Alias("dialledDigits", "1000"),)))
    assert acf.name == "admissionConfirm" and acf.addresses("destCallSignalAddress") == (GW_SIG,)
    assert acf.value["callModel"][0] == "direct"
    arj = ask(gk, ras.admission_request(11, eid, CALL, CALL, 5, answer_call=False,
                                        destination=(Alias("dialledDigits", "2000"),)))
    assert ras.reject_reason(arj) == "calledPartyNotRegistered"
    arj = ask(gk, ras.admission_request(12, "nobody", CALL, CALL, 5, answer_call=False,
                                        destination=(Alias("dialledDigits", "1000"),)))
    assert ras.reject_reason(arj) == "callerNotRegistered"
    answer_acf = ask(gk, ras.admission_request(13, eid, CALL, CALL, 5, answer_call=True))
    assert answer_acf.addresses("destCallSignalAddress") == (EP_SIG,)
    lcf = ask(gk, ras.location_request(14, (Alias("dialledDigits", "1000"),), EP_RAS))
    assert lcf.name == "locationConfirm" and lcf.addresses("callSignalAddress") == (GW_SIG,)
    lcf = ask(gk, ras.location_request(15, (Alias("h323-ID", "alice"),), EP_RAS))
    assert lcf.addresses("callSignalAddress") == (EP_SIG,)
    lrj = ask(gk, ras.location_request(16, (Alias("h323-ID", "nobody"),), EP_RAS))
    assert lrj.abbreviation == "LRJ" and ras.reject_reason(lrj) == "requestDenied"
    assert ask(gk, ras.disengage_request(17, eid, CALL, CALL, 5)).name == "disengageConfirm"
    assert ras.reject_reason(ask(gk, ras.disengage_request(18, "nobody", CALL, CALL, 5))) == "notRegistered"
    assert ask(gk, ras.unregistration_request(19, EP_SIG, endpoint_identifier=eid)).name == "unregistrationConfirm"
    urj = ask(gk, ras.unregistration_request(20, EP_SIG, endpoint_identifier=eid))
    assert ras.reject_reason(urj) == "notCurrentlyRegistered"


def test_client_registers_with_own_gatekeeper() -> None:
    """The two cores talk to each other: RRQ/RCF, keep-alive, ARQ/ACF, DRQ/DCF, URQ/UCF."""
    gk = gatekeeper()
    c = client()

    def pump(now: float) -> None:
        for _ in range(4):
            for data, _to in c.datagrams_to_send():
                gk.receive_datagram(data, (ME_RAS.host, ME_RAS.port), now)
            for data, _to in gk.datagrams_to_send():
                c.receive_datagram(data, GK, now)

    c.start(0.0)
    pump(0.0)
    assert c.registered and c.granted_ttl == 60
    c.handle_timer(c.get_timer() or 0.0)
    pump(45.0)
    assert c.registered and gk.answered.count("RCF") == 2
    c.admit(1, 46.0, conference_id=CALL, call_identifier=CALL, call_reference=9)
    pump(46.0)
    c.disengage(1, 50.0)
    pump(50.0)
    c.unregister(60.0)
    pump(60.0)
    assert c.sent == ["RRQ", "RRQ", "ARQ", "DRQ", "URQ"]
    assert gk.answered == ["RCF", "RCF", "ACF", "DCF", "UCF"]
    assert not gk.registrations
