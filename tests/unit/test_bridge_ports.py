"""The port allocator hands out even RTP ports with RTP+1 held, skips ports others hold, and
reuses released ports last. Sockets are faked: the binder records what would be bound."""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import pytest

from bridge.ports import NoFreePort, PortAllocator, parse_port_range


class FakeSocket:
    def __init__(self, binder: FakeBinder, port: int) -> None:
        self.binder, self.port, self.closed = binder, port, False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.binder.bound.discard(self.port)


class FakeBinder:
    """Stands in for ``bind_udp``: refuses ports held elsewhere or already bound."""

    def __init__(self, taken_elsewhere: set[int] | None = None, error: int = errno.EADDRINUSE) -> None:
        self.taken = taken_elsewhere or set()
        self.bound: set[int] = set()
        self.error = error

    def __call__(self, address: str, port: int) -> Any:
        if port in self.taken or port in self.bound:
            raise OSError(self.error, "in use")
        self.bound.add(port)
        return FakeSocket(self, port)


def test_even_rtp_port_with_rtcp_neighbour_bound() -> None:
    binder = FakeBinder()
    alloc = PortAllocator(20001, 20009, address="127.0.0.1", bind=binder)
    lease = alloc.allocate()
    assert lease.rtp_port == 20002 and lease.rtcp_port == 20003
    assert binder.bound == {20002, 20003} and alloc.in_use == 1


def test_range_exhaustion_and_release() -> None:
    binder = FakeBinder()
    alloc = PortAllocator(20000, 20005, address="127.0.0.1", bind=binder)  # pairs 20000, 20002, 20004
    assert alloc.capacity == 3
    leases = [alloc.allocate() for _ in range(3)]
    assert sorted(lease.rtp_port for lease in leases) == [20000, 20002, 20004]
    with pytest.raises(NoFreePort, match="20000-20005"):
        alloc.allocate()
    leases[1].release()
    leases[1].release()  # idempotent
    assert binder.bound == {20000, 20001, 20004, 20005} and alloc.in_use == 2
    assert alloc.allocate().rtp_port == 20002


def test_last_odd_port_beyond_range_is_not_used() -> None:
    # 20004's RTCP would be 20005, outside 20000-20004.
    alloc = PortAllocator(20000, 20004, address="127.0.0.1", bind=FakeBinder())
    assert alloc.capacity == 2


def test_ports_held_by_other_processes_are_skipped() -> None:
    binder = FakeBinder(taken_elsewhere={20000, 20003})  # an RTP port, and another pair's RTCP port
    alloc = PortAllocator(20000, 20007, address="127.0.0.1", bind=binder)
    assert alloc.allocate().rtp_port == 20004
    assert binder.bound == {20004, 20005}  # the half-bound 20002 was closed again


def test_released_ports_are_reused_last() -> None:
    alloc = PortAllocator(20000, 20007, address="127.0.0.1", bind=FakeBinder())
    first = alloc.allocate()
    first.release()
    assert [alloc.allocate().rtp_port for _ in range(3)] == [20002, 20004, 20006]
    assert alloc.allocate().rtp_port == 20000


def test_unexpected_bind_errors_surface() -> None:
    alloc = PortAllocator(20000, 20007, address="192.0.2.1", bind=FakeBinder({20000}, errno.EADDRNOTAVAIL))
    with pytest.raises(OSError):
        alloc.allocate()


def test_range_parsing_and_validation() -> None:
    assert parse_port_range("20000-29999") == (20000, 29999)
    alloc = PortAllocator.from_range("20000-29999", address="127.0.0.1", bind=FakeBinder())
    assert alloc.capacity == 5000
    for bad in ("20000", "a-b", "1-2-3"):
        with pytest.raises(ValueError):
            parse_port_range(bad)
    for low, high in ((30000, 20000), (0, 10), (20000, 20000), (20001, 20002), (60000, 70000)):
        with pytest.raises(ValueError):
            PortAllocator(low, high, address="127.0.0.1", bind=FakeBinder())


# -- a release while the sockets are being attached to the loop (real sockets, real loop) -------

class _Counting(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.made = self.lost = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost += 1


@pytest.mark.parametrize("release_after_steps", [0, 1, 2, 3])
def test_a_release_during_attach_waits_for_it_then_closes_everything(release_after_steps: int) -> None:
    """The caller hangs up while its leg starts: wherever the release lands (before the attach
    ran, between its steps), no descriptor is registered after it was closed (no loop error),
    every transport made ends, the sockets close and the pair goes back to the allocator."""
    errors: list[dict[str, Any]] = []

    async def scenario() -> tuple[Any, list[_Counting], PortAllocator, Any]:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        allocator = PortAllocator(40000, 40999, address="127.0.0.1")
        lease = allocator.allocate()
        protocols = [_Counting(), _Counting()]
        attach = asyncio.ensure_future(lease.attach(lambda: protocols[0], lambda: protocols[1]))
        for _ in range(release_after_steps):
            await asyncio.sleep(0)
        lease.release()
        result = await attach
        for _ in range(5):
            await asyncio.sleep(0)  # let connection_lost run
        return result, protocols, allocator, lease

    result, protocols, allocator, lease = asyncio.run(scenario())
    assert errors == []
    assert result is None
    assert [p.lost for p in protocols] == [p.made for p in protocols]  # every transport made ended
    assert lease.rtp_socket.fileno() == -1 and lease.rtcp_socket.fileno() == -1
    assert allocator.in_use == 0


def test_attach_then_release_is_the_plain_case() -> None:
    async def scenario() -> tuple[Any, PortAllocator, Any]:
        allocator = PortAllocator(40000, 40999, address="127.0.0.1")
        lease = allocator.allocate()
        pair = await lease.attach(asyncio.DatagramProtocol, asyncio.DatagramProtocol)
        assert pair is not None and allocator.in_use == 1
        for transport in pair:
            transport.close()
        lease.release()
        lease.release()  # idempotent
        return pair, allocator, lease

    _, allocator, lease = asyncio.run(scenario())
    assert allocator.in_use == 0 and lease.rtp_socket.fileno() == -1


def test_a_receive_buffer_is_granted_up_to_the_kernel_cap() -> None:
    """Linux grants min(request, net.core.rmem_max) and reports it doubled (socket(7))."""
    from pathlib import Path

    allocator = PortAllocator(40000, 40999, address="127.0.0.1")
    lease = allocator.allocate()
    try:
        cap = int(Path("/proc/sys/net/core/rmem_max").read_text())
        request = 1024 * 1024
        assert lease.set_receive_buffer(request) == 2 * min(request, cap)
    finally:
        lease.release()
