"""H.245 commands from a caller reach the application (issue 5, slices 1 and 2).

The project's H.323 caller, once media flows, sends ``flowControlCommand`` (384 kbit/s on channel
2) and ``miscellaneousCommand videoFastUpdatePicture`` to the real gateway, tunnelled or on the
separate H.245 connection.  The gateway must decode both into its controller (``h323.flow_control``
with the right scope and rate; ``h323.keyframe.received`` through the keyframe translator), answer
neither (no functionNotUnderstood: they are commands), and the call must go on carrying media --
measured both ways.  The call has no video channel, so the limit is logged, not applied.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from h323 import h245
from tests.interop.test_h323_calls import (
    POLICY,
    H323Gateway,
    h323_call_with_webrtc_peer,
)
from tests.interop.test_walking_skeleton import (
    BROWSER_HZ,
    CALLER_HZ,
    run_on_private_loop,
)
from tests.support.audio import assert_tone
from tests.support.gateway_process import free_tcp_port, start_gateway

pytestmark = pytest.mark.interop

COMMANDS = (h245.FlowControlCommand("logicalChannelNumber", 2, 3840), h245.VideoFastUpdatePicture(2))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[H323Gateway]:
    port = free_tcp_port()
    gw = start_gateway(tmp_path_factory.mktemp("h323-commands"), policy=POLICY,
                       config={"h323": {"listen": f"127.0.0.1:{port}"}})
    try:
        yield H323Gateway(gw, port)
    finally:
        gw.stop()


@pytest.mark.parametrize(("tunnelling", "meeting"), [(True, "3501"), (False, "3502")])
def test_flow_control_and_fast_update_from_the_caller(gateway: H323Gateway, tunnelling: bool, meeting: str) -> None:
    result, heard = run_on_private_loop(h323_call_with_webrtc_peer(
        gateway, meeting, seconds=3.0, fast_start=False, tunnelling=tunnelling, commands=COMMANDS))
    assert result.connected and result.error is None, result
    assert "sent:flowControlCommand" in result.h245 and "sent:miscellaneousCommand" in result.h245, result.h245
    assert "functionNotUnderstood" not in result.h245, result.h245  # commands are never answered
    assert_tone(heard, 48000, CALLER_HZ, min_dbfs=-35, skip_seconds=0.2)
    samples, rate = result.recording()
    assert_tone(samples, rate, BROWSER_HZ, min_dbfs=-35, skip_seconds=1.0)
    gw = gateway.gw
    answered = gw.wait_for_event("call.answered", meeting=meeting)
    flow = gw.wait_for_event("h323.flow_control", meeting=meeting)
    assert flow["call"] == answered["call"]
    assert (flow["scope"], flow["target"], flow["maximum_bps"]) == ("logicalChannelNumber", 2, 384_000)
    assert flow["applied"] is False  # no video channel on this call
    keyframe = gw.wait_for_event("h323.keyframe.received", meeting=meeting)
    assert keyframe["channel"] == 2 and keyframe["forced"] is False
