"""Two gateway processes share one rate limit through Redis.

Both serve the same PostgreSQL database and artifacts, each with its own usage spool, and keep
their quota buckets in the Redis server at 127.0.0.1:6379. Calls alternate between them; the
number allowed must match one token bucket — the limit plus what refilled while the test ran —
within 5 % of the limit.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from marketplace.db import make_engine, make_session_factory, transaction
from marketplace.migrate import upgrade
from marketplace.seed import seed_demo_city
from model_store import BlobStore

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/0"
MODEL = "traffic-police.flow-smoother"
LIMIT_PER_MINUTE = 100
BODY = {
    "inputs": [{"name": "flow", "datatype": "FP32", "shape": [1, 6], "data": [1, 2, 3, 4, 5, 6]}]
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(database_url: str, data_dir: Path, spool: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "CITYBRAIN_LOG_LEVEL": "warning",
        "CITYBRAIN_BILLING__SPOOL_DIR": str(spool),
        "CITYBRAIN_GATEWAY__QUOTA_REDIS_URL": REDIS_URL,
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "marketplace.cli",
            "serve",
            "--port",
            str(port),
            "--database-url",
            database_url,
            "--data-dir",
            str(data_dir),
            "--no-migrate",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, f"http://127.0.0.1:{port}"


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            pytest.fail(f"the server at {url} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the server at {url} did not become ready")


@pytest.fixture
def two_gateways(database_url: str, tmp_path: Path) -> Iterator[tuple[list[str], dict[str, str]]]:
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as e:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {e}")
    upgrade(database_url)
    data_dir = tmp_path / "var"
    engine = make_engine(database_url)
    with transaction(make_session_factory(engine)) as session:
        keys = seed_demo_city(session, blobs=BlobStore(str(data_dir / "artifacts"))).keys
    engine.dispose()
    procs = [_serve(database_url, data_dir, tmp_path / f"spool-{i}") for i in range(2)]
    try:
        for proc, url in procs:
            _wait_ready(url, proc)
        yield [url for _, url in procs], keys
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


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
