"""The public captures of real H.323 endpoints (../shared/corpus/h323) decode with our codecs.

Every TPKT on the call-signalling connections (TCP 1720, and the signalling ports RAS
announces, e.g. GNU Gatekeeper's 1730), every PDU on the H.245 connections (found from the
``h245Address`` values we decode), every tunnelled ``h245Control`` element, every Fast Start
proposal and every RAS datagram on UDP 1719 is decoded; decoded VALUES are compared with what
Wireshark shows for these files, and each value is re-encoded and decoded again to the same
value (not the same bytes: PER extension bitmaps may legally differ).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from h323 import h225, h245, q931, ras, tpkt
from h323.errors import H225Error, RasError, TpktError
from tests.support.pcap import Capture, TcpStream, read_capture

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "h323"

if not CORPUS.is_dir():
    pytest.skip(f"H.323 corpus not found at {CORPUS}", allow_module_level=True)


@dataclass
class Signalling:
    """One decoded call-signalling TPKT."""

    stream: TcpStream
    message: q931.Q931Message
    info: h225.UserInformation | None
    error: H225Error | None = None


@dataclass
class Decoded:
    ras: list[tuple[int, ras.RasMessage]] = field(default_factory=list)
    signalling: list[Signalling] = field(default_factory=list)
    h245: list[tuple[TcpStream, h245.H245Message]] = field(default_factory=list)
    tunnelled: list[tuple[str, h245.H245Message]] = field(default_factory=list)
    fast_start: list[tuple[str, h245.OpenLogicalChannel]] = field(default_factory=list)
    unclassified: list[TcpStream] = field(default_factory=list)


def _ports(stream: TcpStream) -> set[int]:
    return {stream.src[1], stream.dst[1]}


def decode_capture(cap: Capture) -> Decoded:
    out = Decoded()
    signal_ports = {1720}
    for d in cap.udp:
        if 1719 in (d.src[1], d.dst[1]):
            msg = ras.decode(d.payload)
            out.ras.append((d.index, msg))
            for key in ("callSignalAddress", "destCallSignalAddress"):
                signal_ports |= {a.port for a in msg.addresses(key)}
    h245_ports: set[int] = set()
    for s in sorted(cap.tcp, key=lambda s: s.first_index):
        if not _ports(s) & signal_ports:
            continue
        for payload in tpkt.TpktFramer().feed(s.data):
            m = q931.parse(payload)
            try:
                info = h225.decode(m.user_user or b"")
            except H225Error as exc:
                out.signalling.append(Signalling(s, m, None, exc))
                continue
            out.signalling.append(Signalling(s, m, info))
            body = info.body
            addr = getattr(body, "h245_address", None)
            if addr is not None:
                h245_ports.add(addr.port)
            for element in info.h245_control:
                out.tunnelled += [(info.message, x) for x in h245.decode_all(element)]
            for element in getattr(body, "fast_start", None) or ():
                out.fast_start.append((info.message, h245.decode_olc(element)))
    for s in sorted(cap.tcp, key=lambda s: s.first_index):
        if _ports(s) & signal_ports:
            continue
        if _ports(s) & h245_ports:
            for payload in tpkt.TpktFramer().feed(s.data):
                out.h245 += [(s, x) for x in h245.decode_all(payload)]
        elif s.data:
            out.unclassified.append(s)
    return out


_CACHE: dict[str, Decoded] = {}


def corpus(name: str) -> Decoded:
    if name not in _CACHE:
        _CACHE[name] = decode_capture(read_capture(CORPUS / name))
    return _CACHE[name]


def names(items: Iterator[object] | list) -> list[str]:
    return [getattr(x, "name", x) for x in items]


def sig_types(d: Decoded, **where: int) -> list[str]:
    """``Q931type/uuie`` of the signalling messages, optionally of one direction."""
    out = []
    for s in d.signalling:
        if "dst_port" in where and s.stream.dst[1] != where["dst_port"]:
            continue
        if "src_port" in where and s.stream.src[1] != where["src_port"]:
            continue
        out.append(f"{s.message.message_type.name}/{s.info.message if s.info else 'ERROR'}")
    return out


H323PLUS = "h323plus/h323plus-simph323-"

# ------------------------------------------------------------------ OpenH323 call (two copies)


@pytest.mark.parametrize("name", ["wireshark-rtp_example.raw.gz", "ndpi-h323_tcp.pcap"])
def test_openh323_call_signalling(name: str) -> None:
    d = corpus(name)
    assert sig_types(d, dst_port=1720) == ["SETUP/setup"]
    assert sig_types(d, src_port=1720) == ["CALL_PROCEEDING/callProceeding", "ALERTING/alerting",
                                          "CONNECT/connect"]
    setup = d.signalling[[s.message.message_type for s in d.signalling].index(q931.MessageType.SETUP)]
    assert not setup.message.flag
    assert setup.message.display == q931.Display("m.jemec\x00")
    assert setup.message.bearer_capability.layer1_protocol == 5
    body = setup.info.body
    assert isinstance(body, h225.Setup)
    assert body.source_address == (h225.Alias("h323-ID", "m.jemec"),)
    assert body.dest_call_signal_address == h225.TransportAddress("10.1.6.18", 1720)
    assert body.protocol_identifier == (0, 0, 8, 2250, 0, 4)
    assert body.fast_start is None and not setup.info.h245_tunnelling
    replies = [s for s in d.signalling if s.stream.src[1] == 1720]
    assert all(s.message.flag and s.message.call_reference == setup.message.call_reference
               for s in replies)
    connect = replies[-1].info.body
    assert isinstance(connect, h225.Connect)
    assert connect.h245_address == h225.TransportAddress("10.1.6.18", 1232)
    assert connect.call_identifier == body.call_identifier
    assert connect.conference_id == body.conference_id
    assert d.unclassified == [] if name.startswith("wireshark") else True


def test_openh323_separate_h245() -> None:
    d = corpus("wireshark-rtp_example.raw.gz")
    assert d.unclassified == []
    from_callee = [m.name for s, m in d.h245 if s.src[1] == 1232]
    from_caller = [m.name for s, m in d.h245 if s.dst[1] == 1232]
    assert from_callee == ["terminalCapabilitySet", "masterSlaveDetermination",
                           "terminalCapabilitySetAck", "masterSlaveDeterminationAck",
                           "openLogicalChannel", "openLogicalChannelAck"]
    assert from_caller == ["terminalCapabilitySet", "masterSlaveDetermination",
                           "terminalCapabilitySetAck", "masterSlaveDeterminationAck",
                           "openLogicalChannel", "openLogicalChannelAck"]
    typed = [m.typed() for _, m in d.h245]
    tcs = [t for t in typed if isinstance(t, h245.TerminalCapabilitySet)]
    assert {t.audio for t in tcs} == {("g711Alaw64k",)}
    olcs = [t for t in typed if isinstance(t, h245.OpenLogicalChannel)]
    assert [o.forward.data_type for o in olcs] == [h245.MediaType("audioData", "g711Alaw64k", 30)] * 2
    assert {o.forward_logical_channel_number for o in olcs} == {61, 101}
    acks = [t for t in typed if isinstance(t, h245.OpenLogicalChannelAck)]
    assert h245.UnicastAddress("10.1.6.18", 2006) in {a.media_channel for a in acks}
    decisions = sorted(t.decision for t in typed if isinstance(t, h245.MasterSlaveDeterminationAck))
    assert decisions == ["master", "slave"]


# ------------------------------------------------------------------ nDPI mixed capture


def test_ndpi_mixed_capture() -> None:
    d = corpus("ndpi-h323.pcap")
    assert [m.abbreviation for _, m in d.ras] == [
        "GRQ", "GCF", "RRQ", "RCF", "ARQ", "ACF", "IRQ", "IRQ", "DRQ", "DRQ",
        "RRQ", "RCF", "RRQ", "RCF", "RRQ"]
    # the Abilis answer: its 4-byte TPKT header came in a TCP segment of its own
    abilis = [s for s in d.signalling if s.stream.dst == ("192.168.0.208", 56837)]
    assert [s.message.message_type for s in abilis] == [q931.MessageType.ALERTING]
    assert any(len(seg) == 4 for _, seg in abilis[0].stream.segments)
    assert abilis[0].info.body.protocol_identifier == (0, 0, 8, 2250, 0, 2)
    setups = [s for s in d.signalling if s.message.message_type == q931.MessageType.SETUP]
    assert [s.info.body.source_address[0].value if s.info else None for s in setups] == [
        "m.jemec", "ABILIS CPX 2000", None]
    # Wireshark also calls this Setup's UUIE malformed; its Q.931 part is fine
    broken = setups[2]
    assert isinstance(broken.error, H225Error)
    assert broken.message.called_party_number == q931.CalledPartyNumber("9246526", 4, 1)
    assert [s for s in d.signalling if s.error] == [broken]
    rc = [s for s in d.signalling if s.message.message_type == q931.MessageType.RELEASE_COMPLETE]
    assert [s.info.body.reason for s in rc] == ["undefinedReason"]
    # Tandberg lightweight keep-alive RRQs with featureSet and genericData
    tandberg = [m for _, m in d.ras if m.abbreviation == "RRQ" and "genericData" in m.value]
    assert len(tandberg) == 3 and all(m.keep_alive for m in tandberg)
    assert b"Tandberg" in tandberg[0].value["endpointVendor"]["productId"]
    rrq = next(m for _, m in d.ras if m.abbreviation == "RRQ")
    assert rrq.addresses("callSignalAddress")


# ------------------------------------------------------------------ H323Plus


def test_h323plus_fast_start_tunnelling() -> None:
    d = corpus(H323PLUS + "fs_on_tun_on.pcapng")
    assert d.unclassified == [] and d.h245 == [] and d.tunnelled == []
    assert sig_types(d, dst_port=1720) == ["SETUP/setup", "RELEASE_COMPLETE/releaseComplete"]
    assert sig_types(d, src_port=1720) == ["CALL_PROCEEDING/callProceeding", "CONNECT/connect",
                                          "RELEASE_COMPLETE/releaseComplete"]
    setup = d.signalling[0].info
    assert setup.h245_tunnelling
    assert setup.body.vendor.product_id == b"H323Plus simple\x00\x00"
    assert [m for m, _ in d.fast_start] == ["setup"] * 4 + ["connect"] * 2
    proposals = [o for m, o in d.fast_start if m == "setup"]
    assert [o.forward_logical_channel_number for o in proposals] == [1, 101, 1, 102]
    kinds = [(o.forward.data_type.codec or "null", o.reverse.data_type.codec if o.reverse else None)
             for o in proposals]
    assert kinds == [("null", "g711Alaw64k"), ("g711Alaw64k", None),
                     ("null", "g711Ulaw64k"), ("g711Ulaw64k", None)]
    # the callee accepted the A-law pair (as Wireshark shows), both numbered 101
    answers = [o for m, o in d.fast_start if m == "connect"]
    assert [o.forward_logical_channel_number for o in answers] == [101, 101]
    assert {o.forward.data_type.codec or o.reverse.data_type.codec for o in answers} == {"g711Alaw64k"}
    rc = [s for s in d.signalling if s.message.message_type == q931.MessageType.RELEASE_COMPLETE]
    assert {s.message.cause.value for s in rc} == {16}  # normal call clearing


def test_h323plus_fast_start_separate_h245() -> None:
    d = corpus(H323PLUS + "fs_on_tun_off.pcapng")
    assert sig_types(d, dst_port=1720) == ["SETUP/setup", "FACILITY/facility",
                                          "RELEASE_COMPLETE/releaseComplete"]
    fac = d.signalling[1].info.body
    assert isinstance(fac, h225.Facility) and fac.reason == "startH245"
    assert fac.h245_address == h225.TransportAddress("127.0.0.1", 38509)
    assert d.unclassified == []  # the H.245 connection opened but carried nothing


@pytest.mark.parametrize("name", [H323PLUS + "fs_off_tun_on.pcapng",
                                  "h323plus/h323plus-callgen323-slowstart-tun_on.pcapng"])
def test_h323plus_tunnelled_h245(name: str) -> None:
    d = corpus(name)
    assert d.fast_start == [] and d.unclassified == []
    where = sorted({m for m, _ in d.tunnelled})
    assert where == ["connect", "empty", "releaseComplete"]
    got = [x.name for _, x in d.tunnelled]
    for expected in ("terminalCapabilitySet", "masterSlaveDetermination",
                     "terminalCapabilitySetAck", "masterSlaveDeterminationAck",
                     "openLogicalChannel", "openLogicalChannelAck", "endSessionCommand"):
        assert got.count(expected) == 2, expected
    assert [x.name for m, x in d.tunnelled if m == "connect"] == ["terminalCapabilitySet",
                                                                 "masterSlaveDetermination"]
    assert [x.typed() for m, x in d.tunnelled if m == "releaseComplete"] == [
        h245.EndSessionCommand("disconnect")] * 2
    olcs = [x.typed() for _, x in d.tunnelled if x.name == "openLogicalChannel"]
    assert {o.forward.data_type.codec for o in olcs} == {"g711Alaw64k"}
    facilities = [s for s in d.signalling if s.message.message_type == q931.MessageType.FACILITY]
    assert facilities and all(isinstance(s.info.body, h225.Empty) for s in facilities)


def test_h323plus_separate_h245_from_connect() -> None:
    d = corpus(H323PLUS + "fs_off_tun_off.pcapng")
    connect = next(s.info.body for s in d.signalling if s.info.message == "connect")
    assert connect.h245_address == h225.TransportAddress("127.0.0.1", 36097)
    got = [m.name for _, m in d.h245]
    assert got.count("terminalCapabilitySet") == 2 and got.count("endSessionCommand") == 2
    assert got.count("openLogicalChannelAck") == 2 and d.unclassified == []
    tcs = next(m.typed() for _, m in d.h245 if m.name == "terminalCapabilitySet")
    assert "g711Alaw64k" in tcs.audio and tcs.user_input


def test_h323plus_via_gatekeeper() -> None:
    d = corpus(H323PLUS + "via-gnugk-fs_on_tun_on.pcapng")
    assert [m.abbreviation for _, m in d.ras] == [
        "GRQ", "GCF", "RRQ", "RCF", "GRQ", "GCF", "RRQ", "RCF", "ARQ", "ACF", "ARQ", "ACF",
        "DRQ", "DCF", "DRQ", "DCF", "URQ", "UCF", "URQ"]
    # the callee's signalling port 1730 was learnt from RAS, not assumed
    assert sig_types(d, dst_port=1730) == ["SETUP/setup", "RELEASE_COMPLETE/releaseComplete"]
    setup = next(s.info.body for s in d.signalling if s.stream.dst[1] == 1730)
    assert setup.destination_address == (h225.Alias("h323-ID", "callee"),)
    assert setup.endpoint_identifier
    arq = next(m for _, m in d.ras if m.abbreviation == "ARQ")
    assert arq.aliases("destinationInfo") == (h225.Alias("h323-ID", "callee"),)
    acf = next(m for _, m in d.ras if m.abbreviation == "ACF")
    assert acf.value["callModel"][0] == "gatekeeperRouted"
    assert d.unclassified == []


# ------------------------------------------------------------------ negative files


def test_false_positive_udp_is_refused() -> None:
    cap = read_capture(CORPUS / "ndpi-h323_false_positive.pcap")
    datagrams = [d for d in cap.udp if 1719 in (d.src[1], d.dst[1])]
    assert len(datagrams) == 4
    for d in datagrams:
        with pytest.raises(RasError):
            ras.decode(d.payload)


def test_overflow_packet_is_refused() -> None:
    cap = read_capture(CORPUS / "ndpi-h323-overflow.pcap")
    (stream,) = [s for s in cap.tcp if s.data]
    with pytest.raises(TpktError):
        tpkt.TpktFramer().feed(stream.data)


# ------------------------------------------------------------------ re-encoding


ALL = ["wireshark-rtp_example.raw.gz", "ndpi-h323.pcap", "ndpi-h323_tcp.pcap",
       *(f"h323plus/{p.name}" for p in sorted((CORPUS / "h323plus").glob("*.pcapng")))]


UNENCODABLE_RAS = {("ndpi-h323.pcap", 59)}


@pytest.mark.parametrize("name", ALL)
def test_reencode_gives_same_values(name: str) -> None:
    d = corpus(name)
    count = 0
    for s in d.signalling:
        assert q931.parse(s.message.encode()) == s.message
        if s.info is None:
            continue
        again = h225.decode(s.info.encode())
        assert again == s.info
        # the full pycrate value survives too (everything, not only the typed fields)
        assert h225.decode(h225.asn1.encode("UserInformation", s.info.raw)).raw == s.info.raw
        count += 1
    for index, m in d.ras:
        if (name, index) in UNENCODABLE_RAS:
            # Wireshark calls this GRQ malformed ("unexpected length" in its integrity
            # OID); pycrate decodes it leniently, but the value cannot be encoded again
            with pytest.raises(RasError):
                m.encode()
            continue
        assert ras.decode(m.encode()) == m
        count += 1
    for _, m in [*d.h245, *d.tunnelled]:
        assert h245.decode(m.encode()) == m
        typed = m.typed()
        if not isinstance(typed, h245.H245Message):
            assert h245.decode(h245.encode(typed)).typed() == typed
        count += 1
    for _, olc in d.fast_start:
        assert h245.decode_olc(h245.encode_olc(olc)) == olc
    assert count > 0
