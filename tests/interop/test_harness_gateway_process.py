"""The gateway-process harness, checked against a stand-in for ``roomgate run``.

The stand-in reads the generated gateway.yaml and policy.yaml, listens where they say, answers
/healthz, writes JSON log events to stderr and stops on SIGTERM, which is all the harness relies
on. Tests of the real gateway use the same harness through the ``gateway_factory`` fixture.
"""

from __future__ import annotations

import socket
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.support.gateway_process import running_gateway

pytestmark = pytest.mark.interop

STAND_IN = textwrap.dedent('''
    import http.server, json, signal, socket, sys, yaml
    assert sys.argv[1:3] == ["run", "--config"], sys.argv
    cfg = yaml.safe_load(open(sys.argv[3]))
    policy = yaml.safe_load(open(cfg["policy"]))
    def log(event, **kw):
        print(json.dumps({"event": event, "level": "info", **kw}), file=sys.stderr, flush=True)
    print("a line that is not JSON", file=sys.stderr, flush=True)
    host, port = cfg["sip"]["udp"].rsplit(":", 1)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind((host, int(port)))
    tcp = socket.socket(); tcp.bind(tuple(cfg["sip"]["tcp"].rsplit(":", 1)[:1]) + (int(port),))
    tcp.listen()
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/healthz" else 404); self.end_headers()
            self.wfile.write(b"ok")
        def log_message(self, *a): pass
    h, p = cfg["http"]["listen"].rsplit(":", 1)
    server = http.server.HTTPServer((h, int(p)), H)
    def stop(*_):
        log("gateway.stopped")
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)
    log("gateway.ready", media=cfg["media"]["ports"], unknown=policy["unknown_meetings"],
        meetings=sorted(policy["meetings"]), log_format=cfg["log"]["format"])
    server.serve_forever()
''')


def test_gateway_process_harness_with_a_stand_in(tmp_path: Path) -> None:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    policy = {"unknown_meetings": "reject", "meetings": {1001: {"legacy_media": "require-srtp"}}}
    with running_gateway(tmp_path / "gw", policy=policy, command=[sys.executable, str(script)]) as gw:
        assert gw.get("/healthz")[0] == 200
        assert gw.sip_uri("1001") == f"sip:1001@127.0.0.1:{gw.sip_port}"
        assert gw.sip_uri("1001", "tcp").endswith(";transport=tcp")
        low, high = gw.media_ports[0], gw.media_ports[-1]
        assert 30000 <= low and high <= 39999 and len(gw.media_ports) == 200
        ready = gw.wait_for_event("gateway.ready")
        assert ready["media"] == f"{low}-{high}"
        assert ready["unknown"] == "reject" and ready["meetings"] == ["1001"]
        assert ready["log_format"] == "json"
        # The SIP port is really held by the process, for UDP and TCP.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(OSError):
            s.bind(("127.0.0.1", gw.sip_port))
        written = yaml.safe_load(gw.policy_path.read_text())
        assert written["version"] == 1 and written["meetings"] == {"1001": {"legacy_media": "require-srtp"}}
        assert written["defaults"] == {"legacy_media": "allow-plain", "protocols": ["sip", "h323"]}
    assert gw.proc.returncode == 0  # stopped by SIGTERM, cleanly
    assert gw.events("gateway.stopped")
    assert all("event" in e for e in gw.log_lines())


def test_gateway_process_harness_reports_a_start_failure(tmp_path: Path) -> None:
    script = tmp_path / "dies.py"
    script.write_text("import sys; print('config refused: line 3', file=sys.stderr); sys.exit(2)")
    with pytest.raises(RuntimeError, match="config refused: line 3"), \
            running_gateway(tmp_path / "gw", command=[sys.executable, str(script)]):
        pass


def test_two_gateways_get_disjoint_ports(gateway_factory, tmp_path: Path) -> None:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    a = gateway_factory(command=[sys.executable, str(script)])
    b = gateway_factory(command=[sys.executable, str(script)])
    assert not set(a.media_ports) & set(b.media_ports)
    assert len({a.sip_port, a.http_port, b.sip_port, b.http_port}) == 4
