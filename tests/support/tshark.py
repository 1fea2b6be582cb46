"""tshark as the independent judge of what went over the wire.

``capture()`` records loopback traffic for some ports into a pcapng file while a test runs;
``decode()`` reads fields out of it; ``flows()`` says which protocols each UDP/TCP flow carried.

    with capture([sip_port, rtp_port], tmp_path / "call.pcapng") as cap:
        ...  # make a call
    rows = decode(cap.path, "sip.Method == \"INVITE\"", ["sip.Call-ID", "sdp.media"])
    assert any("rtp" in f.protocols for f in flows(cap.path))

Notes: tshark decodes RTP only on ports that SDP it saw announced, on ports given with
``decode_as`` (``"udp.port==40000,rtp"``), or with the RTP heuristic (``rtp_heuristic=True``,
i.e. ``--enable-heuristic rtp_udp``; tshark 4.0 has no ``rtp.heuristic_rtp`` preference any more).
Capture on ``lo`` with a port filter: other programs on the machine use loopback too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

TSHARK = shutil.which("tshark") or "/usr/bin/tshark"


def bpf_for_ports(ports: Sequence[int]) -> str:
    """A capture filter for UDP and TCP traffic to or from any of ``ports``."""
    if not ports:
        raise ValueError("no ports to capture")
    return " or ".join(f"port {int(p)}" for p in sorted(set(ports)))


@dataclass
class Capture:
    path: Path
    bpf: str
    stderr: str = ""
    packets: int | None = None  # what tshark reported at exit ("N packets captured")


@contextmanager
def capture(ports_or_filter: Sequence[int] | str, path: Path | str, *, interface: str = "lo",
            start_timeout: float = 15.0, stop_timeout: float = 15.0,
            settle: float = 0.3) -> Iterator[Capture]:
    """Capture ``interface`` traffic matching ``ports_or_filter`` (ports or a BPF string) into ``path``.

    Returns once tshark really captures (it said "Capturing on ..."). On exit it waits ``settle``
    seconds for late packets, stops tshark with SIGINT (so the file is complete) and waits for it.
    """
    path = Path(path)
    bpf = ports_or_filter if isinstance(ports_or_filter, str) else bpf_for_ports(ports_or_filter)
    # -q: no packet count on stderr; -n: no name resolution; pcapng output.
    cmd = [TSHARK, "-i", interface, "-n", "-q", "-f", bpf, "-w", str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: list[str] = []
    started = threading.Event()

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "Capturing on" in line:
                started.set()
        started.set()

    thread = threading.Thread(target=drain, name="tshark-stderr", daemon=True)
    thread.start()
    cap = Capture(path=path, bpf=bpf)
    try:
        if not started.wait(start_timeout) or proc.poll() is not None:
            raise RuntimeError(f"tshark did not start capturing ({' '.join(cmd)}):\n{''.join(lines)}")
        # dumpcap has opened the file when it says "Capturing on"; make sure it exists.
        deadline = time.monotonic() + start_timeout
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield cap
    finally:
        if settle:
            time.sleep(settle)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        thread.join(timeout=5)
        cap.stderr = "".join(lines)
        for line in lines:
            words = line.split()
            if len(words) >= 3 and words[1] == "packets" and words[2] == "captured" and words[0].isdigit():
                cap.packets = int(words[0])


def _read_args(path: Path | str, decode_as: Sequence[str], rtp_heuristic: bool,
               prefs: dict[str, str] | None) -> list[str]:
    args = [TSHARK, "-n", "-r", str(path)]
    for rule in decode_as:
        args += ["-d", rule]
    if rtp_heuristic:
        args += ["--enable-heuristic", "rtp_udp"]
    for key, value in (prefs or {}).items():
        args += ["-o", f"{key}:{value}"]
    return args


def decode(path: Path | str, display_filter: str | None, fields: Sequence[str], *,
           decode_as: Sequence[str] = (), rtp_heuristic: bool = False,
           prefs: dict[str, str] | None = None, two_pass: bool = False) -> list[dict[str, str]]:
    """Packets of ``path`` matching ``display_filter`` as dicts of ``fields`` (each a string;
    repeated occurrences joined by ``,``; "" when absent).

    ``decode_as`` takes tshark ``-d`` rules, e.g. ``"udp.port==40000,rtp"`` or
    ``"tcp.port==1720,q931"``; ``prefs`` are ``-o`` preferences; ``two_pass`` (``-2``) lets
    filters see what later packets teach (e.g. RTP set up by SDP found in a later frame).
    """
    if not fields:
        raise ValueError("no fields asked for")
    cmd = _read_args(path, decode_as, rtp_heuristic, prefs)
    if two_pass:
        cmd.append("-2")
    if display_filter:
        cmd += ["-Y", display_filter]
    cmd += ["-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,",
            "-E", "quote=n"]
    for f in fields:
        cmd += ["-e", f]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"tshark failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    rows = []
    for line in proc.stdout.splitlines():
        values = line.split("\t")
        values += [""] * (len(fields) - len(values))
        rows.append(dict(zip(fields, values)))
    return rows


# Link and transport layers dropped from frame.protocols to leave what a flow carried.
_LOWER_LAYERS = {"eth", "ethertype", "sll", "null", "loop", "ip", "ipv6", "udp", "tcp", "data"}


@dataclass(frozen=True)
class Flow:
    """One direction of a UDP or TCP conversation and what tshark found in it."""

    transport: str  # "udp" | "tcp"
    src: str
    sport: int
    dst: str
    dport: int
    protocols: frozenset[str]  # e.g. {"sip", "sdp"}, {"rtp"}, {"rtcp"}, {"stun"}, {"dtls"}
    packets: int

    def __str__(self) -> str:
        return (f"{self.transport} {self.src}:{self.sport} -> {self.dst}:{self.dport} "
                f"{sorted(self.protocols)} x{self.packets}")


def flows(path: Path | str, *, decode_as: Sequence[str] = (), rtp_heuristic: bool = True,
          display_filter: str | None = None) -> list[Flow]:
    """Every UDP/TCP flow (per direction) in ``path`` with the protocols seen in it.

    RTP is found by SDP, by ``decode_as`` rules or (default) by the RTP heuristic.
    """
    fields = ["frame.protocols", "ip.src", "ip.dst", "udp.srcport", "udp.dstport",
              "tcp.srcport", "tcp.dstport"]
    filt = "udp or tcp" if not display_filter else f"(udp or tcp) and ({display_filter})"
    rows = decode(path, filt, fields, decode_as=decode_as, rtp_heuristic=rtp_heuristic)
    table: dict[tuple[str, str, int, str, int], tuple[set[str], int]] = {}
    for row in rows:
        layers = row["frame.protocols"].split(":")
        if row["udp.srcport"]:
            transport, sport, dport = "udp", row["udp.srcport"], row["udp.dstport"]
        elif row["tcp.srcport"]:
            transport, sport, dport = "tcp", row["tcp.srcport"], row["tcp.dstport"]
        else:
            continue
        # ICMP errors carry an inner UDP header: keep the outer ports (the first occurrence).
        key = (transport, row["ip.src"].split(",")[0], int(sport.split(",")[0]),
               row["ip.dst"].split(",")[0], int(dport.split(",")[0]))
        protos, count = table.get(key, (set(), 0))
        protos.update(p for p in layers if p not in _LOWER_LAYERS)
        table[key] = (protos, count + 1)
    return [Flow(k[0], k[1], k[2], k[3], k[4], frozenset(v[0]), v[1]) for k, v in sorted(table.items())]


def protocols_between(path: Path | str, a_port: int, b_port: int, **kwargs: object) -> set[str]:
    """Protocols seen in either direction between two ports (a convenience over ``flows``)."""
    seen: set[str] = set()
    for flow in flows(path, **kwargs):  # type: ignore[arg-type]
        if {flow.sport, flow.dport} == {a_port, b_port}:
            seen |= flow.protocols
    return seen
