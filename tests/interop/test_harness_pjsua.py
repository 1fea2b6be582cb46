"""The pjsua harness measures media: two real pjsua agents talk directly over loopback (no gateway).

The caller sends 1000 Hz, the answerer 440 Hz; each recording must hold the other side's tone as
its strongest component, at a sane level, for every codec the gateway speaks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.audio import assert_tone, tone, write_wav
from tests.support.pjsua import run_pjsua_call, start_pjsua_answer

pytestmark = pytest.mark.interop

CALLER_HZ = 1000
ANSWER_HZ = 440


@pytest.fixture
def tones(tmp_path: Path) -> tuple[Path, Path]:
    return (write_wav(tmp_path / "caller_1000.wav", tone(CALLER_HZ, 2.0)),
            write_wav(tmp_path / "answer_440.wav", tone(ANSWER_HZ, 2.0)))


@pytest.mark.parametrize(("codec", "transport"),
                         [("PCMU", "udp"), ("PCMA", "udp"), ("G722", "udp"), ("PCMU", "tcp")])
def test_pjsua_to_pjsua_carries_both_tones(tmp_path: Path, tones: tuple[Path, Path], codec: str,
                                           transport: str) -> None:
    caller_wav, answer_wav = tones
    with start_pjsua_answer(codec=codec, play_wav=answer_wav, record_wav=tmp_path / "answer_rx.wav",
                            transport=transport, seconds=30, timeout=40) as answer:
        result = run_pjsua_call(answer.uri("room", transport), codec=codec, play_wav=caller_wav,
                                record_wav=tmp_path / "caller_rx.wav", seconds=3,
                                transport=transport)
        answered = answer.wait(timeout=30)

    assert result.connected, result
    assert result.final_status == 200 and result.status_from_wire
    assert answered.connected, answered
    expected_codec = {"PCMU": "PCMU/8000", "PCMA": "PCMA/8000", "G722": "G722/16000"}[codec]
    assert result.codec == expected_codec and answered.codec == expected_codec
    assert result.remote_rtp and result.remote_rtp.startswith("127.0.0.1:")
    # 20 ms packets for ~3 s; the counters come from the RTP stream's own statistics.
    assert result.rx_rtp_packets and result.rx_rtp_packets > 100, result
    assert answered.rx_rtp_packets and answered.rx_rtp_packets > 100, answered

    heard_by_caller = assert_tone(*result.recording(), ANSWER_HZ, min_dbfs=-25)
    heard_by_answer = assert_tone(*answered.recording(), CALLER_HZ, min_dbfs=-25)
    # The other tone must not leak in: each side hears only the far end.
    assert heard_by_caller.level_at(CALLER_HZ) < -30
    assert heard_by_answer.level_at(ANSWER_HZ) < -30


def test_pjsua_reports_failure_status_and_warning(tmp_path: Path) -> None:
    warning = '399 127.0.0.1 "no usable codec"'
    with start_pjsua_answer(answer_status=488, answer_warning=warning, timeout=20) as answer:
        result = run_pjsua_call(answer.uri("room"), codec="PCMU", seconds=1, timeout=10)
        answer.wait(timeout=20)
    assert not result.connected
    assert result.final_status == 488 and result.status_from_wire
    assert result.reason == "Not Acceptable Here"
    assert result.warning == warning


def test_pjsua_reports_refused_tcp_connection(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_pjsua_call(f"sip:room@127.0.0.1:{port}", transport="tcp", seconds=1, timeout=10)
    assert not result.connected
    assert not result.status_from_wire
    assert result.final_status >= 400


def test_pjsua_sdes_srtp_flag(tmp_path: Path, tones: tuple[Path, Path]) -> None:
    """--srtp mandatory on both sides: SDES-SRTP media still carries the tones; a plain-only
    answerer refuses a mandatory-SRTP caller with 488."""
    caller_wav, answer_wav = tones
    with start_pjsua_answer(codec="PCMU", play_wav=answer_wav, record_wav=tmp_path / "a.wav",
                            srtp="mandatory", timeout=40) as answer:
        result = run_pjsua_call(answer.uri(), codec="PCMU", play_wav=caller_wav,
                                record_wav=tmp_path / "c.wav", seconds=2, srtp="mandatory")
        answered = answer.wait(timeout=30)
    assert result.connected and answered.connected
    assert_tone(*result.recording(), ANSWER_HZ, min_dbfs=-25)
    assert_tone(*answered.recording(), CALLER_HZ, min_dbfs=-25)

    with start_pjsua_answer(codec="PCMU", srtp="off", timeout=20) as plain:
        refused = run_pjsua_call(plain.uri(), codec="PCMU", seconds=1, srtp="mandatory", timeout=10)
        # pjsua refuses the offer itself, before the agent sees a call: nothing to wait for.
    assert not refused.connected
    assert refused.final_status == 488 and refused.status_from_wire
