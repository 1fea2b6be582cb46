"""Keyframe requests reach an H.323 caller (issue 5, "done when" 5).

The H.323 transport (``H323Service``, the real Twisted code on loopback) runs in a child process
with a small handler that answers the call and then asks for a keyframe the way
``H323CallController.request_keyframe`` does (``conn.request_keyframe()``).  The project's H.323
caller must receive H.245 ``miscellaneousCommand`` (videoFastUpdatePicture), tunnelled or on the
separate H.245 connection, although no video channel is open yet.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.h323_caller import run_h323_call

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent('''
    import json
    from gateway.loop import install_reactor
    reactor = install_reactor()
    from h323.call import choose_fast_start
    from h323.transport import H323Service

    def say(**kw):
        print(json.dumps(kw), flush=True)

    def keyframe(conn):
        say(event="keyframe", sent=conn.request_keyframe())

    class Handler:
        def incoming_call(self, conn, offer):
            choice = choose_fast_start(offer.fast_start, ("PCMU", "PCMA"))
            conn.accept(local_rtp=("127.0.0.1", 30000), fast_start=choice)
            if choice is not None:
                reactor.callLater(0.5, keyframe, conn)
        def media_ready(self, conn, media):
            reactor.callLater(0.2, keyframe, conn)
        def dtmf(self, conn, event):
            pass
        def call_released(self, conn, event):
            say(event="released", by=event.by)

    service = H323Service(reactor, Handler())
    port = service.listen("127.0.0.1", 0)
    say(event="ready", port=port.getHost().port)
    reactor.callLater(120, reactor.stop)
    reactor.run()
''')


@pytest.fixture(scope="module")
def h323_child() -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                ready = json.loads(line)
                if ready.get("event") == "ready":
                    break
        else:
            pytest.fail("the H.323 child did not start")
        yield proc, int(ready["port"])
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize(("fast_start", "tunnelling"), [(True, True), (True, False), (False, True), (False, False)])
def test_keyframe_request_reaches_the_caller(h323_child: tuple[subprocess.Popen[str], int],
                                             fast_start: bool, tunnelling: bool) -> None:
    _proc, port = h323_child
    result = run_h323_call("127.0.0.1", port, "5000", fast_start=fast_start, tunnelling=tunnelling,
                           seconds=2.0, timeout=30)
    assert result.connected and result.error is None, result
    assert "miscellaneousCommand" in result.h245, result.h245
