"""Walking skeleton, acceptance: what one SIP call puts on the wire (tshark on loopback).

A real pjsua calls the gateway (PCMU, 1 kHz) while tshark captures all UDP on ``lo`` and the
gateway's HTTP port over TCP. The gateway's WebRTC leg joins the embedded core over WHIP/WHEP on
that HTTP port, so the capture holds the SDP offers and answers and, in them, the ICE candidates
of both ends of every WebRTC connection: that is how the WebRTC flows are found (their ports are
ephemeral). Other programs on this machine use loopback too: only flows touching one of the
ports of this call (pjsua's, the gateway's SIP port and media range, the candidates' ports) are
judged.

The judge is ``check_call_capture``; the test also feeds it the same capture with forged packets
added (plain RTP before the DTLS handshake, PCMU in the clear on a WebRTC flow, RTP to a stranger,
SIP on another flow, ...) and checks that it flags each one, so none of its checks is vacuous.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import re
import shutil
import socket
import struct
import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.audio import tone, write_wav
from tests.support.gateway_process import free_sip_port
from tests.support.pjsua import free_rtp_port, run_pjsua_call
from tests.support.tshark import TSHARK, capture, decode

pytestmark = pytest.mark.interop

MEETING = "5151"
CALL_SECONDS = 5.0
LEGACY_PT = 0  # PCMU
MIN_RTP_EACH_WAY = 100
MERGECAP = shutil.which("mergecap") or "/usr/bin/mergecap"

PACKET_FIELDS = ["frame.number", "frame.time_epoch", "ip.src", "ip.dst", "udp.srcport", "udp.dstport",
                 "frame.protocols", "udp.payload", "rtp.p_type", "dtls.record.content_type",
                 "dtls.handshake.type", "dtls.use_srtp.protection_profile", "sip.Method",
                 "sip.Status-Code"]


# -- reading the capture -------------------------------------------------------------------------

@dataclass
class Packet:
    number: int
    time: float
    src: tuple[str, int]
    dst: tuple[str, int]
    layers: list[str]
    payload: bytes
    rtp_pt: str
    dtls_content_types: list[int]
    dtls_handshake_types: list[int]
    srtp_profiles: list[str]
    is_sip: bool

    @property
    def first_byte(self) -> int | None:
        return self.payload[0] if self.payload else None

    @property
    def rfc7983_kind(self) -> str:
        """What the first byte says the packet is (RFC 7983 demultiplexing)."""
        b = self.first_byte
        if b is None:
            return "empty"
        if b <= 3:
            return "stun"
        if 20 <= b <= 63:
            return "dtls"
        if 128 <= b <= 191:
            # RTCP packet types 192-223 (with the marker bit: 64-95 in the low 7 bits).
            second = self.payload[1] if len(self.payload) > 1 else 0
            return "rtcp" if 192 <= second <= 223 else "rtp"
        return "other"


SIP_START = re.compile(rb"(?:[A-Z]+ sips?:\S+ SIP/2\.0\r\n|SIP/2\.0 \d{3} )")


def _ints(text: str) -> list[int]:
    return [int(v, 0) for v in text.split(",") if v]


def read_udp_packets(pcap: Path) -> list[Packet]:
    rows = decode(pcap, "udp and not icmp", PACKET_FIELDS, rtp_heuristic=True)
    packets = []
    for r in rows:
        packets.append(Packet(
            number=int(r["frame.number"]), time=float(r["frame.time_epoch"]),
            src=(r["ip.src"], int(r["udp.srcport"])), dst=(r["ip.dst"], int(r["udp.dstport"])),
            layers=r["frame.protocols"].split(":"),
            payload=bytes.fromhex(r["udp.payload"].replace(":", "")),
            rtp_pt=r["rtp.p_type"],
            dtls_content_types=_ints(r["dtls.record.content_type"]),
            dtls_handshake_types=_ints(r["dtls.handshake.type"]),
            srtp_profiles=[v for v in r["dtls.use_srtp.protection_profile"].split(",") if v],
            # tshark finds SIP by port and heuristics (a port it gives to another protocol hides
            # it): also look at the bytes themselves.
            is_sip=bool(r["sip.Method"] or r["sip.Status-Code"]) or "sip" in r["frame.protocols"].split(":")
            or bool(SIP_START.match(bytes.fromhex(r["udp.payload"].replace(":", "")))),
        ))
    return packets


STUN_MAGIC_COOKIE = bytes.fromhex("2112a442")  # RFC 5389 6


def _is_stun(p: Packet) -> bool:
    """A STUN message by its bytes (RFC 7983 first byte and the RFC 5389 magic cookie), for when
    tshark's heuristics handed the packet to another dissector."""
    return p.rfc7983_kind == "stun" and len(p.payload) >= 20 and p.payload[4:8] == STUN_MAGIC_COOKIE


