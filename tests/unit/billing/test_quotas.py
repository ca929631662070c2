"""Quota semantics, shared by the in-process store and the Redis store.

``store`` is each in turn: the in-process store (``[memory]``) and the real Redis at
127.0.0.1:6379 (``[redis]``, an integration test; its keys under a random prefix, deleted after).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis

from billing.quotas import Limit, MemoryQuotaStore, QuotaStore, RedisQuotaStore, period

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC).timestamp()


REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest) -> Iterator[QuotaStore]:
    if request.param == "memory":
        yield MemoryQuotaStore()
        return
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as e:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {e}")
    prefix = f"citybrain-test:{secrets.token_hex(4)}:"
    s = RedisQuotaStore(REDIS_URL, prefix=prefix)
    yield s
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    s.close()


def test_rate_limit_allows_a_burst_then_refills(store: QuotaStore) -> None:
    limit = Limit("b1", "requests", "second", 5)
    assert [store.acquire([limit], T0).allowed for _ in range(6)] == [True] * 5 + [False]
    refused = store.acquire([limit], T0)
    assert refused.refused_by == limit and 0 < refused.retry_after_s <= 0.2 + 1e-9
    assert refused.retry_after_header == "1"
    assert store.acquire([limit], T0 + 0.2).allowed  # one token back after 1/5 s
    assert not store.acquire([limit], T0 + 0.2).allowed


def test_per_minute_rate_holds_over_time(store: QuotaStore) -> None:
    limit = Limit("b2", "requests", "minute", 60)
    allowed = sum(store.acquire([limit], T0 + i * 0.1).allowed for i in range(1200))  # 2 minutes
    # 60 up front, then one per second for the remaining ~120 s.
    assert 175 <= allowed <= 181


def test_a_refused_call_takes_nothing_from_the_other_limits(store: QuotaStore) -> None:
    wide = Limit("wide", "requests", "minute", 100)
    narrow = Limit("narrow", "requests", "second", 1)
    assert store.acquire([wide, narrow], T0).allowed
    for _ in range(10):
        decision = store.acquire([wide, narrow], T0)
        assert not decision.allowed and decision.refused_by == narrow
    # Only one request was taken from the wide bucket: 99 remain.
    assert sum(store.acquire([wide], T0).allowed for _ in range(200)) == 99


def test_daily_request_budget_resets_at_midnight_utc(store: QuotaStore) -> None:
    limit = Limit("d", "requests", "day", 3)
    assert [store.acquire([limit], T0).allowed for _ in range(4)] == [True, True, True, False]
    refused = store.acquire([limit], T0)
    assert refused.retry_after_s == pytest.approx(14 * 3600)  # 10:00 → midnight
    assert store.acquire([limit], T0 + 14 * 3600 + 1).allowed


def test_unit_budget_is_checked_before_and_counted_after(store: QuotaStore) -> None:
    budget = Limit("u", "units", "month", 100, label="tenant parkeasy")
    assert store.acquire([budget], T0).allowed
    store.add_units([budget], 60, T0)
    assert store.acquire([budget], T0).allowed  # 60 used < 100: one more call may run
    store.add_units([budget], 45, T0)  # the call's units are known only afterwards
    refused = store.acquire([budget], T0)
    assert not refused.allowed and refused.refused_by == budget
    assert budget.describe() == "100 units per month (tenant parkeasy)"
    december = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC).timestamp()
    assert store.acquire([budget], december).allowed


def test_periods_are_calendar_periods() -> None:
    assert period("day", T0)[0] == "2026-11-26"
    label, remaining = period("month", T0)
    assert label == "2026-11" and remaining == pytest.approx((4 * 24 + 14) * 3600)


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="units are limited per day or month"):
        Limit("x", "units", "second", 1)
    with pytest.raises(ValueError, match="positive"):
        Limit("x", "requests", "minute", 0)
