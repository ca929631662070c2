"""Benchmark of usage metering: spool group commit and sustained ingest into PostgreSQL.

Run from the repository root::

    .venv/bin/python bench/metering.py [--quick]

It prints:

(i)  spool append throughput with group commit at concurrency 1, 32 and 256: events/s, fsyncs,
     mean group size, and the p50/p99 latency each ``append`` adds to a call;
(ii) ingest into PostgreSQL (127.0.0.1:5432, a temporary database created and dropped here):
     (a) each PostgreSQL write method draining the same pre-filled spool (events/s into the
         table), (b) a sustained run with concurrent producers and the background flusher,
         then an exactly-once check (rows == distinct keys == events acknowledged).

The whole run is bounded (about 60-90 s). Numbers are for the machine it runs on; compare them
side by side, not against another machine. Part (iii), the gateway with metering on vs off,
belongs with the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import psycopg  # noqa: E402
from sqlalchemy import Engine, create_engine, func, select, text  # noqa: E402

from billing.events import UsageEvent  # noqa: E402
from billing.flusher import Flusher, PgMethod  # noqa: E402
from billing.spool import Spool  # noqa: E402
from billing.tables import metadata, usage_event  # noqa: E402

PG_SERVER = "host=127.0.0.1 port=5432 user=postgres"


def _event(n: int, tenant: int = 1) -> UsageEvent:
    return UsageEvent(
        id=f"bench-{n:010d}",
        tenant_id=tenant,
        key_id="benchkey",
        product="traffic-police.flow-smoother",
        product_id=7,
        version=1,
        unit="call",
        quantity=1.0,
        at=datetime.now(UTC),
        latency_ms=4.2,
        request_id=f"rq-{n:010d}",
    )


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------- (i) spool group commit


async def _spool_level(
    spool: Spool, concurrency: int, seconds: float, start_n: int
) -> dict[str, float]:
    latencies: list[float] = []
    counter = iter(range(start_n, start_n + 10_000_000))
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            event = _event(next(counter))
            t0 = time.perf_counter()
            await spool.append(event)
            latencies.append(time.perf_counter() - t0)

    before = spool.stats()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    after = spool.stats()
    n = after.appended - before.appended
    fsyncs = after.fsyncs - before.fsyncs
    return {
        "events": n,
        "events_per_s": n / elapsed,
        "fsyncs": fsyncs,
        "group": n / max(fsyncs, 1),
        "p50_ms": _pct(latencies, 0.50) * 1000,
        "p99_ms": _pct(latencies, 0.99) * 1000,
    }


def bench_spool(workdir: Path, seconds: float) -> None:
    print("(i) spool append with group commit (write + fdatasync per group)")
    print(f"    spool directory: {workdir} (filesystem of {tempfile.gettempdir()})")
    print(
        f"    {'concurrency':>11} {'events':>8} {'events/s':>10} {'fsyncs':>7} "
        f"{'per fsync':>9} {'p50 ms':>7} {'p99 ms':>7}"
    )
    start = 0
    for concurrency in (1, 32, 256):
        directory = workdir / f"spool-c{concurrency}"
        with Spool(directory) as spool:
            r = asyncio.run(_spool_level(spool, concurrency, seconds, start))
        start += int(r["events"]) + 1
        shutil.rmtree(directory, ignore_errors=True)
        print(
            f"    {concurrency:>11} {int(r['events']):>8} {r['events_per_s']:>10,.0f} "
            f"{int(r['fsyncs']):>7} {r['group']:>9.1f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f}"
        )


# ---------------------------------------------------------------- (ii) PostgreSQL ingest


@contextmanager
def temporary_database() -> Iterator[Engine]:
    name = f"citybrain_bench_billing_{secrets.token_hex(6)}"
    with psycopg.connect(f"{PG_SERVER} dbname=postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
        connect_args={"connect_timeout": 5},
    )
    try:
        metadata.create_all(engine)
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(f"{PG_SERVER} dbname=postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rows(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(usage_event)).scalar_one()
        distinct = conn.execute(
            text("SELECT count(*) FROM (SELECT DISTINCT tenant_id, id FROM usage_event) d")
        ).scalar_one()
    return int(total), int(distinct)


def _truncate(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE usage_event"))


async def _fill(spool: Spool, total: int, concurrency: int, start_n: int) -> None:
    next_n = iter(range(start_n, start_n + total))

    async def worker() -> None:
        for n in next_n:
            await spool.append(_event(n, tenant=1 + n % 50))

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def bench_methods(engine: Engine, workdir: Path, events: int, batch_size: int) -> None:
    print(f"(ii-a) draining a spool of {events:,} events into PostgreSQL, batch {batch_size}")
    source = workdir / "prefilled"
    t0 = time.perf_counter()
    with Spool(source) as spool:
        asyncio.run(_fill(spool, events, 512, 0))
    print(f"    pre-fill: {events / (time.perf_counter() - t0):,.0f} events/s appended")
    methods: tuple[PgMethod, ...] = ("copy", "unnest", "values")
    for method in methods:
        _truncate(engine)
        copy_dir = workdir / f"drain-{method}"
        shutil.copytree(source, copy_dir)
        with Spool(copy_dir) as spool:
            flusher = Flusher(engine, spool, batch_size=batch_size, pg_method=method)
            t0 = time.perf_counter()
            delivered = flusher.flush_once()
            elapsed = time.perf_counter() - t0
        total, distinct = _rows(engine)
        ok = "exactly once" if total == distinct == events == delivered else "MISMATCH"
        print(
            f"    {method:>7}: {delivered / elapsed:>10,.0f} events/s "
            f"({elapsed:.2f} s; rows {total:,}, distinct {distinct:,}: {ok})"
        )
        shutil.rmtree(copy_dir, ignore_errors=True)
    shutil.rmtree(source, ignore_errors=True)


def bench_sustained(
    engine: Engine, workdir: Path, seconds: float, concurrency: int, method: PgMethod
) -> None:
    print(
        f"(ii-b) sustained: {concurrency} concurrent producers for {seconds:.0f} s, "
        f"background flusher ({method}, batch 5000, interval 0.5 s)"
    )
    _truncate(engine)
    acked = 0
    samples: list[tuple[float, int, int]] = []
    with Spool(workdir / "sustained") as spool:
        flusher = Flusher(engine, spool, batch_size=5000, interval_s=0.5, pg_method=method)
        flusher.start()
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.wait(1.0):
                samples.append((time.perf_counter(), flusher.stats().delivered, spool.backlog()))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        async def produce() -> int:
            counter = iter(range(50_000_000, 60_000_000))
            deadline = time.perf_counter() + seconds
            done = 0

            async def worker() -> None:
                nonlocal done
                while time.perf_counter() < deadline:
                    n = next(counter)
                    await spool.append(_event(n, tenant=1 + n % 50))
                    done += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return done

        t0 = time.perf_counter()
        acked = asyncio.run(produce())
        produce_s = time.perf_counter() - t0
        backlog_at_end = spool.backlog()
        flusher.stop()  # delivers the rest
        drained_s = time.perf_counter() - t0
        stop_sampling.set()
        sampler.join()
        delivered = flusher.stats().delivered
    total, distinct = _rows(engine)
    steady = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(samples)]
    print(f"    acknowledged appends: {acked:,} ({acked / produce_s:,.0f} events/s)")
    print(
        f"    delivered during the run: {samples[-1][1] if samples else 0:,}; backlog when "
        f"producers stopped: {backlog_at_end:,}; all delivered after {drained_s:.1f} s"
    )
    if steady:
        print(
            f"    delivery rate while producing: median {statistics.median(steady):,.0f} "
            f"events/s, max {max(steady):,.0f} events/s (1 s samples)"
        )
    print(
        f"    end-to-end (acked / time until all in PostgreSQL): {acked / drained_s:,.0f} events/s"
    )
    ok = total == distinct == acked == delivered
    print(
        f"    exactly-once check: rows {total:,}, distinct (tenant_id, id) {distinct:,}, "
        f"acknowledged {acked:,}, delivered {delivered:,}: {'OK' if ok else 'MISMATCH'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter run (smoke test)")
    args = parser.parse_args()
    level_s = 1.0 if args.quick else 3.0
    drain_events = 50_000 if args.quick else 300_000
    sustained_s = 3.0 if args.quick else 20.0

    # Copies of a pre-filled spool are replayed on purpose; don't log that as news.
    logging.getLogger("billing").setLevel(logging.ERROR)
    started = time.perf_counter()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench-metering-") as tmp:
        workdir = Path(tmp)
        bench_spool(workdir, level_s)
        with temporary_database() as engine:
            with engine.connect() as conn:
                print(f"PostgreSQL: {conn.execute(text('SHOW server_version')).scalar_one()}")
            bench_methods(engine, workdir, drain_events, 5000)
            bench_sustained(engine, workdir, sustained_s, 256, "copy")
    print(f"total bench time: {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