def _with_dtls_fields(pcap: Path, a: tuple[str, int], b: tuple[str, int], ps: list[Packet]) -> list[Packet]:
    """``ps`` (one WebRTC pair's packets) with DTLS fields filled in where tshark's heuristics did
    not dissect the DTLS records (the RTP heuristic can claim a conversation first, depending on
    what the capture saw first): those packets are decoded again with the pair forced to DTLS.
    Only packets whose first byte says DTLS (RFC 7983) take the forced decode's fields."""
    if any("dtls" in p.layers for p in ps) or not any(p.rfc7983_kind == "dtls" for p in ps):
        return ps
    rows = decode(pcap, f"udp.port=={a[1]} and udp.port=={b[1]}", PACKET_FIELDS,
                  decode_as=[f"udp.port=={a[1]},dtls"])
    forced = {int(r["frame.number"]): r for r in rows}
    out = []
    for p in ps:
        r = forced.get(p.number)
        if r is not None and p.rfc7983_kind == "dtls":
            p = dataclasses.replace(
                p, layers=[*p.layers, "dtls"], dtls_content_types=_ints(r["dtls.record.content_type"]),
                dtls_handshake_types=_ints(r["dtls.handshake.type"]),
                srtp_profiles=[v for v in r["dtls.use_srtp.protection_profile"].split(",") if v])
        out.append(p)
    return out


@dataclass
class SipMedia:
    pjsua_rtp: tuple[str, int]
    gateway_rtp: tuple[str, int]
    payload_types: list[int]


def read_sip_sdp(pcap: Path, gw_sip_port: int, pjsua_sip_port: int) -> SipMedia:
    """The audio addresses of pjsua's INVITE offer and the gateway's 200 OK answer."""
    rows = decode(pcap, f"sip and sdp and udp.port=={gw_sip_port} and udp.port=={pjsua_sip_port}",
                  ["udp.srcport", "sip.Method", "sip.Status-Code", "sdp.connection_info.address",
                   "sdp.media.port", "sdp.media"])
    offer = next((r for r in rows if r["sip.Method"] == "INVITE"), None)
    answer = next((r for r in rows if r["sip.Status-Code"] == "200"), None)
    assert offer and answer, f"no INVITE/200 OK with SDP between the UA and the gateway in the capture: {rows}"
    # "audio 30000 RTP/AVP 0 101": the formats follow the transport.
    pts = [int(f) for f in answer["sdp.media"].split(",")[0].split()[3:]]
    return SipMedia(pjsua_rtp=(offer["sdp.connection_info.address"].split(",")[0],
                               int(offer["sdp.media.port"].split(",")[0])),
                    gateway_rtp=(answer["sdp.connection_info.address"].split(",")[0],
                                 int(answer["sdp.media.port"].split(",")[0])),
                    payload_types=pts)


CANDIDATE = re.compile(r"candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ (\w+)", re.IGNORECASE)


@dataclass
class WebRtcExchange:
    uri: str
    offer_candidates: list[tuple[str, int]]
    answer_candidates: list[tuple[str, int]]


def read_whip_whep(pcap: Path, http_port: int) -> list[WebRtcExchange]:
    """Every WHIP/WHEP offer/answer over the gateway's HTTP port, with the candidates of each side."""
    reqs = decode(pcap, f"tcp.port=={http_port} and http.request.method==\"POST\" and sdp",
                  ["frame.number", "http.request.uri", "sdp.media_attr"])
    resps = decode(pcap, f"tcp.port=={http_port} and http.response.code==201 and sdp",
                   ["http.request_in", "sdp.media_attr"])
    by_request = {r["http.request_in"]: r for r in resps}

    def cands(attrs: str) -> list[tuple[str, int]]:
        return [(m.group(1), int(m.group(2))) for m in CANDIDATE.finditer(attrs)]

    out = []
    for req in reqs:
        resp = by_request.get(req["frame.number"])
        assert resp is not None, f"no 201 answer in the capture for POST {req['http.request.uri']}"
        out.append(WebRtcExchange(req["http.request.uri"], cands(req["sdp.media_attr"]),
                                  cands(resp["sdp.media_attr"])))
    return out


