"""gateway/h323_ras.py without sockets: ARJ -> release reasons, and an ACF that arrives after
the call ended still gets its DRQ."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from gateway.h323_ras import RasRegistration, alias_for, release_for_arj
from h323 import ras
from h323.call import CallOffered
from h323.h225 import Alias, TransportAddress
from h323.ras_client import RasClient

GK = ("127.0.0.1", 1719)
SIG = TransportAddress("127.0.0.1", 1720)


class FakeReactor:
    def seconds(self) -> float:
        return 100.0


class Controller:
    def __init__(self) -> None:
        self.released: list[Any] = []

    def release_call(self, key: Any, *, by: str) -> bool:
        self.released.append((key, by))
        return True


def offer() -> CallOffered:
    return CallOffered(call_reference=5, call_identifier=bytes(16), called_number="1000", destination_aliases=(),
                       source_aliases=(), calling_number=None, display=None, source=None, fast_start=(),
                       fast_start_proposed=False, tunnelling=True)


def registered_client() -> RasClient:
    c = RasClient(gatekeeper=GK, ras_address=TransportAddress("127.0.0.1", 11719), call_signal_address=SIG,
                  rng=random.Random(3))
    c.state, c.endpoint_identifier = "registered", "ep1"
    return c


def test_release_reasons_for_arj() -> None:
    assert release_for_arj("requestDenied") == ("noPermission", 21)
    assert release_for_arj("calledPartyNotRegistered") == ("calledPartyNotRegistered", 1)
    assert release_for_arj("timeout") == ("unreachableGatekeeper", 41)
    assert release_for_arj("somethingNew") == ("gatekeeperResources", 47)
    assert alias_for("1000#") == Alias("dialledDigits", "1000#") and alias_for("rg") == Alias("h323-ID", "rg")


def test_arq_uses_the_called_number_and_a_late_acf_gets_a_drq() -> None:
    client = registered_client()
    reg = RasRegistration(FakeReactor(), client, Controller())

    async def scenario() -> None:
        task = asyncio.ensure_future(reg.admit(7, offer()))
        await asyncio.sleep(0)
        [arq] = [m for m in client._pending.values() if m.what == "arq"]
        assert [a.value for a in arq.msg.aliases("destinationInfo")] == ["1000"]
        reg.disengage(7)  # the caller hung up while the ARQ was out
        await asyncio.sleep(0)
        assert task.cancelled()
        reg.endpoint.datagramReceived(ras.admission_confirm(arq.msg.request_seq_num, SIG).encode(), GK)

    asyncio.run(scenario())
    assert client.sent == ["ARQ", "DRQ"]


def test_arj_becomes_a_release_reason() -> None:
    client = registered_client()
    reg = RasRegistration(FakeReactor(), client, Controller())

    async def scenario() -> Any:
        task = asyncio.ensure_future(reg.admit(8, offer()))
        await asyncio.sleep(0)
        [arq] = list(client._pending.values())
        reg.endpoint.datagramReceived(ras.reject("admissionRequest", arq.msg.request_seq_num,
                                                 "requestDenied").encode(), GK)
        return await task

    assert asyncio.run(scenario()) == ("noPermission", 21, "requestDenied")


def test_gatekeeper_drq_releases_the_call() -> None:
    client = registered_client()
    controller = Controller()
    reg = RasRegistration(FakeReactor(), client, controller)

    async def scenario() -> None:
        task = asyncio.ensure_future(reg.admit(9, offer()))
        await asyncio.sleep(0)
        [arq] = list(client._pending.values())
        reg.endpoint.datagramReceived(ras.admission_confirm(arq.msg.request_seq_num, SIG).encode(), GK)
        assert await task is None
        reg.endpoint.datagramReceived(ras.disengage_request(50, "ep1", bytes(16), bytes(16), 5).encode(), GK)

    asyncio.run(scenario())
    assert controller.released == [(9, "gatekeeper")]
