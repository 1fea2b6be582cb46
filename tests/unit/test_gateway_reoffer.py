"""The gateway's side of in-dialog offers and DTMF: re-INVITE hold/resume, re-target, codec
change and SDES re-keying applied to the legacy leg; one DTMF stream from RFC 4733 and INFO."""

from __future__ import annotations

import base64
import os

from bridge.ports import PortAllocator
from bridge.session import allocate_legacy_leg
from gateway.calls import CallController, LegacyCall
from sip.message import SipResponse
from sip.offer_answer import build_answer, choose_audio
from sip.sdp import SessionDescription
from sip.testing import OFFER_SDP, Harness, in_dialog, invite, parsed
from tests.unit.test_bridge_ports import FakeBinder
from tests.unit.test_policy_keys import POLICY


def _offer(version: int, *, direction: str = "sendrecv", ip: str = "192.0.2.10",
           port: int = 40000, pts: str = "0 8 101", crypto: str | None = None) -> str:
    proto = "RTP/SAVP" if crypto else "RTP/AVP"
    sdp = (f"v=0\r\no=- 1 {version} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
           f"m=audio {port} {proto} {pts}\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
           f"a=rtpmap:9 G722/8000\r\n"
           "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n"
           f"a={direction}\r\n")
    if crypto:
        sdp += f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{crypto}\r\n"
    return sdp


def _key() -> str:
    return base64.b64encode(os.urandom(30)).decode()


class _Setup:
    def __init__(self, first_offer: str = OFFER_SDP) -> None:
        self.h = Harness()
        self.ctl = CallController(reactor=None, policy=POLICY, core_url="http://127.0.0.1:1",
                                  media_address="127.0.0.1",
                                  ports=PortAllocator(40000, 40009, address="127.0.0.1",
                                                      bind=FakeBinder()))
        self.inv = invite(sdp=first_offer)
        self.h.send(self.inv)
        self.call = self.h.handler.offered[-1]
        assert self.call.offer is not None
        choice = choose_audio(self.call.offer, preferred=("PCMU", "PCMA", "G722"))
        self.leg = allocate_legacy_leg(
            media_address="127.0.0.1", port_allocator=self.ctl._ports, encoding=choice.encoding,
            payload_type=choice.payload_type, remote_address=choice.remote_address,
            remote_port=choice.remote_port, telephone_event_pt=choice.telephone_event_pt,
            srtp_suite=choice.srtp_suite, srtp_remote_key=choice.srtp_remote_key,
            srtp_local_key=choice.srtp_local_key)
        self.entry = LegacyCall(call=self.call, meeting="m", label="c1")
        self.entry.legacy = self.leg
        self.ctl._calls[self.call.call_id] = self.entry
        self.call.on_offer = lambda _c, offer: self.ctl._reoffer(self.entry, offer)
        answer = build_answer(self.call.offer, choice, "127.0.0.1", self.leg.local_port,
                              session_id=7, session_version=7)
        (ok,) = parsed(self.h.act(lambda: self.call.accept(str(answer))))
        assert isinstance(ok, SipResponse)
        self.tag = ok.to_addr.tag or ""
        self.h.send(in_dialog("ACK", self.inv, self.tag, 1, "z9hG4bK-a1"))
        self.cseq = 1

    def reinvite(self, sdp: str) -> SipResponse:
        self.cseq += 1
        re = invite(to_tag=self.tag, cseq=self.cseq, branch=f"z9hG4bK-re{self.cseq}", sdp=sdp)
        (resp,) = [m for m in parsed(self.h.send(re)) if isinstance(m, SipResponse)]
        if resp.status == 200:
            self.h.send(in_dialog("ACK", re, self.tag, self.cseq, f"z9hG4bK-ack{self.cseq}"))
        return resp


def test_hold_and_resume_stop_and_start_sending() -> None:
    s = _Setup(_offer(1))
    resp = s.reinvite(_offer(2, direction="sendonly"))
    answer = SessionDescription.parse(resp.body)
    assert resp.status == 200 and answer.media[0].direction == "recvonly"
    assert answer.origin.session_id == "7" and answer.origin.session_version == "8"
    assert s.leg.sending is False
    resp = s.reinvite(_offer(3, direction="inactive"))
    assert SessionDescription.parse(resp.body).media[0].direction == "inactive"
    assert s.leg.sending is False
    resp = s.reinvite(_offer(4))
    assert SessionDescription.parse(resp.body).media[0].direction == "sendrecv"
    assert s.leg.sending is True
    s.leg.close()


def test_same_version_is_a_refresh_and_changes_nothing() -> None:
    s = _Setup(_offer(1))
    before = s.call.answer_sdp
    resp = s.reinvite(_offer(1))
    assert resp.status == 200 and resp.body.decode() == before
    s.leg.close()


def test_address_change_retargets_and_unlatches() -> None:
    s = _Setup(_offer(1))
    s.leg.inbound.latched = ("192.0.2.10", 40000)
    assert s.reinvite(_offer(2, ip="192.0.2.77", port=41000)).status == 200
    assert s.leg.remote == ("192.0.2.77", 41000) and s.leg.inbound.latched is None
    assert s.leg.destination == ("192.0.2.77", 41000)
    s.leg.close()


def test_codec_change_same_rate_and_refused_rate_change() -> None:
    s = _Setup(_offer(1))
    assert s.leg.codec.name == "PCMU"
    resp = s.reinvite(_offer(2, pts="8 101"))
    assert resp.status == 200 and s.leg.codec.name == "PCMA"
    assert s.leg.outbound.payload_type == 8 and s.leg.inbound.payload_type == 8
    assert s.reinvite(_offer(3, pts="9 101")).status == 488  # G.722: another sample rate
    assert s.leg.codec.name == "PCMA"
    s.leg.close()


def test_new_sdes_keys_rekey_and_same_keys_keep_contexts() -> None:
    k1 = _key()
    s = _Setup(_offer(1, crypto=k1))
    first = s.leg.srtp
    assert first is not None
    resp = s.reinvite(_offer(2, crypto=k1, direction="sendonly"))
    assert resp.status == 200 and s.leg.srtp is first
    ours = base64.b64encode(first.local_key).decode()
    assert f"inline:{ours}" in resp.body.decode()  # our key unchanged too
    resp = s.reinvite(_offer(3, crypto=_key()))
    assert resp.status == 200 and s.leg.srtp is not first and s.leg.srtp is not None
    assert s.leg.inbound.srtp is s.leg.srtp and s.leg.outbound.srtp is s.leg.srtp
    assert s.reinvite(_offer(4)).status == 488  # never back to plain RTP mid-call
    s.leg.close()


def test_one_dtmf_stream_from_rfc4733_and_info() -> None:
    s = _Setup(_offer(1))
    got: list[tuple[str, str]] = []
    s.ctl.on_dtmf = lambda call, digit, source: got.append((digit, source))
    s.ctl._digit(s.entry, "1", "rfc4733")
    s.cseq += 1
    info = in_dialog("INFO", s.inv, s.tag, s.cseq, "z9hG4bK-info")
    info.headers.add("Content-Type", "application/dtmf-relay")
    info.body = b"Signal=2\r\nDuration=160\r\n"
    s.h.send(info)
    for _call, digit, source in s.h.handler.digits:  # what sip.transport dispatches
        s.ctl.dtmf(_call, digit, source)
    assert got == [("1", "rfc4733"), ("2", "sip-info")]
    assert s.entry.dtmf_count == 2
    s.leg.close()
