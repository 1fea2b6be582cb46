"""The benchmarks' source-address pool keeps every loopback address within its INVITE budget,
however many calls ask for one at once (bench/callrig.py ``SourcePool``)."""

from __future__ import annotations

import asyncio
from collections import Counter

from bench.callrig import SOURCE_BURST, SourcePool


def test_concurrent_takes_never_put_more_than_the_budget_on_one_address() -> None:
    async def takes(n: int) -> list[str]:
        pool = SourcePool()
        try:
            first = await asyncio.gather(*(pool.take() for _ in range(n)))
            second = await asyncio.gather(*(pool.take() for _ in range(n)))  # within the same window
            return [u.host for u in (*first, *second)]
        finally:
            await pool.close()

    hosts = asyncio.run(takes(12))
    per_address = Counter(hosts)
    assert max(per_address.values()) <= SOURCE_BURST, per_address
    assert all(h.startswith("127.0.") for h in hosts)
