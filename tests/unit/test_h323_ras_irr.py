"""IRQ/IRR (H.225.0 7.7.18-7.7.19) in the sans-IO RAS client and the own gatekeeper, fake clock.

The gatekeeper side is built with the codec layer only (h323/ras.py); every IRR the client sends
is decoded back and its per-call information compared with what the ARQ named.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h323 import ras
from h323.gatekeeper import Gatekeeper
from h323.h225 import Alias, TransportAddress
from h323.ras_client import RasClient, Registered
from tests.support.pcap import Flow, write_pcap

GK = ("127.0.0.1", 1719)
ME_RAS = TransportAddress("127.0.0.1", 11719)
ME_SIG = TransportAddress("127.0.0.1", 11720)
CALLER = TransportAddress("127.0.0.1", 40404)
CALL_A, CONF_A = bytes(range(16)), bytes(range(100, 116))
CALL_B, CONF_B = bytes(range(16, 32)), bytes(range(200, 216))
TSHARK = shutil.which("tshark")


def client() -> RasClient:
    return RasClient(gatekeeper=GK, ras_address=ME_RAS, call_signal_address=ME_SIG,
                     aliases=(Alias("h323-ID", "roomgate"),), rng=random.Random(7))


def sent(c: RasClient) -> list[tuple[ras.RasMessage, tuple[str, int]]]:
    return [(ras.decode(data), to) for data, to in c.datagrams_to_send()]


def answer(c: RasClient, msg: ras.RasMessage, now: float) -> None:
    c.receive_datagram(msg.encode(), GK, now)


def registered_with_calls(irr_frequency: int | None = None) -> RasClient:
    c = client()
    c.start(0.0)
    [(rrq, _)] = sent(c)
    answer(c, ras.registration_confirm(rrq.request_seq_num or 0, ME_SIG, "ep1", time_to_live=600), 0.1)
    assert isinstance(c.next_event(), Registered)
    for key, call, conf, ref in (("a", CALL_A, CONF_A, 0x8011), ("b", CALL_B, CONF_B, 0x0022)):
        c.admit(key, 1.0, conference_id=conf, call_identifier=call, call_reference=ref,
                remote_signal_address=CALLER)
        [(arq, _)] = sent(c)
        answer(c, ras.admission_confirm(arq.request_seq_num or 0, ME_SIG, irr_frequency=irr_frequency), 1.1)
    while c.next_event() is not None:
        pass
    return c


def per_call(irr: ras.RasMessage) -> list[tuple[int, bytes, bytes]]:
    return [(p["callReferenceValue"], p["conferenceID"], p["callIdentifier"]["guid"])
            for p in irr.value.get("perCallInfo", [])]


def test_irq_for_every_call_lists_both_with_addresses() -> None:
    c = registered_with_calls()
    answer(c, ras.info_request(900, 0), 2.0)
    [(irr, to)] = sent(c)
    assert to == GK and irr.name == "infoRequestResponse" and irr.request_seq_num == 900
    assert irr.endpoint_identifier == "ep1"
    assert irr.addresses("rasAddress") == (ME_RAS,) and irr.addresses("callSignalAddress") == (ME_SIG,)
    assert sorted(per_call(irr)) == sorted([(0x0011, CONF_A, CALL_A), (0x0022, CONF_B, CALL_B)])
    signalling = irr.value["perCallInfo"][0]["callSignalling"]
    assert TransportAddress.from_asn1(signalling["recvAddress"]) == ME_SIG
    assert TransportAddress.from_asn1(signalling["sendAddress"]) == CALLER
    assert irr.value["unsolicited"] is False and irr.value["needResponse"] is False
    assert irr.value["irrStatus"][0] == "complete"


def test_irq_for_one_call_by_reference_or_identifier_and_unknown_call() -> None:
    c = registered_with_calls()
    answer(c, ras.info_request(901, 0x22), 2.0)
    [(irr, _)] = sent(c)
    assert per_call(irr) == [(0x22, CONF_B, CALL_B)]
    answer(c, ras.info_request(902, 0, CALL_A), 2.0)
    [(irr, _)] = sent(c)
    assert per_call(irr) == [(0x11, CONF_A, CALL_A)]
    answer(c, ras.info_request(903, 0x77), 2.0)
    [(irr, _)] = sent(c)
    assert per_call(irr) == [] and irr.value["irrStatus"][0] == "invalidCall"


def test_irr_goes_to_the_irq_reply_address() -> None:
    c = registered_with_calls()
    irq = ras.info_request(904, 0)
    irq.value["replyAddress"] = TransportAddress("127.0.0.1", 2719).to_asn1()
    answer(c, irq, 2.0)
    [(_irr, to)] = sent(c)
    assert to == ("127.0.0.1", 2719)


def test_disengaged_call_leaves_the_irr() -> None:
    c = registered_with_calls()
    c.disengage("a", 3.0)
    [(drq, _)] = sent(c)
    assert drq.name == "disengageRequest"
    answer(c, ras.info_request(905, 0), 3.1)
    [(irr, _)] = sent(c)
    assert per_call(irr) == [(0x22, CONF_B, CALL_B)]


def test_unsolicited_irr_at_the_acf_irr_frequency_until_disengaged() -> None:
    c = registered_with_calls(irr_frequency=30)
    assert c.get_timer() == pytest.approx(31.1)
    c.handle_timer(31.0)
    assert sent(c) == []
    c.handle_timer(31.1)
    irrs = [m for m, _ in sent(c)]
    assert [m.name for m in irrs] == ["infoRequestResponse"] * 2
    assert all(m.value["unsolicited"] is True for m in irrs)
    assert sorted(per_call(m)[0][2] for m in irrs) == sorted([CALL_A, CALL_B])
    assert len({m.request_seq_num for m in irrs}) == 2  # each its own sequence number
    c.disengage("a", 40.0)
    [(drq, _)] = sent(c)
    answer(c, ras.disengage_confirm(drq.request_seq_num or 0), 40.1)
    c.handle_timer(61.1)
    [(irr, _)] = sent(c)
    assert per_call(irr) == [(0x22, CONF_B, CALL_B)]


def test_rcf_pregranted_irr_frequency_in_call_applies_when_the_acf_names_none() -> None:
    c = client()
    c.start(0.0)
    [(rrq, _)] = sent(c)
    rcf = ras.registration_confirm(rrq.request_seq_num or 0, ME_SIG, "ep1", time_to_live=600)
    rcf.value["preGrantedARQ"] = {"makeCall": False, "useGKCallSignalAddressToMakeCall": False,
                                  "answerCall": False, "useGKCallSignalAddressToAnswer": False,
                                  "irrFrequencyInCall": 20}
    answer(c, ras.decode(rcf.encode()), 0.1)
    c.admit("a", 1.0, conference_id=CONF_A, call_identifier=CALL_A, call_reference=1)
    [(arq, _)] = sent(c)
    answer(c, ras.admission_confirm(arq.request_seq_num or 0, ME_SIG), 1.1)
    assert c.get_timer() == pytest.approx(21.1)
    c.handle_timer(21.1)
    [(irr, _)] = sent(c)
    assert irr.value["unsolicited"] is True and per_call(irr) == [(1, CONF_A, CALL_A)]


def test_no_irr_without_frequency_nor_before_registration() -> None:
    c = registered_with_calls()
    c.handle_timer(400.0)
    assert [m.name for m, _ in sent(c)] == []  # the keep-alive is not due yet (ttl 600) and no IRR
    fresh = client()
    fresh.receive_datagram(ras.info_request(1, 0).encode(), GK, 0.0)
    assert sent(fresh) == []


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 65535), st.integers(0, 65535), st.one_of(st.none(), st.binary(min_size=16, max_size=16)))
def test_any_irq_gets_one_decodable_irr(seq: int, reference: int, guid: bytes | None) -> None:
    c = registered_with_calls()
    answer(c, ras.info_request(seq, reference & 0x7FFF, guid), 2.0)
    [(irr, _)] = sent(c)
    assert irr.request_seq_num == seq and irr.name == "infoRequestResponse"


def test_own_gatekeeper_accepts_irrs_and_acks_when_asked() -> None:
    gk = Gatekeeper(ras_address=TransportAddress("127.0.0.1", 1719), call_signal_address=ME_SIG,
                    is_meeting=lambda a: True, time_to_live=60)
    info = ras.PerCallInfo(5, CONF_A, CALL_A, ME_SIG)
    irr = ras.info_request_response(33, "nobody", ME_RAS, ME_SIG, (info,), unsolicited=True)
    gk.receive_datagram(irr.encode(), ("127.0.0.1", 5000), 0.0)
    assert gk.datagrams_to_send() == []
    irr.value["needResponse"] = True
    gk.receive_datagram(irr.encode(), ("127.0.0.1", 5000), 0.0)
    [(data, to)] = gk.datagrams_to_send()
    assert to == ("127.0.0.1", 5000)
    iack = ras.decode(data)
    assert iack.name == "infoRequestAck" and iack.request_seq_num == 33


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_tshark_decodes_our_irr_without_malformed_frames(tmp_path: Path) -> None:
    c = registered_with_calls(irr_frequency=10)
    answer(c, ras.info_request(906, 0), 2.0)
    c.handle_timer(11.1)
    flows = [Flow(data, (ME_RAS.host, ME_RAS.port), ("127.0.0.1", 1719), proto="udp")
             for data, _ in c.datagrams_to_send()]
    assert len(flows) == 3
    path = tmp_path / "irr.pcap"
    write_pcap(path, flows)
    assert TSHARK is not None
    out = subprocess.run([TSHARK, "-n", "-r", str(path), "-V"], capture_output=True, text=True, check=True).stdout
    assert out.count("RasMessage: infoRequestResponse") == 3
    assert "perCallInfo" in out and "unsolicited: True" in out
    assert "Malformed" not in out and "Expert Info (Error" not in out
