"""H.245 flowControlCommand and incoming videoFastUpdatePicture (issue 5, slices 1 and 2).

The vectors are built by pycrate straight from ASN.1 values (not by our ``to_message``), so the
decoder is checked against an independent encoder; then the session turns them into typed events
and the controller feeds the call's bitrate governor / keyframe translator.  Nothing answers a
command: the session must send no PDU for either.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.bitrate import BitrateGovernor
from gateway.h323_calls import H323CallController, H323LegacyCall
from h323 import asn1, h245, tpkt
from h323.errors import H245Error
from h323.h245_session import FlowControl, H245Session, KeyframeRequested
from tests.support.pcap import Flow, write_pcap

TSHARK = shutil.which("tshark")


def pycrate_pdu(kind: str, name: str, value: Any) -> bytes:
    return asn1.encode("MultimediaSystemControlMessage", (kind, (name, value)), H245Error)


def flow_control_pdu(scope: tuple[str, int], restriction: tuple[str, int]) -> bytes:
    return pycrate_pdu("command", "flowControlCommand", {"scope": scope, "restriction": restriction})


SCOPES = st.one_of(
    st.tuples(st.just("logicalChannelNumber"), st.integers(1, 65535)),
    st.tuples(st.just("resourceID"), st.integers(0, 65535)),
    st.just(("wholeMultiplex", 0)),
)
RESTRICTIONS = st.one_of(st.tuples(st.just("maximumBitRate"), st.integers(0, 16_777_215)),
                         st.just(("noRestriction", 0)))


@given(SCOPES, RESTRICTIONS)
def test_flow_control_vectors_from_pycrate_decode_to_the_typed_command(scope: tuple[str, int],
                                                                      restriction: tuple[str, int]) -> None:
    data = flow_control_pdu(scope, restriction)
    typed = h245.decode(data).typed()
    assert isinstance(typed, h245.FlowControlCommand)
    assert typed.scope == scope[0]
    assert typed.target == (None if scope[0] == "wholeMultiplex" else scope[1])
    assert typed.maximum_bit_rate == (restriction[1] if restriction[0] == "maximumBitRate" else None)
    assert h245.encode(typed) == data  # and our encoder builds the same octets back


def test_known_vector_one_channel_384_kbit() -> None:
    data = flow_control_pdu(("logicalChannelNumber", 2), ("maximumBitRate", 3840))
    typed = h245.decode(data).typed()
    assert typed == h245.FlowControlCommand("logicalChannelNumber", 2, 3840)
    assert typed.maximum_bps == 384_000


@pytest.mark.parametrize(("scope", "target", "rate"), [
    ("bogus", 1, 10), ("wholeMultiplex", 3, 10), ("logicalChannelNumber", None, 10),
    ("resourceID", 1, -1), ("resourceID", 1, 16_777_216)])
def test_impossible_flow_control_values_are_typed_errors(scope: str, target: int | None, rate: int) -> None:
    with pytest.raises(H245Error):
        h245.FlowControlCommand(scope, target, rate)


@given(SCOPES, RESTRICTIONS)
def test_session_turns_flow_control_into_an_event_and_answers_nothing(scope: tuple[str, int],
                                                                     restriction: tuple[str, int]) -> None:
    s = H245Session(local_rtp=("127.0.0.1", 30000))
    s.receive_pdu(flow_control_pdu(scope, restriction), 0.0)
    assert s.pdus_to_send() == []
    ev = s.next_event()
    assert isinstance(ev, FlowControl) and ev.scope == scope[0]
    assert s.next_event() is None


@given(st.integers(1, 65535))
def test_session_turns_video_fast_update_into_keyframe_requested(channel: int) -> None:
    s = H245Session(local_rtp=("127.0.0.1", 30000))
    s.receive_pdu(pycrate_pdu("command", "miscellaneousCommand",
                              {"logicalChannelNumber": channel, "type": ("videoFastUpdatePicture", 0)}), 0.0)
    assert s.pdus_to_send() == []
    assert s.next_event() == KeyframeRequested(channel)


@given(st.binary(max_size=12))
def test_hostile_flow_control_bytes_are_a_typed_error_never_a_crash(tail: bytes) -> None:
    good = flow_control_pdu(("resourceID", 7), ("maximumBitRate", 100))
    s = H245Session(local_rtp=("127.0.0.1", 30000))
    try:
        s.receive_pdu(good[:3] + tail, 0.0)
    except H245Error:
        pass
    while (ev := s.next_event()) is not None:  # whatever did decode is a well-formed event
        assert isinstance(ev, FlowControl | KeyframeRequested) or type(ev).__name__ in {
            "DtmfReceived", "SessionEnded", "ProcedureFailed", "MediaReady"}


# -- controller -------------------------------------------------------------------------------


class FakeConn:
    def __init__(self, conn_id: int) -> None:
        self.id, self.label, self.keyframes = conn_id, f"c{conn_id}", 0

    def request_keyframe(self) -> bool:
        self.keyframes += 1
        return True


class FakeVideo:
    def __init__(self) -> None:
        self.forced = 0
        self.on_core_keyframe = self.force

    def force(self) -> None:
        self.forced += 1


class FakeSession:
    def __init__(self) -> None:
        self.video = FakeVideo()


def controller_with(conn: FakeConn) -> tuple[H323CallController, H323LegacyCall]:
    ctl = H323CallController(reactor=None, policy=None, core_url="", media_address="127.0.0.1",  # type: ignore[arg-type]
                             ports=None)  # type: ignore[arg-type]
    entry = H323LegacyCall(conn=conn, offer=None, meeting="1000", label=conn.label)  # type: ignore[arg-type]
    ctl._calls[conn.id] = entry
    return ctl, entry


def test_flow_control_moves_the_video_target_for_our_channel_or_the_whole_multiplex() -> None:
    conn: Any = FakeConn(50)
    ctl, entry = controller_with(conn)
    targets: list[int] = []
    entry.video_channel = 102
    entry.bitrate = BitrateGovernor(ssrc=1, on_change=targets.append)
    ctl.flow_control(conn, FlowControl("logicalChannelNumber", 101, 100))  # the audio channel: not video's
    assert entry.bitrate.target_bps == 2_000_000
    ctl.flow_control(conn, FlowControl("logicalChannelNumber", 102, 3840))
    assert entry.bitrate.target_bps == 384_000
    ctl.flow_control(conn, FlowControl("wholeMultiplex", None, 2560))
    ctl.flow_control(conn, FlowControl("wholeMultiplex", None, None))  # noRestriction lifts it
    assert targets == [384_000, 256_000, 2_000_000]


def test_flow_control_without_video_is_only_logged() -> None:
    conn = FakeConn(51)
    ctl, entry = controller_with(conn)
    ctl.flow_control(conn, FlowControl("wholeMultiplex", None, 640))  # type: ignore[arg-type]
    assert entry.bitrate is None and conn.keyframes == 0


def test_incoming_fast_update_forces_a_core_keyframe_coalesced() -> None:
    conn = FakeConn(52)
    ctl, entry = controller_with(conn)
    now = [10.0]
    ctl.clock = lambda: now[0]
    session = FakeSession()
    entry.session = session  # type: ignore[assignment]
    ctl.keyframe_requested(conn, KeyframeRequested(2))  # type: ignore[arg-type]
    ctl.keyframe_requested(conn, KeyframeRequested(2))  # type: ignore[arg-type]
    now[0] += 0.3
    ctl.keyframe_requested(conn, KeyframeRequested(2))  # type: ignore[arg-type]
    assert session.video.forced == 2
    assert entry.keyframes is not None and entry.keyframes.sent == {"core/force_keyframe": 2}
    assert conn.keyframes == 0  # nothing goes back to the caller


def test_incoming_fast_update_without_video_is_harmless() -> None:
    conn = FakeConn(53)
    ctl, entry = controller_with(conn)
    ctl.keyframe_requested(conn, KeyframeRequested(1))  # type: ignore[arg-type]
    assert entry.keyframes is not None and entry.keyframes.sent == {"core/force_keyframe": 1}


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_tshark_decodes_our_flow_control_command(tmp_path: Path) -> None:
    """We never send one, but the encoder exists: tshark must read it as flowControlCommand."""
    gw, caller = ("192.0.2.10", 40100), ("192.0.2.20", 40010)
    pdus = [h245.FlowControlCommand("logicalChannelNumber", 2, 3840), h245.FlowControlCommand("wholeMultiplex"),
            h245.FlowControlCommand("resourceID", 9, 0)]
    path = tmp_path / "fc.pcap"
    write_pcap(path, [Flow(tpkt.encode(h245.encode(p)), gw, caller) for p in pdus])
    assert TSHARK is not None
    out = subprocess.run([TSHARK, "-n", "-r", str(path), "-d", f"tcp.port=={gw[1]},h245", "-V"],
                         capture_output=True, text=True, check=True).stdout
    assert out.count("flowControlCommand") >= 3
    assert "maximumBitRate: 3840" in out and "wholeMultiplex" in out and "noRestriction" in out
    assert "Malformed" not in out
