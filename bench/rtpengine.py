"""rtpengine (Debian ``rtpengine-daemon``) as the C reference, in userspace, driven over ng.

The daemon runs in the foreground as a child of the benchmark with its own
configuration and ports on 127.0.0.1 and no kernel forwarding table
(``--table=-1``), so every packet goes through its userspace SRTP path. Each
stream is one call set up over the ng control protocol (bencode over UDP):
``offer`` from the generator's side (RTP/AVP, PCMU) with
``transport-protocol: RTP/SAVP`` toward the sink, whose ``answer`` (RTP/SAVP)
picks rtpengine's AES_CM_128_HMAC_SHA1_80 SDES key; that key is what the sink
decrypts with.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import bencode

SUITE = "AES_CM_128_HMAC_SHA1_80"
_CRYPTO = re.compile(r"^a=crypto:(\d+) (\S+) inline:([A-Za-z0-9+/=]+)", re.MULTILINE)
_MEDIA_PORT = re.compile(r"^m=audio (\d+) ", re.MULTILINE)


def binary() -> str | None:
    """Path of the rtpengine daemon, or None when it is not installed."""
    return shutil.which("rtpengine") or (
        "/usr/sbin/rtpengine" if os.path.exists("/usr/sbin/rtpengine") else None)


def version() -> str | None:
    exe = binary()
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10, check=False)
    return (out.stdout + out.stderr).strip().removeprefix("Version: ")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NgClient:
    """ng control protocol: ``<cookie> <bencoded dict>`` requests and replies over UDP."""

    def __init__(self, address: tuple[str, int], timeout: float = 5.0) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)
        self._n = 0

    def request(self, command: str, **params: Any) -> dict[str, Any]:
        """Send one command; raise RuntimeError unless rtpengine answers ``result: ok``."""
        self._n += 1
        cookie = f"{os.getpid()}_{self._n}".encode()
        params["command"] = command
        self.sock.sendto(cookie + b" " + bencode.encode(params), self.address)
        while True:
            data = self.sock.recv(65535)
            got, _, body = data.partition(b" ")
            if got == cookie:
                break
        reply = bencode.decode(body)
        if reply.get("result") not in ("ok", "pong"):
            raise RuntimeError(f"rtpengine {command}: {reply}")
        return reply

    def close(self) -> None:
        self.sock.close()


def _sdp(port: int, proto: str, extra: str = "") -> str:
    return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n{extra}")


@dataclass
class RtpEngineRelay:
    """A running rtpengine and the calls set up through it."""

    process: subprocess.Popen[bytes]
    ng: NgClient
    workdir: tempfile.TemporaryDirectory[str]
    ports: list[int]
    keys: list[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def start(cls, *, streams: int, generator: tuple[str, int], sink: tuple[str, int],
              threads: int | None = None) -> RtpEngineRelay:
        """Start the daemon and set up ``streams`` calls generator -> rtpengine -> sink."""
        exe = binary()
        if exe is None:
            raise RuntimeError("rtpengine is not installed (make bench-packages)")
        workdir = tempfile.TemporaryDirectory(prefix="bench-rtpengine-")
        conf = Path(workdir.name) / "rtpengine.conf"
        conf.write_text("[rtpengine]\n")
        ng_port = _free_udp_port()
        # 4 ports per call (RTP+RTCP on each side), plus slack; a range of its own far from the gateway's
        port_min = 40000
        port_max = port_min + 4 * streams + 200
        cmd = [exe, f"--config-file={conf}", "--foreground", "--log-stderr", "--table=-1",
               "--interface=127.0.0.1", f"--listen-ng=127.0.0.1:{ng_port}",
               f"--port-min={port_min}", f"--port-max={port_max}", "--log-level=3",
               "--timeout=3600", "--silent-timeout=3600", "--final-timeout=7200",
               f"--pidfile={workdir.name}/rtpengine.pid"]
        if threads:
            cmd.append(f"--num-threads={threads}")
        log = open(Path(workdir.name) / "rtpengine.log", "wb")  # noqa: SIM115 - lives as long as the daemon
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                   preexec_fn=_raise_nofile)  # noqa: PLW1509 - nothing threaded yet
        ng = NgClient(("127.0.0.1", ng_port), timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                ng.request("ping")
                break
            except (TimeoutError, ConnectionRefusedError, RuntimeError):
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise RuntimeError("rtpengine did not start: "
                                       + (Path(workdir.name) / "rtpengine.log").read_text()[-2000:]) from None
        ng.sock.settimeout(5.0)
        relay = cls(process, ng, workdir, [], [])
        try:
            for i in range(streams):
                relay._call(i, generator, sink)
        except BaseException:
            relay.stop()
            raise
        return relay

    def _call(self, i: int, generator: tuple[str, int], sink: tuple[str, int]) -> None:
        call_id, from_tag, to_tag = f"bench-{i}", f"gen{i}", f"sink{i}"
        offer = self.ng.request("offer", **{
            "call-id": call_id, "from-tag": from_tag, "sdp": _sdp(generator[1], "RTP/AVP"),
            "transport-protocol": "RTP/SAVP", "ICE": "remove", "DTLS": "off",
            "replace": ["origin", "session-connection"]})
        cryptos = {suite: (tag, key) for tag, suite, key in _CRYPTO.findall(offer["sdp"])}
        if SUITE not in cryptos:
            raise RuntimeError(f"rtpengine offered no {SUITE}: {offer['sdp']}")
        tag, key_b64 = cryptos[SUITE]
        sink_key = base64.b64encode(os.urandom(30)).decode()
        answer = self.ng.request("answer", **{
            "call-id": call_id, "from-tag": from_tag, "to-tag": to_tag,
            "sdp": _sdp(sink[1], "RTP/SAVP", f"a=crypto:{tag} {SUITE} inline:{sink_key}\r\n"),
            "ICE": "remove", "replace": ["origin", "session-connection"]})
        port = _MEDIA_PORT.search(answer["sdp"])
        if port is None:
            raise RuntimeError(f"no m=audio in rtpengine's answer: {answer['sdp']}")
        self.ports.append(int(port.group(1)))
        self.keys.append(base64.b64decode(key_b64)[:30])

    def stop(self) -> None:
        """Terminate the daemon (it is our child) and remove its files."""
        self.ng.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.workdir.cleanup()


def die_with_parent() -> None:
    """In a child before exec: SIGTERM it when the benchmark dies (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def _raise_nofile() -> None:
    die_with_parent()
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, 65536), max(hard, 65536)))
    except (ValueError, PermissionError):
        pass
