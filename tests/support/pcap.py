"""A tiny pcap/pcapng reader and pcap writer (stdlib ``struct`` only), for the H.323 corpus tests.

Reads classic pcap (both byte orders, micro/nanosecond) and pcapng (SHB, IDB, EPB and SPB
blocks; other blocks skipped), gzip-compressed or not; link types Ethernet (1, with 802.1Q
tags), Linux cooked (113, SLL), BSD loopback/null (0 and 108) and raw IPv4 (101, 228).  Only
IPv4 is decoded; TCP segments are reassembled per direction by sequence number (duplicates and
retransmissions dropped, overlaps trimmed), which is good enough for the captures in
``../shared/corpus/h323``.  :func:`write_pcap` builds Ethernet/IPv4/TCP or UDP frames around
payloads, so that tshark can judge what our encoders build.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

Endpoint = tuple[str, int]


@dataclass(frozen=True)
class Packet:
    """One captured frame: its link type, timestamp (seconds) and bytes."""

    linktype: int
    ts: float
    data: bytes


@dataclass(frozen=True)
class Datagram:
    """One UDP datagram."""

    index: int
    src: Endpoint
    dst: Endpoint
    payload: bytes


@dataclass
class TcpStream:
    """One direction of one TCP connection, reassembled."""

    src: Endpoint
    dst: Endpoint
    first_index: int
    data: bytes = b""
    # (frame index, payload bytes) per in-order, deduplicated segment.
    segments: list[tuple[int, bytes]] = field(default_factory=list)


@dataclass
class Capture:
    """What :func:`read_capture` found: UDP datagrams and TCP streams in first-seen order."""

    udp: list[Datagram]
    tcp: list[TcpStream]


def _open(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw


def read_packets(path: Path | str) -> list[Packet]:
    """All frames of a pcap or pcapng file (gzip allowed)."""
    data = _open(Path(path))
    if len(data) < 4:
        raise ValueError("not a capture file")
    magic = data[:4]
    if magic == b"\x0a\x0d\x0d\x0a":
        return list(_read_pcapng(data))
    return list(_read_pcap(data))


def _read_pcap(data: bytes) -> Iterator[Packet]:
    magic_le = struct.unpack("<I", data[:4])[0]
    if magic_le in (0xA1B2C3D4, 0xA1B23C4D):
        end = "<"
    elif struct.unpack(">I", data[:4])[0] in (0xA1B2C3D4, 0xA1B23C4D):
        end = ">"
    else:
        raise ValueError("not a pcap file")
    nano = struct.unpack(end + "I", data[:4])[0] == 0xA1B23C4D
    linktype = struct.unpack(end + "I", data[20:24])[0] & 0x0FFFFFFF
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(end + "IIII", data[off:off + 16])
        off += 16
        frame = data[off:off + incl]
        off += incl
        yield Packet(linktype, sec + frac / (1e9 if nano else 1e6), frame)


def _read_pcapng(data: bytes) -> Iterator[Packet]:
    off = 0
    end = "<"
    links: list[tuple[int, float]] = []  # (linktype, ticks per second)
    while off + 12 <= len(data):
        btype = struct.unpack(end + "I", data[off:off + 4])[0]
        if btype == 0x0A0D0D0A:  # Section Header Block: byte order from the BOM
            bom = data[off + 8:off + 12]
            end = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            links = []
        blen = struct.unpack(end + "I", data[off + 4:off + 8])[0]
        if blen < 12 or off + blen > len(data):
            break
        body = data[off + 8:off + blen - 4]
        if btype == 1:  # Interface Description Block
            linktype = struct.unpack(end + "H", body[:2])[0]
            resol = 1e6
            opt = 8
            while opt + 4 <= len(body):
                code, olen = struct.unpack(end + "HH", body[opt:opt + 4])
                if code == 0:
                    break
                if code == 9 and olen >= 1:  # if_tsresol
                    v = body[opt + 4]
                    resol = float(2 ** (v & 0x7F)) if v & 0x80 else float(10 ** v)
                opt += 4 + ((olen + 3) & ~3)
            links.append((linktype, resol))
        elif btype == 6:  # Enhanced Packet Block
            iface, hi, lo, cap, _orig = struct.unpack(end + "IIIII", body[:20])
            linktype, resol = links[iface]
            yield Packet(linktype, ((hi << 32) | lo) / resol, body[20:20 + cap])
        elif btype == 3:  # Simple Packet Block
            orig = struct.unpack(end + "I", body[:4])[0]
            linktype, _ = links[0]
            yield Packet(linktype, 0.0, body[4:4 + orig])
        off += blen


def _ip_payload(pkt: Packet) -> bytes | None:
    """The IPv4 packet inside a frame, or None."""
    d = pkt.data
    lt = pkt.linktype
    if lt == 1:  # Ethernet
        etype = struct.unpack("!H", d[12:14])[0]
        off = 14
        while etype in (0x8100, 0x88A8) and len(d) >= off + 4:
            etype = struct.unpack("!H", d[off + 2:off + 4])[0]
            off += 4
        return d[off:] if etype == 0x0800 else None
    if lt == 113:  # Linux cooked (SLL)
        return d[16:] if struct.unpack("!H", d[14:16])[0] == 0x0800 else None
    if lt in (0, 108):  # BSD loopback: 4-byte family in host (0) or network (108) order
        fam = struct.unpack("<I" if lt == 0 else "!I", d[:4])[0]
        if lt == 0 and fam not in (2,):
            fam = struct.unpack("!I", d[:4])[0]
        return d[4:] if fam == 2 else None
    if lt in (101, 228):  # raw IP / raw IPv4
        return d if d[:1] and d[0] >> 4 == 4 else None
    return None


def read_capture(path: Path | str) -> Capture:
    """UDP datagrams and reassembled TCP streams (one per direction) of a capture file."""
    udp: list[Datagram] = []
    streams: dict[tuple[Endpoint, Endpoint], TcpStream] = {}
    pending: dict[tuple[Endpoint, Endpoint], dict[int, tuple[int, bytes]]] = {}
    next_seq: dict[tuple[Endpoint, Endpoint], int] = {}
    for index, pkt in enumerate(read_packets(path), start=1):
        ip = _ip_payload(pkt)
        if ip is None or len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        proto = ip[9]
        src_ip = ".".join(str(b) for b in ip[12:16])
        dst_ip = ".".join(str(b) for b in ip[16:20])
        frag = struct.unpack("!H", ip[6:8])[0]
        if frag & 0x3FFF:  # fragments are not reassembled here
            continue
        l4 = ip[ihl:total if total >= ihl else len(ip)]
        if proto == 17 and len(l4) >= 8:
            sport, dport, ulen = struct.unpack("!HHH", l4[:6])
            udp.append(Datagram(index, (src_ip, sport), (dst_ip, dport), l4[8:ulen]))
        elif proto == 6 and len(l4) >= 20:
            sport, dport, seq = struct.unpack("!HHI", l4[:8])
            flags = l4[13]
            doff = (l4[12] >> 4) * 4
            payload = l4[doff:]
            key = ((src_ip, sport), (dst_ip, dport))
            if key not in streams:
                streams[key] = TcpStream(key[0], key[1], index)
                pending[key] = {}
            if flags & 0x02:  # SYN takes one sequence number
                next_seq[key] = (seq + 1) & 0xFFFFFFFF
                continue
            if not payload:
                continue
            if key not in next_seq:  # capture began mid-connection
                next_seq[key] = seq
            pending[key].setdefault(seq, (index, payload))
            _drain(streams[key], pending[key], next_seq, key)
    return Capture(udp, list(streams.values()))


def _drain(stream: TcpStream, pend: dict[int, tuple[int, bytes]],
           next_seq: dict[tuple[Endpoint, Endpoint], int], key: tuple[Endpoint, Endpoint]) -> None:
    progressed = True
    while progressed:
        progressed = False
        want = next_seq[key]
        for seq in list(pend):
            index, payload = pend[seq]
            delta = (want - seq) & 0xFFFFFFFF
            if delta >= 0x80000000:  # a future segment: keep it
                continue
            del pend[seq]
            if delta >= len(payload):  # retransmission of what we have
                continue
            new = payload[delta:]
            stream.segments.append((index, new))
            stream.data += new
            next_seq[key] = (want + len(new)) & 0xFFFFFFFF
            progressed = True
            break


# --------------------------------------------------------------------------- writer


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _ip4(addr: str) -> bytes:
    return bytes(int(p) for p in addr.split("."))


def build_frame(payload: bytes, src: Endpoint, dst: Endpoint, *, proto: str = "tcp",
                seq: int = 1, ack: int = 1) -> bytes:
    """An Ethernet/IPv4/TCP (PSH|ACK) or UDP frame carrying ``payload`` with valid checksums."""
    s_ip, d_ip = _ip4(src[0]), _ip4(dst[0])
    if proto == "tcp":
        hdr = struct.pack("!HHIIBBHHH", src[1], dst[1], seq, ack, 5 << 4, 0x18, 65535, 0, 0)
        pnum = 6
    elif proto == "udp":
        hdr = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0)
        pnum = 17
    else:
        raise ValueError(proto)
    seg = hdr + payload
    pseudo = s_ip + d_ip + struct.pack("!BBH", 0, pnum, len(seg))
    c = _csum(pseudo + seg)
    if proto == "tcp":
        seg = seg[:16] + struct.pack("!H", c) + seg[18:]
    else:
        seg = seg[:6] + struct.pack("!H", c or 0xFFFF) + seg[8:]
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), 1, 0x4000, 64, pnum, 0, s_ip, d_ip)
    iph = iph[:10] + struct.pack("!H", _csum(iph)) + iph[12:]
    eth = b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00"
    return eth + iph + seg


@dataclass(frozen=True)
class Flow:
    """A payload to write: ``proto`` is "tcp" or "udp"."""

    payload: bytes
    src: Endpoint
    dst: Endpoint
    proto: str = "tcp"


def write_pcap(path: Path | str, flows: Iterable[Flow]) -> None:
    """Write ``flows`` as Ethernet frames into a classic pcap file (TCP sequence numbers chained
    per direction, so that tshark reassembles them as one stream)."""
    seqs: dict[tuple[Endpoint, Endpoint], int] = {}
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, f in enumerate(flows):
        seq = seqs.get((f.src, f.dst), 1)
        frame = build_frame(f.payload, f.src, f.dst, proto=f.proto, seq=seq,
                            ack=seqs.get((f.dst, f.src), 1))
        seqs[(f.src, f.dst)] = seq + len(f.payload)
        out.append(struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame)
    Path(path).write_bytes(b"".join(out))
