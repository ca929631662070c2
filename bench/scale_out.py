"""Benchmark of scale-out: requests/s of 1, 2 and 3 gateway processes on one PostgreSQL.

Run from the repository root::

    .venv/bin/python bench/scale_out.py [--quick] [--clients N] [--seconds S]

A temporary PostgreSQL database (127.0.0.1:5432, created and dropped here) is migrated and
seeded with the demo city. For k = 1, 2, 3 it starts k ``citybrain serve`` processes, each on
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
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# The repository first: this folder holds a billing.py that must not shadow the package.
sys.path.insert(0, str(REPO_ROOT))

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def _start(
    db_url: str, data_dir: Path, spool: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "marketplace.cli",
            "serve",
            "--no-migrate",
            "--port",
            str(port),
            "--database-url",
            db_url,
            "--data-dir",
            str(data_dir),
        ],
        cwd=REPO_ROOT,
        env={**env, "CITYBRAIN_BILLING__SPOOL_DIR": str(spool)},
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server at {url} exited ({proc.returncode})")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the server at {url} did not become ready")
        time.sleep(0.1)


def _run(
    k: int, args: argparse.Namespace, db_url: str, data_dir: Path, token: str, env: dict[str, str]
) -> dict[str, float]:
    servers = [_start(db_url, data_dir, data_dir / f"spool-{k}-{i}", env) for i in range(k)]
    urls = [url for _, url in servers]
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
        pids = [p.pid for p, _ in servers]
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
        for proc, _ in servers:
            proc.terminate()
        for proc, _ in servers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
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
    from marketplace.db import make_engine, make_session_factory, transaction
    from marketplace.migrate import upgrade
    from marketplace.seed import seed_demo_city
    from model_store import BlobStore
    from tests.utils.postgres import scratch_database

    env = {**os.environ, "CITYBRAIN_LOG_LEVEL": "warning"}
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
        upgrade(db.url)
        engine = make_engine(db.url)
        with transaction(make_session_factory(engine)) as session:
            keys = seed_demo_city(session, blobs=BlobStore(str(data_dir / "artifacts"))).keys
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
