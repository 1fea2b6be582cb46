"""``install_reactor(event_loop)`` in child interpreters (installing a reactor is process-global).

Each child installs the reactor on the loop asked for and proves Twisted really runs on
it: a UDP datagram sent through a Twisted ``listenUDP`` port on 127.0.0.1 comes back to
an asyncio datagram endpoint of the same loop, and a ``callLater`` fires.  A fake
``uvloop`` module that raises ImportError, first on ``PYTHONPATH``, stands for a
machine without the wheel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import asyncio, json, sys
from structlog.testing import capture_logs
from gateway.loop import install_reactor, loop_kind

with capture_logs() as logs:
    reactor = install_reactor(sys.argv[1])
from twisted.internet.protocol import DatagramProtocol

loop = reactor._asyncioEventloop
assert asyncio.get_event_loop() is loop
assert install_reactor("asyncio") is reactor  # idempotent: the installed one, whatever asked

class Echo(DatagramProtocol):
    def datagramReceived(self, data, addr):
        self.transport.write(data[::-1], addr)

async def main():
    port = reactor.listenUDP(0, Echo(), interface="127.0.0.1")
    got = loop.create_future()
    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            got.set_result(data)
    transport, _ = await loop.create_datagram_endpoint(
        Client, remote_addr=("127.0.0.1", port.getHost().port))
    transport.sendto(b"roomgate")
    echoed = await asyncio.wait_for(got, 5)
    later = loop.create_future()
    reactor.callLater(0.01, later.set_result, "fired")
    fired = await asyncio.wait_for(later, 5)
    transport.close()
    stopped = port.stopListening()
    if stopped is not None:
        await stopped.asFuture(loop)
    return echoed.decode(), fired

echoed, fired = loop.run_until_complete(main())
started = [e for e in logs if e["event"] == "gateway.loop.started"]
print(json.dumps({"kind": loop_kind(loop), "type": type(loop).__module__, "echoed": echoed,
                  "fired": fired, "started": [e["event_loop"] for e in started],
                  "warned": [e["event"] for e in logs if e["event"] == "gateway.loop.uvloop_missing"]}))
"""


def _fake_uvloop_dir(tmp_path: Path) -> Path:
    fake = tmp_path / "no_uvloop"
    fake.mkdir()
    (fake / "uvloop.py").write_text('raise ImportError("uvloop is not installed (test stand-in)")\n')
    return fake


def _child(choice: str, *, without_uvloop: Path | None = None) -> subprocess.CompletedProcess[str]:
    paths = [str(without_uvloop)] if without_uvloop else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, str(ROOT)])}
    return subprocess.run([sys.executable, "-c", CHILD, choice], check=False, capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=60)


@pytest.mark.parametrize(("choice", "kind"), [("auto", "uvloop"), ("uvloop", "uvloop"),
                                               ("asyncio", "asyncio")])
def test_twisted_runs_on_the_loop_asked_for(choice: str, kind: str) -> None:
    done = _child(choice)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    print(choice, out)
    assert out["kind"] == kind and out["type"].split(".")[0] == kind
    assert out["echoed"] == "etagmoor" and out["fired"] == "fired"
    assert out["started"] == [kind] and out["warned"] == []


def test_auto_without_uvloop_runs_on_asyncio_and_warns(tmp_path: Path) -> None:
    done = _child("auto", without_uvloop=_fake_uvloop_dir(tmp_path))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["kind"] == "asyncio" and out["echoed"] == "etagmoor"
    assert out["started"] == ["asyncio"] and out["warned"] == ["gateway.loop.uvloop_missing"]


def test_explicit_uvloop_without_it_fails_typed(tmp_path: Path) -> None:
    done = _child("uvloop", without_uvloop=_fake_uvloop_dir(tmp_path))
    assert done.returncode != 0
    assert "EventLoopUnavailable" in done.stderr and "runtime.event_loop" in done.stderr


def test_config_check_refuses_uvloop_when_missing(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text((ROOT / "config" / "policy.yaml").read_text())
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text('sip: {udp: "127.0.0.1:5060"}\npolicy: policy.yaml\nruntime: {event_loop: uvloop}\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_fake_uvloop_dir(tmp_path)), str(ROOT)])}
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "config", "check", str(cfg)],
                          check=False, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"{cfg}:3:" in done.stderr and "uvloop cannot be imported" in done.stderr, done.stderr


@pytest.mark.parametrize("choice", ["uvloop", "asyncio"])
def test_bench_core_process_follows_the_choice(choice: str) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "bench.core_process", "--event-loop", choice],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:"), line
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    started = [json.loads(x) for x in err.splitlines() if '"gateway.loop.started"' in x]
    assert [e["event_loop"] for e in started] == [choice], err
