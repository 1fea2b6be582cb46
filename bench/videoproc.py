"""Where a benchmark's time and packets go, from /proc: CPU per thread, UDP receive drops per socket.

py-spy is not installed here, and a profiler inside the gateway would change what it measures;
the kernel's per-thread utime + stime is free to read. aiortc and PyAV run codecs and the
DTLS/SRTP work partly in threads of their own (one per decoder, ``ThreadPoolExecutor`` workers),
so the split says how much of a process is its event loop and how much is elsewhere.
"""

from __future__ import annotations

import os


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of ``pid``, keyed ``name`` for the main thread and ``name#tid``
    for the others (Python does not name its threads for the kernel, so most share one name).
    A thread that ended since is gone: read it around a window in which threads live on."""
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    tick = os.sysconf("SC_CLK_TCK")
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                head, _, rest = f.read().rpartition(b")")
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended while we read
        name = head.split(b"(", 1)[1].decode(errors="replace")
        fields = rest.split()  # after the name: state is field 3, utime 14, stime 15 (proc(5))
        out[name if int(tid) == pid else f"{name}#{tid}"] = (int(fields[11]) + int(fields[12])) / tick
    return out


def top_threads(before: dict[str, float], after: dict[str, float], window: float,
                n: int = 4) -> dict[str, float]:
    """The ``n`` thread names that used the most CPU between two :func:`thread_cpu` readings,
    as % of one core over ``window`` seconds."""
    used = {k: after[k] - before.get(k, 0.0) for k in after}
    top = sorted(used.items(), key=lambda kv: kv[1], reverse=True)[:n]
    return {k: round(100 * v / window, 1) for k, v in top if window > 0}


def udp_drops(ports: range | None = None, *, not_host: str | None = None) -> dict[int, int]:
    """The kernel's receive drops (a full socket buffer) of each IPv4 UDP socket, by inode, from
    /proc/net/udp: those bound to a port in ``ports``, or to any address but ``not_host``.
    Read around a window and subtract (:func:`drops_between`) to tell where packets were lost."""
    out: dict[int, int] = {}
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            addr, port = fields[1].split(":")
            if ports is not None and int(port, 16) not in ports:
                continue
            if not_host is not None and addr == _hex_ip(not_host):
                continue
            out[int(fields[9])] = int(fields[12])
    return out


def drops_between(before: dict[int, int], after: dict[int, int]) -> int:
    """Drops of the sockets present in both readings, between them."""
    return sum(after[k] - before[k] for k in after.keys() & before.keys())


def _hex_ip(host: str) -> str:
    """127.0.0.1 -> 0100007F, as /proc/net/udp writes an IPv4 address (host byte order, x86)."""
    return "".join(f"{int(b):02X}" for b in reversed(host.split(".")))