# -- the judge -----------------------------------------------------------------------------------

@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    figures: dict[str, object] = field(default_factory=dict)

    def fail(self, text: str) -> None:
        self.problems.append(text)


def _flow_key(p: Packet) -> tuple[tuple[str, int], tuple[str, int]]:
    return (p.src, p.dst)


def check_call_capture(pcap: Path, *, gw_sip_port: int, media_ports: range, http_port: int,
                       pjsua_sip_port: int, pjsua_rtp_port: int, gateway_udp_ports: set[int]) -> Verdict:
    """Judge one call's capture. ``gateway_udp_ports``: every UDP port the gateway process held
    during the call (its SIP port, legacy RTP/RTCP ports, and its WebRTC legs' and the embedded
    core's ICE sockets): any flow touching one of them is this call's and must be accounted for."""
    v = Verdict()
    sip = read_sip_sdp(pcap, gw_sip_port, pjsua_sip_port)
    exchanges = read_whip_whep(pcap, http_port)
    packets = read_udp_packets(pcap)

    pj_rtp, gw_rtp = sip.pjsua_rtp, sip.gateway_rtp
    if pj_rtp[1] != pjsua_rtp_port:
        v.fail(f"pjsua's SDP names RTP port {pj_rtp[1]}, it was told {pjsua_rtp_port}")
    if gw_rtp[1] not in media_ports:
        v.fail(f"gateway's SDP answer names RTP port {gw_rtp[1]}, outside its media range {media_ports}")
    if sip.payload_types[:1] != [LEGACY_PT]:
        v.fail(f"gateway answered payload types {sip.payload_types}, expected {LEGACY_PT} (PCMU) first")

    # The WebRTC connections: one per WHIP/WHEP exchange, between its offer's and answer's candidates.
    kinds = Counter(x.uri.split("/")[1] for x in exchanges)
    if kinds != Counter({"whip": 1, "whep": 1}):
        v.fail(f"expected one WHIP and one WHEP exchange for one call, saw {[x.uri for x in exchanges]}")
    webrtc_pairs: set[frozenset[tuple[str, int]]] = set()
    webrtc_ports: set[int] = set()
    for x in exchanges:
        if not x.offer_candidates or not x.answer_candidates:
            v.fail(f"{x.uri}: offer or answer without ICE candidates ({x})")
        for a in x.offer_candidates:
            for b in x.answer_candidates:
                webrtc_pairs.add(frozenset((a, b)))
        webrtc_ports |= {c[1] for c in x.offer_candidates + x.answer_candidates}

    ours = {gw_sip_port, pjsua_sip_port, pjsua_rtp_port, pjsua_rtp_port + 1, gw_rtp[1], gw_rtp[1] + 1,
            *webrtc_ports, *gateway_udp_ports}
    unannounced = gateway_udp_ports - webrtc_ports - {gw_sip_port, gw_rtp[1], gw_rtp[1] + 1}
    v.figures["gateway_udp_ports"] = sorted(gateway_udp_ports)
    # The rest of the gateway's media range is judged only for RTP-looking packets: the range lies
    # inside Linux's ephemeral ports, so an unrelated program may hold one of them at any time.
    relevant = [p for p in packets
                if {p.src[1], p.dst[1]} & ours
                or ((p.src[1] in media_ports or p.dst[1] in media_ports) and p.rfc7983_kind in ("rtp", "rtcp"))]
    flows: dict[tuple, list[Packet]] = defaultdict(list)
    for p in relevant:
        flows[_flow_key(p)].append(p)
    v.figures["flows"] = {f"{k[0][1]}->{k[1][1]}": len(ps) for k, ps in sorted(flows.items())}

    sip_pair = {("127.0.0.1", gw_sip_port), ("127.0.0.1", pjsua_sip_port)}
    legacy_rtp_pair = {pj_rtp, gw_rtp}
    legacy_rtcp_pair = {(pj_rtp[0], pj_rtp[1] + 1), (gw_rtp[0], gw_rtp[1] + 1)}
    rtp_each_way: Counter[str] = Counter()

    for (src, dst), ps in sorted(flows.items()):
        ends = {src, dst}
        name = f"{src[0]}:{src[1]} -> {dst[0]}:{dst[1]}"
        layers = set().union(*(p.layers for p in ps))
        sip_packets = [p for p in ps if p.is_sip]
        if ends == sip_pair:
            if any(not p.is_sip for p in ps):
                v.fail(f"{name}: SIP flow carries non-SIP packets")
            continue
        if sip_packets:
            v.fail(f"{name}: SIP outside the UA<->gateway SIP flow ({len(sip_packets)} packets)")
        if src[1] == pjsua_sip_port or dst[1] == pjsua_sip_port or gw_sip_port in (src[1], dst[1]):
            v.fail(f"{name}: pjsua's or the gateway's SIP port talks to someone else")

        if ends == legacy_rtp_pair:
            pts = Counter(p.rtp_pt for p in ps)
            not_rtp = [p.number for p in ps if "rtp" not in p.layers]
            if not_rtp:
                v.fail(f"{name}: legacy RTP flow has non-RTP packets (frames {not_rtp[:5]})")
            if set(pts) - {str(LEGACY_PT), *map(str, sip.payload_types)}:
                v.fail(f"{name}: payload types {dict(pts)} not in the SDP answer {sip.payload_types}")
            rtp_each_way["to_gateway" if dst == gw_rtp else "to_pjsua"] += pts[str(LEGACY_PT)]
            continue
        if ends == legacy_rtcp_pair:
            if layers & {"rtp", "dtls", "stun", "sip"}:
                v.fail(f"{name}: legacy RTCP flow carries {sorted(layers)}")
            continue
        if frozenset(ends) in webrtc_pairs:
            continue  # judged below, per connection
        # Anything else touching this call's ports is wrong: RTP to a stranger, media on SIP, ...
        rtpish = [p for p in ps if "rtp" in p.layers or "rtcp" in p.layers or p.rfc7983_kind in ("rtp", "rtcp")]
        hidden = " (from a gateway socket no SDP announced)" if {src[1], dst[1]} & unannounced else ""
        v.fail(f"{name}: unexpected flow touching this call's ports{hidden}, {sorted(layers)} x{len(ps)}"
               + (f" ({len(rtpish)} RTP/RTCP-looking)" if rtpish else ""))

    v.figures["legacy_rtp"] = dict(rtp_each_way)
    for way in ("to_gateway", "to_pjsua"):
        if rtp_each_way[way] <= MIN_RTP_EACH_WAY:
            v.fail(f"legacy RTP {way}: {rtp_each_way[way]} packets with PT {LEGACY_PT}, want > {MIN_RTP_EACH_WAY}")

    # Legacy payloads (PCMU of the caller's tone and of what it hears), to spot a plain relay.
    legacy_payloads = {p.payload[12:] for p in relevant if {p.src, p.dst} == legacy_rtp_pair
                       and len(p.payload) > 12 and p.rfc7983_kind == "rtp"}

    # (b) + (c): each WebRTC connection is ICE (STUN) + DTLS with use_srtp, then only SRTP/SRTCP.
    v.figures["webrtc"] = {}
    for pair in sorted(webrtc_pairs, key=sorted):
        a, b = sorted(pair)
        ps = [p for p in relevant if {p.src, p.dst} == {a, b}]
        name = f"{a[0]}:{a[1]} <-> {b[0]}:{b[1]}"
        if not ps:
            v.fail(f"{name}: WebRTC connection announced in SDP but no packets on the wire")
            continue
        fig: dict[str, object] = {}
        ps = _with_dtls_fields(pcap, a, b, ps)
        for direction in ((a, b), (b, a)):
            dps = [p for p in ps if (p.src, p.dst) == direction]
            if not any("stun" in p.layers or _is_stun(p) for p in dps):
                v.fail(f"{name}: no STUN from {direction[0][1]} to {direction[1][1]}")
            if not any("dtls" in p.layers for p in dps):
                v.fail(f"{name}: no DTLS from {direction[0][1]} to {direction[1][1]}")
        hellos = [p for p in ps if 1 in p.dtls_handshake_types and p.srtp_profiles]
        server_hellos = [p for p in ps if 2 in p.dtls_handshake_types and p.srtp_profiles]
        if not hellos or not server_hellos:
            v.fail(f"{name}: no DTLS ClientHello and ServerHello both carrying use_srtp")
        # The handshake is complete once both ends have sent ChangeCipherSpec (their Finished follows).
        ccs_frames = []
        for direction in ((a, b), (b, a)):
            first = next((p.number for p in ps if (p.src, p.dst) == direction and 20 in p.dtls_content_types), None)
            if first is None:
                v.fail(f"{name}: no DTLS ChangeCipherSpec from {direction[0][1]}: handshake never completed")
            else:
                ccs_frames.append(first)
        done = max(ccs_frames) if len(ccs_frames) == 2 else None
        media = [p for p in ps if p.rfc7983_kind in ("rtp", "rtcp") or "rtp" in p.layers or "rtcp" in p.layers]
        early = [p for p in media if done is None or p.number < done]
        if early:
            v.fail(f"{name}: {len(early)} RTP/RTCP packets before the DTLS handshake completed "
                   f"(frames {[p.number for p in early[:5]]}, handshake done at frame {done})")
        others = [p for p in ps if p.rfc7983_kind in ("other", "empty")]
        if others:
            v.fail(f"{name}: {len(others)} packets that are neither STUN, DTLS nor (S)RTP")
        rtp = [p for p in media if p.rfc7983_kind == "rtp"]
        pts = Counter(p.payload[1] & 0x7F for p in rtp)
        fig["rtp_packets"] = len(rtp)
        fig["payload_types"] = dict(pts)
        fig["srtp_profile"] = server_hellos[0].srtp_profiles if server_hellos else None
        if pts[LEGACY_PT]:
            v.fail(f"{name}: {pts[LEGACY_PT]} RTP packets with the legacy payload type {LEGACY_PT} on a WebRTC flow")
        relayed = [p for p in rtp if any(lp and lp in p.payload for lp in legacy_payloads)]
        if relayed:
            v.fail(f"{name}: {len(relayed)} packets carry a legacy PCMU payload verbatim (plain relay)")
        # Encrypted payloads look random: no first payload byte recurs much. In the clear, an Opus
        # (or G.711 tone) payload starts with the same few bytes packet after packet. For n random
        # bytes the commonest of 256 values occurs about n/256 + 4*sqrt(n/256) times at most.
        for direction in ((a, b), (b, a)):
            heads = Counter(_rtp_payload(p.payload)[:1] for p in rtp if (p.src, p.dst) == direction)
            n = sum(heads.values())
            if n:
                value, count = heads.most_common(1)[0]
                fig[f"rtp_{direction[0][1]}_to_{direction[1][1]}"] = (
                    f"{n} packets, {len(heads)} distinct first payload bytes, commonest x{count}")
                if count >= 16 + 3 * n / 256:
                    v.fail(f"{name}: payloads from {direction[0][1]} are not encrypted-looking: "
                           f"{count} of {n} start with {value.hex()}")
        v.figures["webrtc"][name] = fig
    if not any(f.get("rtp_packets", 0) > MIN_RTP_EACH_WAY for f in v.figures["webrtc"].values()):
        v.fail(f"no WebRTC connection carried > {MIN_RTP_EACH_WAY} SRTP packets: {v.figures['webrtc']}")
    return v


