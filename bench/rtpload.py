"""RTP load generator and SRTP sink for the media fast path benchmark.

One process (the benchmark's own, never the system under test's) sends plain RTP
G.711 streams (172-byte packets: 12-byte header + 160-byte payload, 50 packets/s
per stream) and receives what the system under test relays, with a kernel receive
timestamp per packet (``SO_TIMESTAMPNS`` through ``recvmsg``).

Each payload starts with the packet's global sequence number and the sender's
``CLOCK_REALTIME`` in nanoseconds taken just before ``sendto``; the kernel receive
timestamp is on the same clock, so their difference is the one-way latency through
the relay (loopback both ways included). The sink only stores packets while the
load runs and decrypts them afterwards (SRTP via pylibsrtp), so its own cost never
delays the generator and a failed decryption is counted, not hidden.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pylibsrtp import Error as SrtpError
from pylibsrtp import Policy, Session

#: Linux values (asm-generic/socket.h); Python's socket module does not export them.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)

PACKETS_PER_STREAM = 50  # 20 ms G.711 frames
PAYLOAD_TYPE = 0  # PCMU
PACKET_SIZE = 172
TICK = 0.001  # the generator sends in 1 ms bursts (pacing jitter <= 1 ms on 20 ms streams)
LATENCY_TICK = 0.0002  # finer pacing for latency runs: bursts of a few packets, not rate/1000
LATE_NS = 100_000_000  # a packet later than 100 ms is as good as lost for audio
BASE_SSRC = 0x10000000
_HDR = struct.Struct("!BBHII")
_STAMP = struct.Struct("!IIQ")  # run id, packet number in the run, sender time in ns
_TS_CMSG = struct.Struct("@qq")  # struct timespec
_CMSG_SPACE = socket.CMSG_SPACE(_TS_CMSG.size)


def stream_ssrc(index: int) -> int:
    """The SSRC the generator uses for stream ``index``."""
    return BASE_SSRC + index


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads) from /proc/<pid>/stat, in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    # after the command name: state is field 3, utime 14 and stime 15 (1-based, proc(5))
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Sink:
    """Where the relayed SRTP arrives: one UDP socket with kernel receive timestamps."""

    sock: socket.socket
    #: out SSRC -> (stream index, SRTP session or None for plain RTP)
    streams: dict[int, tuple[int, Session | None]] = field(default_factory=dict)

    @classmethod
    def open(cls, host: str = "127.0.0.1", rcvbuf: int = 64 << 20) -> Sink:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)  # root: past rmem_max
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((host, 0))
        sock.setblocking(False)
        return cls(sock)

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def expect(self, index: int, out_ssrc: int, key: bytes | None) -> None:
        """Stream ``index`` arrives with SSRC ``out_ssrc``, SRTP with master key+salt ``key`` (None: plain)."""
        session = None if key is None else Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
        self.streams[out_ssrc] = (index, session)

    def drain(self, into: list[tuple[bytes, int]]) -> None:
        """Read every queued datagram with its kernel receive time (ns) into ``into``."""
        recvmsg = self.sock.recvmsg
        append = into.append
        unpack = _TS_CMSG.unpack
        while True:
            try:
                data, anc, _flags, _addr = recvmsg(2048, _CMSG_SPACE)
            except BlockingIOError:
                return
            rx = 0
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = unpack(cdata[:_TS_CMSG.size])
                    rx = sec * 1_000_000_000 + nsec
            append((data, rx))


@dataclass
class LoadResult:
    """What one run at one rate measured (only packets sent inside the measured window count)."""

    target_pps: float
    streams: int
    sent: int = 0  # in the measured window
    received: int = 0  # of those, arrived (in time or late)
    late: int = 0  # of those, later than 100 ms
    decrypt_errors: int = 0  # anything that arrived and did not authenticate / decrypt
    foreign: int = 0  # datagrams not belonging to a known stream (e.g. RTCP)
    stale: int = 0  # packets of an earlier run the relay still had queued
    duplicates: int = 0
    achieved_pps: float = 0.0  # what the generator really sent in the window
    gen_max_lag_ms: float = 0.0  # how far the generator fell behind its schedule
    gen_cpu_us_per_packet: float = 0.0  # the generator+sink's own CPU (this process), for context
    window_s: float = 0.0
    latencies_ns: list[int] = field(default_factory=list, repr=False)

    @property
    def lost(self) -> int:
        return self.sent - self.received

    @property
    def loss_or_late_ratio(self) -> float:
        return (self.lost + self.late) / self.sent if self.sent else 1.0

    @property
    def generator_limited(self) -> bool:
        """The generator could not send at the target rate (its figures then bound the relay from below).

        A single late wake-up (``gen_max_lag_ms``) only makes one burst: latencies are measured
        from the real send time, so that alone does not disqualify a step."""
        return self.achieved_pps < 0.97 * self.target_pps

    def percentile_us(self, q: float) -> float | None:
        if not self.latencies_ns:
            return None
        data = sorted(self.latencies_ns)
        i = min(len(data) - 1, max(0, round(q / 100 * (len(data) - 1))))
        return data[i] / 1000

    def summary(self) -> dict[str, float | int | bool | None]:
        return {
            "target_pps": self.target_pps, "streams": self.streams, "achieved_pps": round(self.achieved_pps, 1),
            "sent": self.sent, "received": self.received, "lost": self.lost, "late": self.late,
            "decrypt_errors": self.decrypt_errors, "foreign": self.foreign, "duplicates": self.duplicates,
            "stale": self.stale,
            "loss_or_late_pct": round(100 * self.loss_or_late_ratio, 4),
            "latency_p50_us": self.percentile_us(50), "latency_p99_us": self.percentile_us(99),
            "gen_max_lag_ms": round(self.gen_max_lag_ms, 2),
            "gen_cpu_us_per_packet": round(self.gen_cpu_us_per_packet, 1), "generator_limited": self.generator_limited,
        }


class Sender:
    """The generator's socket and per-stream RTP sequence numbers, which keep counting across runs
    (the sink's SRTP replay windows and the relay's own state see one continuous stream)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sock.bind((host, 0))
        self.seqs: list[int] = []
        self.runs = 0

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def close(self) -> None:
        self.sock.close()


