"""tshark as the independent judge of what OUR encoders build.

The PDUs are written into a pcap with Ethernet/IPv4/TCP/UDP headers (tests/support/pcap.py):
call signalling to TCP 1720 in TPKT, H.245 on a separate TCP port (decoded as H.245 with
``-d tcp.port==N,h245``), RAS to UDP 1719.  tshark must show the expected message names and no
malformed frame.  Skipped only when tshark is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from h323 import h225, h245, ras, tpkt
from h323.h225 import Alias, TransportAddress
from h323.q931 import (
    BearerCapability,
    CalledPartyNumber,
    Cause,
    Display,
    MessageType,
    Q931Message,
)
from tests.support.pcap import Flow, read_capture, write_pcap

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

CALLER = ("192.0.2.20", 40000)
GATEWAY = ("192.0.2.10", 1720)
H245_CALLER = ("192.0.2.20", 40010)
H245_GW = ("192.0.2.10", 40100)
RAS_GW = ("192.0.2.10", 1719)
RAS_GK = ("192.0.2.1", 1719)
GUID = bytes(range(16))
CID = bytes(range(16, 32))


def _olcs() -> tuple[bytes, ...]:
    rtp = h245.UnicastAddress("192.0.2.20", 50000)
    rtcp = h245.UnicastAddress("192.0.2.20", 50001)
    out = []
    for n, codec in ((1, "g711Ulaw64k"), (3, "g711Alaw64k")):
        out.append(h245.encode_olc(h245.OpenLogicalChannel(
            n, h245.LogicalChannelParameters(h245.MediaType("nullData"), 0),
            h245.LogicalChannelParameters(h245.MediaType("audioData", codec, 20), 1, rtp, rtcp))))
        out.append(h245.encode_olc(h245.OpenLogicalChannel(
            n + 1, h245.LogicalChannelParameters(h245.MediaType("audioData", codec, 20), 1, None, rtcp))))
    return tuple(out)


def _signalling(msg: Q931Message, body: h225.Body, **kw: object) -> bytes:
    info = h225.UserInformation(body, **kw)  # type: ignore[arg-type]
    return tpkt.encode(msg.with_user_user(info.encode(role="gateway")).encode())


def _flows() -> list[Flow]:
    setup = Q931Message(MessageType.SETUP, 0x1234, False, (
        BearerCapability(), Display("caller"), CalledPartyNumber("4711", 0, 1)))
    tcs = h245.encode(h245.TerminalCapabilitySet(1, h245.audio_capabilities()))
    msd = h245.encode(h245.MasterSlaveDetermination(60, 0x123456))
    flows = [
        Flow(_signalling(setup, h225.Setup(
            CID, GUID, destination_address=(Alias("dialledDigits", "4711"),),
            source_address=(Alias("h323-ID", "caller"),), dest_call_signal_address=TransportAddress(*GATEWAY),
            source_call_signal_address=TransportAddress(*CALLER), fast_start=_olcs(),
            vendor=h225.VendorInfo(b"roomgate-test", b"0.1")), h245_tunnelling=True), CALLER, GATEWAY),
        Flow(_signalling(setup.reply(MessageType.CALL_PROCEEDING), h225.CallProceeding(GUID),
                         h245_tunnelling=True), GATEWAY, CALLER),
        Flow(_signalling(setup.reply(MessageType.ALERTING), h225.Alerting(GUID), h245_tunnelling=True),
             GATEWAY, CALLER),
        Flow(_signalling(setup.reply(MessageType.CONNECT, Display("meeting")),
                         h225.Connect(GUID, fast_start=_olcs()[:2], conference_id=CID),
                         h245_tunnelling=True, h245_control=(tcs, msd)), GATEWAY, CALLER),
        Flow(_signalling(setup.reply(MessageType.FACILITY),
                         h225.Facility("startH245", GUID, TransportAddress(*H245_GW))), GATEWAY, CALLER),
        Flow(_signalling(setup.reply(MessageType.FACILITY), h225.Empty(), h245_tunnelling=True,
                         h245_control=(h245.encode(h245.UserInputIndication(signal="5", duration=100)),)),
             GATEWAY, CALLER),
        Flow(_signalling(setup.reply(MessageType.RELEASE_COMPLETE, Cause(16)),
                         h225.ReleaseComplete("undefinedReason", GUID)), GATEWAY, CALLER),
    ]
    h245_pdus = [
        h245.TerminalCapabilitySet(1, h245.audio_capabilities()), h245.MasterSlaveDetermination(60, 7),
        h245.TerminalCapabilitySetAck(1), h245.MasterSlaveDeterminationAck("slave"),
        h245.OpenLogicalChannel(1, h245.LogicalChannelParameters(
            h245.MediaType("audioData", "g711Ulaw64k", 20), 1, None, h245.UnicastAddress("192.0.2.10", 40001))),
        h245.OpenLogicalChannelAck(1, 1, h245.UnicastAddress("192.0.2.10", 40000),
                                   h245.UnicastAddress("192.0.2.10", 40001)),
        h245.UserInputIndication(alphanumeric="#"), h245.VideoFastUpdatePicture(2), h245.EndSessionCommand(),
    ]
    flows += [Flow(tpkt.encode(h245.encode(p)), H245_GW, H245_CALLER) for p in h245_pdus]
    gw_ras, gk_ras = TransportAddress(*RAS_GW), TransportAddress(*RAS_GK)
    ras_msgs = [
        (ras.gatekeeper_request(1, gw_ras, aliases=(Alias("h323-ID", "roomgate"),)), RAS_GW, RAS_GK),
        (ras.gatekeeper_confirm(1, gk_ras, "gk"), RAS_GK, RAS_GW),
        (ras.registration_request(2, TransportAddress(*GATEWAY), gw_ras, aliases=(Alias("dialledDigits", "4711"),),
                                  gatekeeper_identifier="gk", time_to_live=300), RAS_GW, RAS_GK),
        (ras.registration_confirm(2, TransportAddress(*GATEWAY), "ep-1", gatekeeper_identifier="gk"), RAS_GK, RAS_GW),
        (ras.registration_request(3, TransportAddress(*GATEWAY), gw_ras, keep_alive=True,
                                  endpoint_identifier="ep-1", gatekeeper_identifier="gk"), RAS_GW, RAS_GK),
        (ras.admission_request(4, "ep-1", CID, GUID, 0x1234, answer_call=True,
                               destination=(Alias("dialledDigits", "4711"),)), RAS_GW, RAS_GK),
        (ras.admission_confirm(4, TransportAddress(*GATEWAY)), RAS_GK, RAS_GW),
        (ras.disengage_request(5, "ep-1", CID, GUID, 0x1234), RAS_GW, RAS_GK),
        (ras.disengage_confirm(5), RAS_GK, RAS_GW),
        (ras.location_request(6, (Alias("h323-ID", "room"),), gk_ras), RAS_GK, RAS_GW),
        (ras.info_request(7, 0), RAS_GK, RAS_GW),
        (ras.unregistration_request(8, TransportAddress(*GATEWAY), endpoint_identifier="ep-1"), RAS_GW, RAS_GK),
        (ras.unregistration_confirm(8), RAS_GK, RAS_GW),
    ]
    flows += [Flow(m.encode(), src, dst, "udp") for m, src, dst in ras_msgs]
    return flows


def _tshark(path: Path, *args: str) -> str:
    res = subprocess.run([TSHARK, "-n", "-r", str(path), "-d", f"tcp.port=={H245_GW[1]},h245", *args],
                         capture_output=True, text=True, timeout=60, check=True)
    return res.stdout


def test_tshark_decodes_everything_we_build(tmp_path: Path) -> None:
    path = tmp_path / "ours.pcap"
    flows = _flows()
    write_pcap(path, flows)
    # our own reader sees the same payloads (the writer and reader agree)
    cap = read_capture(path)
    assert len(cap.udp) == 13 and sum(len(s.data) for s in cap.tcp) == sum(
        len(f.payload) for f in flows if f.proto == "tcp")
    verbose = _tshark(path, "-V")
    assert "Malformed" not in verbose and "Expert Info (Error" not in verbose
    summary = _tshark(path).splitlines()
    assert len(summary) == len(flows)
    expected = [
        "CS: setup OpenLogicalChannel", "CS: callProceeding", "CS: alerting",
        "CS: connect OpenLogicalChannel terminalCapabilitySet masterSlaveDetermination",
        "CS: facility", "CS: empty userInput", "CS: releaseComplete",
        "terminalCapabilitySet", "masterSlaveDetermination", "terminalCapabilitySetAck",
        "masterSlaveDeterminationAck", "openLogicalChannel", "openLogicalChannelAck", "userInput",
        "miscellaneousCommand", "endSessionCommand",
        "RAS: gatekeeperRequest", "RAS: gatekeeperConfirm", "RAS: registrationRequest",
        "RAS: registrationConfirm", "RAS: registrationRequest", "RAS: admissionRequest",
        "RAS: admissionConfirm", "RAS: disengageRequest", "RAS: disengageConfirm",
        "RAS: locationRequest", "RAS: infoRequest", "RAS: unregistrationRequest",
        "RAS: unregistrationConfirm",
    ]
    for line, want in zip(summary, expected):
        assert want in line, (want, line)
    # values as Wireshark reads them
    assert "Called Party Number: '4711'" in verbose or "Called party number digits: 4711" in verbose
    assert "g711Ulaw64k" in verbose and "g711Alaw64k" in verbose
    assert "h245Tunnelling: True" in verbose
    assert "startH245" in verbose and "keepAlive: True" in verbose
    assert "videoFastUpdatePicture" in verbose
    assert "Normal call clearing" in verbose
