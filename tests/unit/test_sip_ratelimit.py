"""Per-source flood limits (sip.ratelimit) and their use by the endpoint: 503 + Retry-After
(RFC 3261 21.5.4, 20.33) over the bucket, silence beyond the hard limit, other sources and
established dialogs untouched."""

from __future__ import annotations

import pytest

from sip.ratelimit import Limit, SourceLimiter, Verdict
from sip.testing import CALLER, Harness, in_dialog, invite, options, parsed, statuses


def test_bucket_allows_burst_then_refuses_then_drops_and_refills() -> None:
    lim = SourceLimiter({"INVITE": Limit(rate=2.0, burst=3, hard_limit=2)})
    got = [lim.check("192.0.2.1", "INVITE", 0.0) for _ in range(7)]
    assert got == [Verdict.ALLOW] * 3 + [Verdict.REFUSE] * 2 + [Verdict.DROP] * 2
    assert lim.check("192.0.2.2", "INVITE", 0.0) is Verdict.ALLOW  # per source
    assert lim.check("192.0.2.1", "BYE", 0.0) is Verdict.ALLOW  # unlimited method
    assert lim.check("192.0.2.1", "INVITE", 0.5) is Verdict.ALLOW  # one token per 1/rate s
    assert lim.check("192.0.2.1", "INVITE", 10.0) is Verdict.ALLOW
    assert (lim.refused, lim.dropped) == (2, 2)
    assert lim.retry_after("INVITE") == 1


def test_limit_validates() -> None:
    with pytest.raises(ValueError):
        Limit(rate=0, burst=1)


def test_memory_is_bounded() -> None:
    lim = SourceLimiter({"OPTIONS": Limit(rate=1.0, burst=1)}, max_sources=10)
    for i in range(100):
        lim.check(f"10.0.0.{i}", "OPTIONS", 0.0)
    assert len(lim._buckets) <= 10


def test_endpoint_answers_503_with_retry_after_then_drops() -> None:
    h = Harness()
    h.endpoint.rate_limiter = SourceLimiter({"OPTIONS": Limit(rate=1.0, burst=2, hard_limit=1),
                                             "INVITE": Limit(rate=1.0, burst=1, hard_limit=1)})
    codes = [statuses(h.send(options(branch=f"z9hG4bK-o{i}", call_id=f"o{i}")))
             for i in range(4)]
    assert codes == [[200], [200], [503], []]
    refused = parsed(h.sent)[2]
    assert refused.headers.get("Retry-After") == "1"  # type: ignore[union-attr]
    # INVITEs have their own bucket: the first goes through (100 Trying), the next is refused.
    assert statuses(h.send(invite()))[:1] == [100]
    assert statuses(h.send(invite(call_id="c2", branch="z9hG4bK-2", from_tag="t2"))) == [503]
    # Another source is not affected.
    assert statuses(h.send(options(branch="z9hG4bK-x", call_id="x"), addr=("192.0.2.77", 5060))) \
        == [200]


def test_in_dialog_requests_are_never_limited() -> None:
    h = Harness()
    h.endpoint.rate_limiter = SourceLimiter({"OPTIONS": Limit(rate=1.0, burst=1, hard_limit=0)})
    inv = invite()
    h.send(inv)
    for i in range(5):
        out = statuses(h.send(in_dialog("OPTIONS", inv, "their-tag", 10 + i, f"z9hG4bK-d{i}"), addr=CALLER))
        assert 503 not in out and out  # 481 (no such dialog) or 200, never a flood refusal


def test_rport_response_goes_to_the_nat_binding() -> None:
    """RFC 3581 4: a caller behind NAT (Via names 192.0.2.10:5062, packets come from
    203.0.113.9:40001) gets ``received``/``rport`` filled and the response at the source."""
    h = Harness()
    out = h.send(options(branch="z9hG4bK-nat"), addr=("203.0.113.9", 40001))
    assert out and out[0].addr == ("203.0.113.9", 40001)
    via = parsed(out)[0].headers.get("Via") or ""
    assert "received=203.0.113.9" in via
    # The options() helper has no rport: only received is added (RFC 3261 18.2.1).
    inv = invite(branch="z9hG4bK-nat-inv")
    out = h.send(inv, addr=("203.0.113.9", 40001))
    via = parsed(out)[0].headers.get("Via") or ""
    assert "rport=40001" in via and "received=203.0.113.9" in via
    assert out[0].addr == ("203.0.113.9", 40001)