def run_load(
    *,
    sender: Sender,
    destinations: Sequence[tuple[str, int]],
    sink: Sink,
    rate: float,
    warmup: float,
    duration: float,
    on_window: Callable[[str], None] | None = None,
    tail: float = 0.3,
    tick: float = TICK,
) -> LoadResult:
    """Send ``rate`` packets/s over ``ceil(rate / 50)`` streams for ``warmup + duration`` seconds.

    ``on_window("start")`` / ``on_window("end")`` are called at the edges of the
    measured window (e.g. to sample the relay's CPU). Packets arriving up to
    ``tail`` seconds after the last send are still counted. The generator wakes every
    ``tick`` seconds and sends what is due: a burst of ``rate * tick`` packets, which a relay
    works off one after the other, so latency runs use a finer tick than throughput runs.
    """
    n = max(1, -(-int(rate) // PACKETS_PER_STREAM))
    if n > len(destinations):
        raise ValueError(f"{rate} pps needs {n} streams, the relay has {len(destinations)}")
    rate = n * PACKETS_PER_STREAM
    result = LoadResult(target_pps=rate, streams=n)
    templates = []
    for i in range(n):
        buf = bytearray(PACKET_SIZE)
        buf[12:] = b"\xff" * (PACKET_SIZE - 12)  # PCMU silence
        templates.append(buf)
    if len(sender.seqs) < n:
        sender.seqs.extend([0] * (n - len(sender.seqs)))
    seqs = sender.seqs
    dests = list(destinations[:n])
    pack_hdr, pack_stamp = _HDR.pack_into, _STAMP.pack_into
    sendto, now_ns, perf = sender.sock.sendto, time.time_ns, time.perf_counter
    total = int(rate * (warmup + duration))
    first_measured = int(rate * warmup)
    received: list[tuple[bytes, int]] = []
    _wait_quiet(sink)  # a relay still working off an earlier run's backlog would skew this one
    sender.runs += 1
    run_id = sender.runs
    window_started = False
    window_t0 = 0.0
    k = 0
    t0 = perf()
    max_lag = 0.0
    sleep = time.sleep
    gen_cpu = [0.0, 0.0]
    while k < total:
        now = perf()
        due = min(total, int((now - t0) * rate) + 1)
        if due - k > 1:
            max_lag = max(max_lag, (due - k - 1) / rate)
        while k < due:
            if k == first_measured and not window_started:
                window_started, window_t0 = True, perf()
                gen_cpu[0] = time.process_time()
                if on_window:
                    on_window("start")
            i = k % n
            buf = templates[i]
            s = seqs[i]
            seqs[i] = s + 1
            pack_hdr(buf, 0, 0x80, PAYLOAD_TYPE, s & 0xFFFF, (s * 160) & 0xFFFFFFFF, BASE_SSRC + i)
            pack_stamp(buf, 12, run_id, k, now_ns())
            try:
                sendto(buf, dests[i])
            except (BlockingIOError, ConnectionRefusedError):
                pass  # counted as lost: the packet never left
            k += 1
        sink.drain(received)
        # sleep to the next tick: the kernel queues what arrives meanwhile, with its timestamps
        delay = max(t0 + k / rate, now + tick) - perf()
        if delay > 0:
            sleep(delay)
    window_t1 = perf()
    gen_cpu[1] = time.process_time()
    if on_window:
        on_window("end")
    deadline = perf() + tail
    while perf() < deadline:
        select.select([sink.sock], [], [], 0.01)
        sink.drain(received)
    result.sent = total - first_measured
    result.window_s = window_t1 - window_t0
    result.achieved_pps = result.sent / result.window_s if result.window_s > 0 else 0.0
    result.gen_max_lag_ms = max_lag * 1000
    result.gen_cpu_us_per_packet = (gen_cpu[1] - gen_cpu[0]) * 1e6 / result.sent if result.sent else 0.0
    _analyse(received, sink, run_id, first_measured, total, result)
    return result


def _wait_quiet(sink: Sink, quiet: float = 0.2, limit: float = 10.0) -> None:
    """Discard arrivals until none came for ``quiet`` seconds (at most ``limit`` seconds)."""
    scratch: list[tuple[bytes, int]] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        scratch.clear()
        sink.drain(scratch)
        if not scratch and not select.select([sink.sock], [], [], quiet)[0]:
            return


def _analyse(received: list[tuple[bytes, int]], sink: Sink, run_id: int, first: int, total: int,
             result: LoadResult) -> None:
    seen = bytearray(total)
    streams = sink.streams
    unpack_stamp = _STAMP.unpack_from
    for data, rx_ns in received:
        if len(data) < 12 or 192 <= data[1] <= 223:  # SRTCP / RTCP from the relay
            result.foreign += 1
            continue
        entry = streams.get(int.from_bytes(data[8:12], "big"))
        if entry is None:
            result.foreign += 1
            continue
        session = entry[1]
        if session is not None:
            try:
                data = session.unprotect(data)
            except SrtpError:
                result.decrypt_errors += 1
                continue
        if len(data) != PACKET_SIZE:
            result.decrypt_errors += 1
            continue
        rid, gseq, tx_ns = unpack_stamp(data, 12)
        if rid != run_id:
            result.stale += 1
            continue
        if gseq >= total:
            result.decrypt_errors += 1
            continue
        if seen[gseq]:
            result.duplicates += 1
            continue
        seen[gseq] = 1
        if gseq < first:
            continue
        result.received += 1
        latency = rx_ns - tx_ns
        if latency > LATE_NS:
            result.late += 1
        result.latencies_ns.append(latency)
