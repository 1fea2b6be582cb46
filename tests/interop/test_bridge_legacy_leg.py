"""LegacyAudioLeg on real loopback UDP sockets: a PCMU stream from a plain socket is decoded to a
1 kHz tone, packets from any other source are dropped and counted, and the outbound clock sends
50 packets/s with consecutive sequence numbers and timestamps stepping 160."""

from __future__ import annotations

import asyncio
import socket
from itertools import pairwise

import numpy as np
import pytest

from bridge.codecs import PCMU
from bridge.legacy_leg import LegacyAudioLeg
from bridge.ports import PortAllocator
from bridge.rtp import RtpPacket
from tests.support.audio import assert_tone, tone

pytestmark = pytest.mark.interop


def udp(host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.setblocking(False)
    return s


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(2048))
        except BlockingIOError:
            return out


async def scenario() -> dict[str, object]:
    loop = asyncio.get_running_loop()
    allocator = PortAllocator(41000, 41999, address="127.0.0.1")
    peer = udp()
    peer_port = peer.getsockname()[1]
    lease = allocator.allocate()
    received: list[np.ndarray] = []
    leg = LegacyAudioLeg(lease=lease, codec=PCMU, payload_type=0, remote_address="127.0.0.1",
                         remote_port=peer_port, on_audio=received.append)
    await leg.start()
    target = ("127.0.0.1", leg.local_port)

    # The endpoint's stream: 1 s of 1 kHz PCMU, paced at 20 ms; the meeting's audio (440 Hz)
    # is fed to the leg at the same pace for the endpoint to hear.
    enc = PCMU.encoder()
    caller = tone(1000, 1.0)
    meeting = tone(440, 1.2)
    outbound: list[bytes] = []
    intruder_port, intruder_ip = udp(), None
    try:
        intruder_ip = udp("127.0.0.2")
    except OSError:  # a kernel without the whole 127/8 on lo: the port case still runs
        intruder_ip = None
    t0 = loop.time()
    for i in range(50):
        pkt = bytes(RtpPacket(0, 1000 + i, 5000 + 160 * i, 0x1234, enc.encode(caller[i * 160:(i + 1) * 160]),
                              marker=i == 0))
        peer.sendto(pkt, target)
        if i >= 5:  # after latching: same IP other port, and another IP, both send valid RTP
            intruder_port.sendto(pkt, target)
            if intruder_ip is not None:
                intruder_ip.sendto(pkt, target)
        leg.push_audio(meeting[i * 160:(i + 1) * 160])
        await asyncio.sleep(0.02)
        outbound += drain(peer)
    await asyncio.sleep(0.1)
    outbound += drain(peer)
    elapsed = loop.time() - t0
    stats = leg.stats()
    leg.close()
    leg.close()  # idempotent
    await asyncio.sleep(0)
    for s in (peer, intruder_port) + ((intruder_ip,) if intruder_ip else ()):
        s.close()
    return {"received": received, "outbound": outbound, "elapsed": elapsed, "stats": stats,
            "allocator": allocator, "port": lease.rtp_port, "intruders": 1 + (intruder_ip is not None)}


def test_legacy_leg_on_loopback() -> None:
    # A private loop, never made current: asyncio.run() would unset the process's shared loop
    # (gateway.loop's) for whichever test runs next.
    loop = asyncio.new_event_loop()
    try:
        r = loop.run_until_complete(scenario())
    finally:
        loop.close()
    stats: dict = r["stats"]  # type: ignore[assignment]

    # Inbound: every packet from the endpoint decoded, the tone intact.
    assert stats["packets_in"] == 50
    pcm = np.concatenate(r["received"])  # type: ignore[arg-type]
    # ... plus the frames the jitter buffer concealed (held on an underrun, faded out at the end).
    assert pcm.size == (50 + stats["jitter_buffer"]["concealed"]) * 160
    assert_tone(pcm, 8000, 1000, min_dbfs=-20, skip_seconds=0.0)

    # Every intruding packet dropped and counted as wrong source; nothing else dropped.
    assert stats["dropped_wrong_source"] == 45 * r["intruders"]  # type: ignore[operator]
    assert stats["dropped"] == stats["dropped_wrong_source"] and stats["latched"]

    # Outbound: one stream, consecutive sequence numbers, timestamps +160, marker first only.
    pkts = [RtpPacket.parse(d) for d in r["outbound"]]  # type: ignore[union-attr]
    assert len(pkts) == stats["packets_out"]
    assert {p.ssrc for p in pkts} == {pkts[0].ssrc} and {p.payload_type for p in pkts} == {0}
    assert [p.marker for p in pkts] == [True] + [False] * (len(pkts) - 1)
    seqs = [p.sequence_number for p in pkts]
    assert all((b - a) & 0xFFFF == 1 for a, b in pairwise(seqs))
    steps = {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in pairwise(pkts)}
    assert steps == {160} or stats["clock_skipped_frames"] > 0
    # The clock never sends ahead of real time (50 packets/s at most); a stalled CI box may send
    # fewer, which the skipped-frame counter accounts for, so only the upper bound is a defect.
    assert len(pkts) <= r["elapsed"] * 50 + 3, f"{len(pkts)} packets in {r['elapsed']:.2f} s"  # type: ignore[operator]

    # What the endpoint heard is the meeting's 440 Hz.
    dec = PCMU.decoder()
    heard = np.concatenate([dec.decode(p.payload) for p in pkts])
    assert_tone(heard, 8000, 440, min_dbfs=-25, skip_seconds=0.1)

    # The port pair is free again: the allocator says so and the kernel lets us bind it.
    allocator: PortAllocator = r["allocator"]  # type: ignore[assignment]
    assert allocator.in_use == 0
    for port in (r["port"], r["port"] + 1):  # type: ignore[operator]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", port))
        s.close()
