"""Two gateway processes share one rate limit through Redis.

Both serve the same PostgreSQL database and artifacts, each with its own usage spool, and keep
their quota buckets in the Redis server at 127.0.0.1:6379. Calls alternate between them; the
number allowed must match one token bucket — the limit plus what refilled while the test ran —
within 5 % of the limit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from model_store import BlobStore
from tests.utils.city import migrate_and_seed
from tests.utils.server import platform_server

REDIS_URL = "redis://127.0.0.1:6379/0"
MODEL = "traffic-police.flow-smoother"
LIMIT_PER_MINUTE = 100
BODY = {
    "inputs": [{"name": "flow", "datatype": "FP32", "shape": [1, 6], "data": [1, 2, 3, 4, 5, 6]}]
}


@pytest.fixture
def two_gateways(database_url: str, tmp_path: Path) -> Iterator[tuple[list[str], dict[str, str]]]:
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as e:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {e}")
    data_dir = tmp_path / "var"
    keys = migrate_and_seed(database_url, blobs=BlobStore(str(data_dir / "artifacts"))).keys
    env = {"CITYBRAIN_GATEWAY__QUOTA_REDIS_URL": REDIS_URL}
    gateways = [
        platform_server(
            database_url=database_url,
            data_dir=data_dir,
            log=tmp_path / f"gateway-{i}.log",
            env={**env, "CITYBRAIN_BILLING__SPOOL_DIR": str(tmp_path / f"spool-{i}")},
        )
        for i in range(2)
    ]
    with gateways[0], gateways[1]:
        yield [g.url for g in gateways], keys


def test_two_gateway_processes_share_one_limit(
    two_gateways: tuple[list[str], dict[str, str]],
) -> None:
    urls, keys = two_gateways
    r = httpx.post(
        f"{urls[0]}/api/v1/quotas",
        json={
            "tenant": "parkeasy",
            "product": MODEL,
            "metric": "requests",
            "window": "minute",
            "amount": LIMIT_PER_MINUTE,
        },
        headers={"X-API-Key": keys["traffic-police"]},
    )
    assert r.status_code == 201, r.text
    headers = {"X-API-Key": keys["parkeasy"]}
    clients = [httpx.Client(base_url=u, headers=headers, timeout=30) for u in urls]

    def call(i: int) -> int:
        return clients[i % 2].post(f"/v2/models/{MODEL}/infer", json=BODY).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(call, range(3 * LIMIT_PER_MINUTE)))
    elapsed = time.monotonic() - started
    for c in clients:
        c.close()
    assert set(statuses) <= {200, 429}
    allowed = statuses.count(200)
    # One bucket: the burst, plus what refilled (100 per minute) while the calls ran.
    expected = LIMIT_PER_MINUTE + elapsed * LIMIT_PER_MINUTE / 60
    print(
        f"allowed {allowed} of {len(statuses)}; one bucket allows {expected:.1f} in {elapsed:.2f} s"
    )
    assert abs(allowed - expected) <= 0.05 * LIMIT_PER_MINUTE, (allowed, expected, elapsed)
    # Each process alone would have let a whole limit through: both did serve calls.
    served = [statuses[i::2].count(200) for i in range(2)]
    assert all(n > 0 for n in served) and sum(served) == allowed
