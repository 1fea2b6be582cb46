"""SipService on real loopback sockets (UDP and TCP), on the asyncio reactor.

The reactor can be installed once per process, so the service runs in a child
process (``gateway.loop.install_reactor()`` there) and reports its bound ports
and the handler's callbacks as JSON lines on stdout; this test speaks SIP to it
with plain sockets.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent('''
    import json, sys
    from gateway.loop import install_reactor
    reactor = install_reactor()
    from sip.transport import SipService
    from sip.offer_answer import build_answer, choose_audio

    def say(**kw):
        print(json.dumps(kw), flush=True)

    class Handler:
        def incoming_call(self, call):
            say(event="incoming", call_id=call.call_id, user=call.request_uri.user,
                transport=call.transport, display=call.from_display)
            call.ring()
            answer = build_answer(call.offer, choose_audio(call.offer), "127.0.0.1", 30000)
            reactor.callLater(0.05, call.accept, str(answer))
        def call_ended(self, call, reason):
            say(event="ended", call_id=call.call_id, reason=reason.value)

    service = SipService(reactor, Handler())
    udp = service.listen_udp("127.0.0.1", 0)
    tcp = service.listen_tcp("127.0.0.1", 0)
    say(event="ready", udp=udp.getHost().port, tcp=tcp.getHost().port)
    reactor.callLater(60, reactor.stop)
    reactor.run()
''')

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)


class Child:
    """The SipService process and its JSON lines."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[dict[str, object]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def next(self, timeout: float = 10.0) -> dict[str, object]:
        return self.lines.get(timeout=timeout)


@pytest.fixture(scope="module")
def child(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Child]:
    script = tmp_path_factory.mktemp("sip") / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    c = Child(proc)
    try:
        yield c
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def ports(child: Child) -> dict[str, int]:
    ready = child.next(timeout=30)
    assert ready["event"] == "ready"
    return {"udp": int(ready["udp"]), "tcp": int(ready["tcp"])}  # type: ignore[call-overload]


def request(method: str, port: int, transport: str, local_port: int, call_id: str,
            cseq: int, branch: str, to_tag: str = "", body: str = "") -> bytes:
    to = "<sip:room7@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:room7@127.0.0.1:{port} SIP/2.0",
        f"Via: SIP/2.0/{transport} 127.0.0.1:{local_port};branch={branch};rport",
        "Max-Forwards: 70",
        "From: \"Loop\" <sip:loop@127.0.0.1>;tag=lt1",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:loop@127.0.0.1:{local_port};transport={transport.lower()}>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


class UdpPeer:
    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = port
        self.local = self.sock.getsockname()[1]

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, ("127.0.0.1", self.port))

    def recv(self) -> bytes:
        return self.sock.recvfrom(65535)[0]


class TcpPeer:
    def __init__(self, port: int) -> None:
        from sip.framing import StreamFramer

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.local = self.sock.getsockname()[1]
        self.framer = StreamFramer()
        self.pending: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> bytes:
        while not self.pending:
            chunk = self.sock.recv(65535)
            assert chunk, "connection closed"
            self.pending.extend(self.framer.feed(chunk))
        return self.pending.pop(0)


def recv_status(peer: UdpPeer | TcpPeer, want: int, method: str = "INVITE") -> bytes:
    """Read until a ``want`` response to ``method`` (provisionals and 2xx repeats skipped)."""
    for _ in range(20):
        data = peer.recv()
        if data.startswith(f"SIP/2.0 {want} ".encode()) and f" {method}\r\n".encode() in data:
            return data
        assert data.startswith((b"SIP/2.0 1", b"SIP/2.0 200 ")), data[:60]
    raise AssertionError(f"no {want} to {method}")


def test_options_over_udp(ports: dict[str, int]) -> None:
    peer = UdpPeer(ports["udp"])
    peer.send(request("OPTIONS", ports["udp"], "UDP", peer.local, "opt-loop", 1, "z9hG4bKo1"))
    data = recv_status(peer, 200, "OPTIONS")
    assert b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS" in data
    assert f"rport={peer.local}".encode() in data


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_invite_ack_bye(ports: dict[str, int], child: Child, transport: str) -> None:
    from sip.message import parse_message

    port = ports[transport]
    peer: UdpPeer | TcpPeer = UdpPeer(port) if transport == "udp" else TcpPeer(port)
    t = transport.upper()
    call_id = f"loop-{transport}"
    peer.send(request("INVITE", port, t, peer.local, call_id, 1, f"z9hG4bKi{transport}",
                      body=SDP))
    assert peer.recv().startswith(b"SIP/2.0 100 ")
    ev = child.next()
    assert ev == {"event": "incoming", "call_id": call_id, "user": "room7",
                  "transport": transport, "display": "Loop"}
    ok = parse_message(recv_status(peer, 200))
    assert b"m=audio 30000 RTP/AVP 8 101" in ok.body
    contact = ok.headers.get("Contact") or ""
    assert f"127.0.0.1:{port};transport={transport}" in contact
    tag = ok.to_addr.tag or ""
    peer.send(request("ACK", port, t, peer.local, call_id, 1, f"z9hG4bKa{transport}",
                      to_tag=tag))
    peer.send(request("BYE", port, t, peer.local, call_id, 2, f"z9hG4bKb{transport}",
                      to_tag=tag))
    bye_ok = parse_message(recv_status(peer, 200, "BYE"))
    assert bye_ok.cseq == (2, "BYE")
    assert child.next() == {"event": "ended", "call_id": call_id, "reason": "remote-bye"}
