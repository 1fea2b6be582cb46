"""The gateway replays the callee side of a real H.323 call (issue 5, "done when" 3).

The CALLER side of ``h323plus-callgen323-slowstart-tun_on.pcapng`` (H323Plus ``callgen323``:
slow start, tunnelled H.245) is extracted with tests/support/pcap.py and fed to the real gateway
over TCP, message by message, in the captured order.  Only what must change is rewritten: a
Called party number (the captured Setup dialled an IP address only) and the caller's RTP/RTCP
addresses (to sockets of this test).  The gateway's answers must follow the captured callee's
sequence: the Q.931/H.225.0 message types, and the tunnelled H.245 procedures in order
(TCS and MSD in Connect, then TCSAck, MSDAck, then the OLC/OLCAck pair).  Values are compared,
never bytes.  The one difference, commented below, is at the release.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from h323 import h225, h245, q931, tpkt
from h323.q931 import CalledPartyNumber, MessageType, UserUser
from tests.peers.h323_caller import _bind_rtp_pair
from tests.support.gateway_process import free_tcp_port, start_gateway
from tests.support.pcap import read_capture

pytestmark = pytest.mark.interop

CAPTURE = (Path(__file__).resolve().parents[3] / "shared" / "corpus" / "h323" / "h323plus"
           / "h323plus-callgen323-slowstart-tun_on.pcapng")
CAPTURED_RTP, CAPTURED_RTCP = 5000, 5001


def summarize(payload: bytes) -> tuple[str, list[str]]:
    """(Q.931 message type, names of the tunnelled H.245 PDUs) of one TPKT payload."""
    msg = q931.parse(payload)
    info = h225.decode(msg.user_user) if msg.user_user is not None else None
    names = [m.name for el in (info.h245_control if info else ()) for m in h245.decode_all(el)]
    return f"{msg.message_type.name}:{info.message if info else '-'}", names


def sides() -> tuple[list[bytes], list[bytes]]:
    cap = read_capture(CAPTURE)
    caller = next(s for s in cap.tcp if s.dst[1] == 1720)
    callee = next(s for s in cap.tcp if s.src[1] == 1720)
    return tpkt.TpktFramer().feed(caller.data), tpkt.TpktFramer().feed(callee.data)


def rewrite(payload: bytes, meeting: str, rtp: int) -> bytes:
    """The caller's message with a Called party number (Setup) and our RTP/RTCP ports."""
    msg = q931.parse(payload)
    if msg.message_type == MessageType.SETUP and msg.called_party_number is None:
        elems = [ie for ie in msg.elements if not isinstance(ie, UserUser)]
        uu = [ie for ie in msg.elements if isinstance(ie, UserUser)]
        msg = q931.Q931Message(msg.message_type, msg.call_reference, msg.flag,
                               (*elems, CalledPartyNumber(meeting), *uu), msg.call_reference_length)
    data = msg.encode()
    for old, new in ((CAPTURED_RTP, rtp), (CAPTURED_RTCP, rtp + 1)):  # same length: PER unchanged
        data = data.replace(b"\x7f\x00\x00\x01" + old.to_bytes(2, "big"),
                            b"\x7f\x00\x00\x01" + new.to_bytes(2, "big"))
    return data


def read_for(sock: socket.socket, framer: tpkt.TpktFramer, seconds: float) -> tuple[list[bytes], bool]:
    out: list[bytes] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        if not data:
            return out, True
        out += framer.feed(data)
    return out, False


def test_gateway_replays_the_callee_side_of_the_slow_start_capture(tmp_path: Path) -> None:
    caller_msgs, callee_msgs = sides()
    expected = [summarize(p) for p in callee_msgs]
    port = free_tcp_port()
    rtp, rtcp = _bind_rtp_pair()
    gw = start_gateway(tmp_path / "gw", config={"h323": {"listen": f"127.0.0.1:{port}"}})
    got: list[bytes] = []
    closed = False
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            framer = tpkt.TpktFramer()
            for i, payload in enumerate(caller_msgs):
                is_release = q931.parse(payload).message_type == MessageType.RELEASE_COMPLETE
                if is_release:  # the captured call lasted a while: let media flow first
                    more, closed = read_for(sock, framer, 1.5)
                    got += more
                sock.sendall(tpkt.encode(rewrite(payload, "3500", rtp.getsockname()[1])))
                if i == 0:  # Setup: the Connect comes once the meeting is joined
                    deadline = time.monotonic() + 30
                    while not any(summarize(p)[0].startswith("CONNECT") for p in got):
                        assert time.monotonic() < deadline, [summarize(p) for p in got]
                        more, closed = read_for(sock, framer, 0.5)
                        got += more
                        assert not closed
                else:
                    more, closed = read_for(sock, framer, 3.0 if is_release else 0.4)
                    got += more
            if not closed:
                more, closed = read_for(sock, framer, 3.0)
                got += more
        rtp_seen = 0
        rtp.settimeout(0.2)
        try:
            while rtp.recv(2048):
                rtp_seen += 1
        except TimeoutError:
            pass
    finally:
        rtp.close()
        rtcp.close()
        gw.stop()
    answers = [summarize(p) for p in got]
    # The captured callee answered the caller's ReleaseComplete with one of its own (both carry
    # endSessionCommand); Q.931 section 5.3 says a RELEASE COMPLETE is not answered, so the
    # gateway closes instead.  Everything before the release must follow the callee.
    assert expected[-1] == ("RELEASE_COMPLETE:releaseComplete", ["endSessionCommand"])
    callee = expected[:-1]
    # message types in the callee's order (how many Facility messages carry the PDUs may differ)
    assert collapse([t for t, _ in answers]) == collapse([t for t, _ in callee]), (answers, callee)
    assert answers[1] == ("CONNECT:connect", ["terminalCapabilitySet", "masterSlaveDetermination"])
    # the tunnelled H.245 procedures in the callee's order: capability exchange and master/slave
    # determination first, then the two independent logical-channel procedures (H.245 8.4)
    ours = [n for _, ns in answers for n in ns]
    theirs = [n for _, ns in callee for n in ns]
    assert ours[:4] == theirs[:4] == ["terminalCapabilitySet", "masterSlaveDetermination",
                                      "terminalCapabilitySetAck", "masterSlaveDeterminationAck"], (ours, theirs)
    assert sorted(ours[4:]) == sorted(theirs[4:]) == ["openLogicalChannel", "openLogicalChannelAck"], (ours, theirs)
    assert closed, "the gateway closes the connection after the caller's ReleaseComplete"
    assert rtp_seen > 0, "the gateway sent RTP to the rewritten address"
    assert gw.events("call.answered", meeting="3500")
    ended = gw.wait_for_event("call.ended", meeting="3500")
    assert ended["by"] == "remote"


def collapse(items: list[str]) -> list[str]:
    """Consecutive repeats folded into one."""
    return [x for i, x in enumerate(items) if i == 0 or items[i - 1] != x]