def _rtp_payload(data: bytes) -> bytes:
    """The payload of an RTP packet (after CSRCs and the header extension)."""
    cc = data[0] & 0x0F
    offset = 12 + 4 * cc
    if data[0] & 0x10 and len(data) >= offset + 4:
        offset += 4 + 4 * struct.unpack("!H", data[offset + 2:offset + 4])[0]
    return data[offset:]


def udp_ports_of(pid: int) -> set[int]:
    """The local ports of every IPv4 UDP socket process ``pid`` holds (from /proc)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]:
        cols = line.split()
        if cols[9] in inodes:
            ports.add(int(cols[1].split(":")[1], 16))
    return ports


# -- forging packets for the judge's self-check -----------------------------------------------------

def _ipv4_udp_frame(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    total = 20 + len(udp)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 17, 0,
                     socket.inet_aton(src[0]), socket.inet_aton(dst[0]))
    checksum = sum(struct.unpack("!10H", ip))
    checksum = (checksum & 0xFFFF) + (checksum >> 16)
    checksum = ~((checksum & 0xFFFF) + (checksum >> 16)) & 0xFFFF
    ip = ip[:10] + struct.pack("!H", checksum) + ip[12:]
    eth = b"\x00" * 12 + b"\x08\x00"
    return eth + ip + udp


def write_pcap(path: Path, frames: list[tuple[float, bytes]]) -> Path:
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # Ethernet
        for ts, frame in frames:
            sec = int(ts)
            f.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(frame), len(frame)))
            f.write(frame)
    return path


def merge(base: Path, extra: Path, out: Path) -> Path:
    proc = subprocess.run([MERGECAP, "-w", str(out), str(base), str(extra)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"mergecap failed: {proc.stderr}"
    return out


def extract(pcap: Path, display_filter: str, out: Path) -> Path:
    """The packets of ``pcap`` matching ``display_filter``, written to ``out``."""
    proc = subprocess.run([TSHARK, "-n", "-r", str(pcap), "-Y", display_filter, "-w", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and out.exists(), f"tshark could not filter the capture: {proc.stderr}"
    return out


def rtp_packet(pt: int, seq: int, payload: bytes, ssrc: int = 0x1234ABCD) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, seq * 160, ssrc) + payload


# -- the test --------------------------------------------------------------------------------------

def test_call_capture_shows_plain_rtp_only_on_the_legacy_leg(gateway_factory, tmp_path: Path) -> None:
    assert Path(TSHARK).exists(), f"tshark not found at {TSHARK} (make test installs Debian's tshark)"
    assert Path(MERGECAP).exists(), f"mergecap not found at {MERGECAP} (Debian's wireshark-common, with tshark)"
    gw = gateway_factory()
    caller_wav = write_wav(tmp_path / "caller_1000.wav", tone(1000, 2.0))
    pjsua_sip, pjsua_rtp = free_sip_port(), free_rtp_port()
    full = tmp_path / "call_all_udp.pcapng"
    gateway_udp_ports: set[int] = set()
    with capture(f"udp or tcp port {gw.http_port}", full, settle=1.0) as cap, \
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        call = pool.submit(run_pjsua_call, gw.sip_uri(MEETING), codec="PCMU", play_wav=caller_wav,
                           seconds=CALL_SECONDS, timeout=30.0, port=pjsua_sip, rtp_port=pjsua_rtp)
        try:
            # Every UDP socket the gateway holds while the call is up (both legs are up by then).
            gw.wait_for_event("bridge.leg.up", timeout=40, leg="webrtc")
            gw.wait_for_event("bridge.leg.up", timeout=40, leg="legacy")
            for _ in range(3):
                gateway_udp_ports |= udp_ports_of(gw.proc.pid)
                time.sleep(0.5)
        finally:
            result = call.result(timeout=CALL_SECONDS + 60)
        # The WebRTC leg's DELETEs and the last packets come after pjsua's BYE: wait for the end.
        gw.wait_for_event("call.ended", timeout=30)
    print("capture", cap.packets, "packets;", cap.stderr.strip()[-200:])
    assert result.connected, f"pjsua not connected: {result.final_status} {result.reason} {result.error}"

    # Cut the capture down (in one pass) to this call's ports: the gateway's HTTP, SIP and media
    # ports, pjsua's, and every ICE candidate port the WHIP/WHEP SDP named. The judge below works
    # on that file only (a loaded machine's loopback can carry 100k+ foreign packets in a call).
    candidate_ports = {c[1] for x in read_whip_whep(full, gw.http_port)
                       for c in x.offer_candidates + x.answer_candidates}
    udp_ports = sorted({gw.sip_port, pjsua_sip, pjsua_rtp, pjsua_rtp + 1, *candidate_ports, *gateway_udp_ports})
    pcap = extract(full, f"tcp.port=={gw.http_port} or udp.port in "
                         f"{{{gw.media.low}..{gw.media.high}, {', '.join(map(str, udp_ports))}}}",
                   tmp_path / "call_ours.pcapng")

    ports = {"gw_sip_port": gw.sip_port, "media_ports": gw.media_ports, "http_port": gw.http_port,
             "pjsua_sip_port": pjsua_sip, "pjsua_rtp_port": pjsua_rtp,
             "gateway_udp_ports": gateway_udp_ports}
    verdict = check_call_capture(pcap, **ports)
    for key, value in verdict.figures.items():
        print(key, value)
    assert not verdict.problems, "\n".join(verdict.problems)

    # The judge must be able to fail: forge each kind of violation into a copy of the capture.
    sip = read_sip_sdp(pcap, gw.sip_port, pjsua_sip)
    exchanges = read_whip_whep(pcap, gw.http_port)
    packets = read_udp_packets(pcap)
    whip = next(x for x in exchanges if x.uri.startswith("/whip/"))
    leg_end, core_end = whip.offer_candidates[0], whip.answer_candidates[0]
    on_pair = [p for p in packets if {p.src, p.dst} == {leg_end, core_end}]
    first_dtls = next(p for p in on_pair if "dtls" in p.layers)
    last_time = packets[-1].time
    pcmu = next(p.payload[12:] for p in packets if p.src == sip.pjsua_rtp and p.dst == sip.gateway_rtp)
    opus_like = b"\x78" + bytes(range(60))  # a constant TOC byte, as plain Opus has
    stranger = ("127.0.0.1", 9)  # discard port: nobody in this call
    # A gateway socket that no SDP names (else its SIP port, which must not carry RTP either).
    hidden_port = min(gateway_udp_ports - candidate_ports - {gw.sip_port, sip.gateway_rtp[1], sip.gateway_rtp[1] + 1},
                      default=gw.sip_port)
    forgeries = {
        "plain RTP before the DTLS handshake":
            ([(first_dtls.time - 0.0005, _ipv4_udp_frame(leg_end, core_end, rtp_packet(96, 1, opus_like)))],
             "before the DTLS handshake completed"),
        "legacy PT in the clear on a WebRTC flow":
            ([(last_time + 0.01 * i, _ipv4_udp_frame(leg_end, core_end, rtp_packet(LEGACY_PT, 500 + i, pcmu)))
              for i in range(3)], "legacy payload type"),
        "plain Opus (constant TOC) on a WebRTC flow":
            ([(last_time + 0.02 * i, _ipv4_udp_frame(leg_end, core_end, rtp_packet(96, 900 + i, opus_like)))
              for i in range(40)], "not encrypted-looking"),
        "legacy RTP to a stranger":
            ([(last_time + 0.01 * i, _ipv4_udp_frame(sip.gateway_rtp, stranger, rtp_packet(LEGACY_PT, i, pcmu)))
              for i in range(5)], "unexpected flow"),
        "plain RTP from a gateway socket other than the legacy port":
            ([(last_time + 0.01 * i, _ipv4_udp_frame(("127.0.0.1", hidden_port), ("127.0.0.1", 9),
                                                      rtp_packet(LEGACY_PT, i, pcmu)))
              for i in range(5)], "unexpected flow touching this call's ports"),
        "SIP on another flow":
            ([(last_time, _ipv4_udp_frame(("127.0.0.1", pjsua_sip), sip.gateway_rtp,
                                          b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1\r\n"
                                          b"Call-ID: forged\r\nCSeq: 1 OPTIONS\r\nFrom: <sip:a@b>;tag=1\r\n"
                                          b"To: <sip:x@127.0.0.1>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"))],
             "SIP outside"),
    }
    for what, (frames, expected) in forgeries.items():
        extra = write_pcap(tmp_path / "forged.pcap", frames)
        forged = merge(pcap, extra, tmp_path / f"forged_{len(what)}.pcapng")
        problems = check_call_capture(forged, **ports).problems
        print(f"forged {what}: {problems}")
        assert any(expected in p for p in problems), f"the judge missed {what}: {problems}"
    full.unlink()  # all went well: keep only this call's packets (call_ours.pcapng)
