"""The tshark harness sees a real call: SIP and RTP between two pjsua agents on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.audio import tone, write_wav
from tests.support.pjsua import free_rtp_port, run_pjsua_call, start_pjsua_answer
from tests.support.tshark import capture, decode, flows, protocols_between

pytestmark = pytest.mark.interop


def test_capture_shows_sip_and_rtp_between_two_agents(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "t.wav", tone(800, 1.0))
    caller_rtp = free_rtp_port()
    answer_rtp = free_rtp_port()
    while abs(answer_rtp - caller_rtp) < 2:
        answer_rtp = free_rtp_port()
    pcap = tmp_path / "call.pcapng"
    with start_pjsua_answer(codec="PCMA", play_wav=wav, rtp_port=answer_rtp, seconds=30,
                            timeout=40) as answer:
        ports = [answer.port, caller_rtp, caller_rtp + 1, answer_rtp, answer_rtp + 1]
        with capture(ports, pcap) as cap:
            result = run_pjsua_call(answer.uri("room"), codec="PCMA", play_wav=wav, seconds=2,
                                    rtp_port=caller_rtp)
            answer.wait(timeout=30)
    assert result.connected, result
    assert cap.packets is None or cap.packets > 100, cap.stderr

    # Signalling: the INVITE with its SDP offer, the 200, the BYE, all on the answerer's port.
    sip = decode(pcap, "sip", ["sip.Method", "sip.Status-Code", "sdp.media", "udp.dstport"])
    methods = [r["sip.Method"] for r in sip if r["sip.Method"]]
    assert methods[0] == "INVITE" and "ACK" in methods and "BYE" in methods, sip
    offer = next(r for r in sip if r["sip.Method"] == "INVITE")
    assert offer["sdp.media"].startswith(f"audio {caller_rtp} RTP/AVP 8"), offer
    assert any(r["sip.Status-Code"] == "200" for r in sip)

    # Media: RTP with payload type 8 both ways between the announced ports (no heuristic needed:
    # tshark follows the SDP), and RTCP beside it.
    rtp = decode(pcap, "rtp", ["udp.srcport", "udp.dstport", "rtp.p_type"])
    directions = {(int(r["udp.srcport"]), int(r["udp.dstport"])) for r in rtp}
    assert directions == {(caller_rtp, answer_rtp), (answer_rtp, caller_rtp)}, directions
    assert {r["rtp.p_type"] for r in rtp} == {"8"}
    assert len(rtp) > 150  # ~2 s of 20 ms packets each way

    seen = {str(f) for f in flows(pcap)}
    assert protocols_between(pcap, caller_rtp, answer_rtp) >= {"rtp"}, seen
    assert "sip" in protocols_between(pcap, answer.port, _caller_sip_port(pcap, answer.port)), seen


def test_decode_as_and_heuristic_find_rtp_without_sdp(tmp_path: Path) -> None:
    """Only the media ports captured (no SIP): RTP is found by -d rules or by the heuristic."""
    wav = write_wav(tmp_path / "t.wav", tone(800, 1.0))
    caller_rtp, answer_rtp = free_rtp_port(40000, 49000), free_rtp_port(49000, 58000)
    pcap = tmp_path / "media.pcapng"
    with start_pjsua_answer(codec="PCMU", play_wav=wav, rtp_port=answer_rtp, seconds=30,
                            timeout=40) as answer, \
            capture(f"udp port {caller_rtp} or udp port {answer_rtp}", pcap):
        result = run_pjsua_call(answer.uri(), codec="PCMU", play_wav=wav, seconds=1,
                                rtp_port=caller_rtp)
        answer.wait(timeout=30)
    assert result.connected
    assert decode(pcap, "rtp", ["rtp.p_type"]) == []  # no SDP seen: plain UDP to tshark
    by_rule = decode(pcap, "rtp", ["rtp.p_type"], decode_as=[f"udp.port=={answer_rtp},rtp"])
    assert len(by_rule) > 50 and {r["rtp.p_type"] for r in by_rule} == {"0"}
    assert protocols_between(pcap, caller_rtp, answer_rtp, rtp_heuristic=True) == {"rtp"}
    assert "rtp" not in protocols_between(pcap, caller_rtp, answer_rtp, rtp_heuristic=False)


def _caller_sip_port(pcap: Path, answer_port: int) -> int:
    rows = decode(pcap, f"sip.Method == \"INVITE\" and udp.dstport == {answer_port}", ["udp.srcport"])
    return int(rows[0]["udp.srcport"])
