"""The quota semantics of tests/unit/billing/test_quotas.py, on the real Redis at 127.0.0.1:6379."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import redis

from billing.quotas import QuotaStore, RedisQuotaStore
from tests.unit.billing.test_quotas import *  # noqa: F403

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def store() -> Iterator[QuotaStore]:
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
