"""Benchmark of scale-out: requests/s of 1, 2 and 3 gateway processes on one PostgreSQL.

Run from the repository root::

    .venv/bin/python bench/scale_out.py [--quick] [--clients N] [--seconds S]

A temporary PostgreSQL database (``CITYBRAIN_TEST_PG_ADMIN``, created and dropped here) is
migrated and seeded with the demo city. For k = 1, 2, 3 it starts k ``citybrain serve`` processes, each on
its own port with its own usage spool, sharing the database and (if reachable) the quota Redis
at 127.0.0.1:6379, and drives a metered v2 infer of ``traffic-police.flow-smoother`` from
client processes (httpx, one connection each, round-robin over the k servers) for a fixed time
after all clients are connected. It prints requests/s for each k, the ratios to one process,
the CPU time per call of the servers and of PostgreSQL, and checks that the usage rows equal
the calls answered 200. Numbers are for the machine it runs on: compare them side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# The repository first: this folder holds a billing.py that must not shadow the package.
sys.path.insert(0, str(REPO_ROOT))

from tests.utils.server import ServerProcess, platform_server  # noqa: E402

MODEL = "traffic-police.flow-smoother"
BODY = {
    "inputs": [{"name": "flow", "datatype": "FP32", "shape": [1, 6], "data": [1, 2, 3, 4, 5, 6]}]
}
REDIS_URL = "redis://127.0.0.1:6379/0"


def _client(
    urls: list[str], token: str, offset: int, ready: Any, go: Any, stop: Any, out: Any
) -> None:
    """Call round-robin until ``stop``; count the 200s made between ``go`` and ``stop``."""
    import httpx

    clients = [httpx.Client(base_url=u, timeout=30) for u in urls]
    headers = {"Authorization": f"Bearer {token}"}
    for c in clients:  # connect and warm up before the clock starts
        c.post(f"/v2/models/{MODEL}/infer", json=BODY, headers=headers)
    with ready.get_lock():
        ready.value += 1
    go.wait()
    ok = other = 0
    i = offset
    while not stop.is_set():
        r = clients[i % len(clients)].post(f"/v2/models/{MODEL}/infer", json=BODY, headers=headers)
        i += 1
        if r.status_code == 200:
            ok += 1
        else:
            other += 1
    out.put((ok, other))
    for c in clients:
        c.close()


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds (all threads) of the processes, from /proc/<pid>/task/*/schedstat."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError, IndexError):  # a thread that ended
                total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def _postgres_pids() -> list[int]:
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "postgres":
                pids.append(int(comm.parent.name))
        except OSError:
            pass
    return pids


def _start(db_url: str, data_dir: Path, spool: Path, env: dict[str, str]) -> ServerProcess:
    server = platform_server(
        database_url=db_url,
        data_dir=data_dir,
        log=data_dir.parent / f"{spool.name}.log",
        env={**env, "CITYBRAIN_BILLING__SPOOL_DIR": str(spool)},
    )
    return server.start()


def _run(
    k: int, args: argparse.Namespace, db_url: str, data_dir: Path, token: str, env: dict[str, str]
) -> dict[str, float]:
    servers = [_start(db_url, data_dir, data_dir / f"spool-{k}-{i}", env) for i in range(k)]
    urls = [server.url for server in servers]
    ctx = multiprocessing.get_context("spawn")
    ready, go, stop, out = ctx.Value("i", 0), ctx.Event(), ctx.Event(), ctx.Queue()
    clients = [
        ctx.Process(target=_client, args=(urls, token, n, ready, go, stop, out))
        for n in range(args.clients)
    ]
    try:
        for c in clients:
            c.start()
        while ready.value < args.clients:
            time.sleep(0.05)
        pids = [server.pid for server in servers]
        pg = _postgres_pids()
        cpu0, pg0 = _cpu_s(pids), _cpu_s(pg)
        started = time.monotonic()
        go.set()
        time.sleep(args.seconds)
        stop.set()
        elapsed = time.monotonic() - started
        cpu1, pg1 = _cpu_s(pids), _cpu_s(pg)
        ok = other = 0
        for _ in clients:
            a, b = out.get(timeout=120)
            ok, other = ok + a, other + b
        for c in clients:
            c.join(30)
    finally:
        for server in servers:
            server.stop()
    return {
        "rps": ok / elapsed,
        "ok": ok,
        "other": other,
        "server_cpu_ms": 1000 * (cpu1 - cpu0) / max(ok, 1),
        "pg_cpu_ms": 1000 * (pg1 - pg0) / max(ok, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="4 s per level instead of 10")
    parser.add_argument("--seconds", type=float, default=None, help="measured time per level")
    parser.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 4.0 if args.quick else 10.0

    import redis
    from sqlalchemy import func, select

    from billing.tables import usage_event
    from marketplace.db import make_engine
    from model_store import BlobStore
    from tests.utils.city import migrate_and_seed
    from tests.utils.postgres import scratch_database

    env: dict[str, str] = {}
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
        env["CITYBRAIN_GATEWAY__QUOTA_REDIS_URL"] = REDIS_URL
        shared = "PostgreSQL and Redis"
    except redis.RedisError:
        shared = "PostgreSQL (no Redis reachable)"
    print(
        f"cores: {os.cpu_count()}; {args.clients} client processes; {args.seconds:.0f} s per level; shared: {shared}"
    )
    with scratch_database("citybrain_bench_scale") as db, tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "var"
        keys = migrate_and_seed(db.url, blobs=BlobStore(str(data_dir / "artifacts"))).keys
        engine = make_engine(db.url)
        results: dict[int, dict[str, float]] = {}
        for k in (1, 2, 3):
            results[k] = r = _run(k, args, db.url, data_dir, keys["parkeasy"], env)
            print(
                f"{k} process{'es' if k > 1 else '  '}: {r['rps']:8.1f} req/s  ({r['ok']:.0f} ok, {r['other']:.0f} other)  "
                f"server CPU {r['server_cpu_ms']:.2f} ms/call, PostgreSQL CPU {r['pg_cpu_ms']:.2f} ms/call"
            )
        base = results[1]["rps"]
        print(
            "ratios to 1 process: "
            + ", ".join(f"{k}: {results[k]['rps'] / base:.2f}x" for k in (2, 3))
        )
        with engine.connect() as conn:
            rows = conn.scalar(select(func.count()).select_from(usage_event))
        answered = sum(int(r["ok"]) for r in results.values()) + 3 * args.clients * 2  # + warm-ups
        print(
            f"usage rows {rows}; calls answered 200 (warm-ups included) {answered}: "
            + ("equal" if rows == answered else "DIFFERENT")
        )
        engine.dispose()


if __name__ == "__main__":
    main()
