"""RetryPolicy delays and map_bounded ordering, without a server."""

from __future__ import annotations

import pytest

from nla_lightning.writers.http import RequestRejectedError, RetryPolicy, map_bounded


def test_backoff_doubles_and_is_capped():
    policy = RetryPolicy(backoff_s=0.5, max_backoff_s=3.0, jitter=False)
    assert [policy.delay(a) for a in range(4)] == [0.5, 1.0, 2.0, 3.0]


def test_jitter_stays_within_half_to_full_delay():
    policy = RetryPolicy(backoff_s=1.0, jitter=True)
    delays = [policy.delay(1) for _ in range(50)]
    assert all(1.0 <= d <= 2.0 for d in delays) and len(set(delays)) > 1


def test_retry_after_wins_and_is_capped():
    policy = RetryPolicy(backoff_s=10.0, max_retry_after_s=5.0, jitter=True)
    assert policy.delay(0, retry_after=0.25) == 0.25
    assert policy.delay(0, retry_after=100.0) == 5.0


def test_map_bounded_keeps_order_and_returns_exceptions():
    def fn(x: int) -> int:
        if x == 2:
            raise RuntimeError("boom")
        return x * 10

    done: list[int] = []
    out = map_bounded(fn, [0, 1, 2, 3], concurrency=2, on_done=done.append)
    assert out[:2] == [0, 10] and out[3] == 30
    assert isinstance(out[2], RuntimeError)
    assert sum(done) == 4


def test_map_bounded_raises_fatal_rejections():
    def fn(x: int) -> int:
        raise RequestRejectedError("HTTP 401", 401)

    with pytest.raises(RequestRejectedError):
        map_bounded(fn, [0, 1, 2], concurrency=1)
