"""Querying a dataset four ways, side by side in one run, on the same rows.

A per-minute flow table (``--rows``, 10 million by default: intersections x minutes, each row
an intersection, a minute, a vehicle count, a mean speed and one plate seen) is generated
deterministically into a Parquet file and uploaded as a public dataset version through the
platform's API. Five queries then run four ways:

  (i)   through the API (``citybrain serve`` in its own process on a free port, SQLite, metered),
        as another tenant (so the plate is masked), answering JSON and Arrow;
  (ii)  DuckDB in-process over the version's snapshot (the same Parquet file), hand-written SQL;
  (iii) PostgreSQL with the same rows COPYed into a scratch database and the indexes a careful
        user would add (intersection + minute, minute, count), hand-written SQL;
  (iv)  Spark SQL in local[2] through the platform's Spark engine (the same plans and masked
        view as the API), its start-up measured apart.

The queries: Q1 full group-by (per intersection: rows, mean count, top speed); Q2 a selective
filter (one intersection, ten hours: <= 1,000 rows); Q3 top-k (the 100 busiest minutes); Q4 a
time-bucketed average (per hour); Q5 a masked group-by (rows per masked plate).

The first three ways take turns call by call (a busy machine's drift falls on each alike), with
an authenticated ``GET /api/v1/me`` measured as the API's floor; Spark runs last, alone.
Prints each way's p50 per query and the ratios against the goals: the API with Arrow at most 3x
DuckDB in-process on the aggregates, at least 10x faster than PostgreSQL on the full group-by,
the selective query at p50 <= 15 ms through the API. Every way's answers are checked to have the
same number of rows. A benchmark prints; it asserts nothing about time.

Run: ``.venv/bin/python bench/data_query.py --rows 2000000`` (``--quick``: 200,000 rows, few
repetitions; ``--ways api,duckdb`` to skip some).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.utils.postgres import scratch_database  # noqa: E402
from tests.utils.server import running_platform_server  # noqa: E402

INTERSECTIONS = 500
START = datetime(2026, 3, 1)
OWNER, READER = "traffic-police", "parkeasy"
NAME = "bench-flow"
HANDLE = f"{OWNER}.{NAME}"
SCHEMA = {
    "columns": [
        {"name": "intersection", "type": "VARCHAR"},
        {"name": "minute", "type": "TIMESTAMP", "semantic": "timestamp"},
        {"name": "count", "type": "INTEGER"},
        {"name": "speed", "type": "DOUBLE"},
        {"name": "plate", "type": "VARCHAR", "semantic": "plate_number", "sensitivity": "personal"},
    ]
}
SELECTIVE = ("I-042", "2026-03-01 06:00:00", "2026-03-01 15:59:00")  # 600 rows

# The five queries as plans (the API and the Spark engine) ...
PLANS: dict[str, dict[str, Any]] = {
    "Q1 group-by": {
        "group_by": ["intersection"],
        "aggregates": [
            {"fn": "count", "as": "n"},
            {"fn": "avg", "column": "count", "as": "mean"},
            {"fn": "max", "column": "speed", "as": "top"},
        ],
    },
    "Q2 selective": {
        "select": ["intersection", "minute", "count", "speed"],
        "where": [
            {"column": "intersection", "op": "eq", "value": SELECTIVE[0]},
            {"column": "minute", "op": "between", "value": list(SELECTIVE[1:])},
        ],
        "order_by": [{"column": "minute"}],
    },
    "Q3 top-k": {
        "select": ["intersection", "minute", "count"],
        "order_by": [{"column": "count", "desc": True}],
        "limit": 100,
    },
    "Q4 hourly avg": {
        "group_by": [{"column": "minute", "time_bucket": "hour", "as": "hour"}],
        "aggregates": [{"fn": "avg", "column": "count", "as": "mean"}],
    },
    "Q5 masked group-by": {
        "group_by": ["plate"],
        "aggregates": [{"fn": "count", "as": "n"}],
    },
}
AGGREGATES = ("Q1 group-by", "Q3 top-k", "Q4 hourly avg", "Q5 masked group-by")
_MASK = "left({p}, 3) || '***' || right({p}, 2)"
# ... and as the SQL a user writes for DuckDB and PostgreSQL ({t}: the table).
SQL: dict[str, str] = {
    "Q1 group-by": "SELECT intersection, count(*) AS n, avg(count) AS mean, max(speed) AS top "
    "FROM {t} GROUP BY intersection ORDER BY intersection",
    "Q2 selective": "SELECT intersection, minute, count, speed FROM {t} "
    f"WHERE intersection = '{SELECTIVE[0]}' AND minute BETWEEN '{SELECTIVE[1]}' AND '{SELECTIVE[2]}' "
    "ORDER BY minute",
    "Q3 top-k": "SELECT intersection, minute, count FROM {t} "
    "ORDER BY count DESC, intersection, minute LIMIT 100",
    "Q4 hourly avg": "SELECT date_trunc('hour', minute) AS hour, avg(count) AS mean FROM {t} "
    "GROUP BY 1 ORDER BY 1",
    "Q5 masked group-by": f"SELECT {_MASK.format(p='plate')} AS plate, count(*) AS n FROM {{t}} "
    "GROUP BY 1 ORDER BY 1",
}
PG_INDEXES = (
    "CREATE INDEX ON flow (intersection, minute)",
    "CREATE INDEX ON flow (minute)",
    "CREATE INDEX ON flow (count DESC)",
)


# ----------------------------------------------------------------------------- the table


def make_table(rows: int, path: Path) -> None:
    """``rows`` per-minute flows, minute-major (as a city's feed arrives), written in chunks."""
    rng = np.random.default_rng(20260301)
    names = np.array([f"I-{i:03d}" for i in range(INTERSECTIONS)], dtype=object)
    provinces = np.array(list("ABCDEFGH"))
    plates = np.array(
        [f"浙{provinces[i % 8]}·{n:05d}" for i, n in enumerate(rng.integers(0, 100_000, 50_000))],
        dtype=object,
    )
    base = np.datetime64(START, "us")
    chunk = 1_000_000
    schema = pa.schema(
        [
            ("intersection", pa.string()),
            ("minute", pa.timestamp("us")),
            ("count", pa.int32()),
            ("speed", pa.float64()),
            ("plate", pa.string()),
        ]
    )
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for lo in range(0, rows, chunk):
            i = np.arange(lo, min(lo + chunk, rows))
            hour = (i // INTERSECTIONS // 60) % 24
            rush = (
                1.0
                + 0.8 * np.exp(-((hour - 8) ** 2) / 4.0)
                + 0.6 * np.exp(-((hour - 18) ** 2) / 4.0)
            )
            counts = rng.poisson(12 * rush).astype(np.int32)
            table = pa.table(
                {
                    "intersection": pa.array(names[i % INTERSECTIONS], pa.string()),
                    "minute": pa.array(base + (i // INTERSECTIONS) * np.timedelta64(60, "s")),
                    "count": counts,
                    "speed": np.round(rng.uniform(5.0, 70.0, len(i)), 2),
                    "plate": pa.array(plates[rng.integers(0, len(plates), len(i))], pa.string()),
                },
                schema=schema,
            )
            writer.write_table(table)


# ------------------------------------------------------------------------------ timing


Call = Callable[[], int]  # runs one query, returns its row count


def p50(fn: Call, reps: int, warmup: int = 1) -> tuple[float, int]:
    """Median wall time of ``fn`` in ms over ``reps`` calls after ``warmup``; its row count."""
    rows = 0
    for _ in range(warmup):
        rows = fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        rows = fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), rows


def interleaved(
    ways: dict[str, dict[str, Call]], reps: int
) -> dict[str, dict[str, tuple[float, int]]]:
    """p50 per way and query, the ways taking turns call by call (a busy machine's drift
    falls on every way alike)."""
    out: dict[str, dict[str, tuple[float, int]]] = {w: {} for w in ways}
    for name in PLANS:
        rows = {w: calls[name]() for w, calls in ways.items()}  # warm-up
        times: dict[str, list[float]] = {w: [] for w in ways}
        for _ in range(reps):
            for w, calls in ways.items():
                t = time.perf_counter()
                rows[w] = calls[name]()
                times[w].append((time.perf_counter() - t) * 1000)
        for w in ways:
            out[w][name] = (statistics.median(times[w]), rows[w])
    return out


# ------------------------------------------------------------------------------- the API


@contextmanager
def platform(work: Path, parquet: Path) -> Iterator[tuple[str, str, Path]]:
    """A server with the table uploaded and published; yields (url, reader's key, snapshot)."""
    from tests.utils.city import migrate_and_seed

    data_dir = work / "var"
    database_url = f"sqlite:///{work / 'citybrain.db'}"
    keys = migrate_and_seed(database_url).keys  # tenants and keys only
    env = {
        "CITYBRAIN_DATA__MAX_UPLOAD_BYTES": str(8 * 1024**3),
        "CITYBRAIN_DATA__QUERY_TIMEOUT_S": "600",
    }
    with running_platform_server(
        database_url=database_url, data_dir=data_dir, log=work / "server.log", env=env
    ) as server:
        url = server.url
        owner = {"Authorization": f"Bearer {keys[OWNER]}"}
        with httpx.Client(base_url=url, headers=owner, timeout=3600) as api:
            product = {
                "name": NAME,
                "kind": "dataset",
                "title": "Bench flows",
                "domain": "traffic",
                "tier": "public",
            }
            api.post("/api/v1/products", json=product).raise_for_status()
            started = time.perf_counter()
            with parquet.open("rb") as f:
                r = api.post(
                    f"/api/v1/products/{HANDLE}/versions/data",
                    files={"file": (parquet.name, f, "application/octet-stream")},
                    data={"schema": json.dumps(SCHEMA)},
                )
            r.raise_for_status()
            print(
                f"  uploaded through the API in {time.perf_counter() - started:.1f} s", flush=True
            )
            api.post(f"/api/v1/products/{HANDLE}/publish").raise_for_status()
            digest = api.get(f"/api/v1/products/{HANDLE}/versions/1").json()["sha256"]
        hexpart = digest.removeprefix("sha256:")
        snapshot = data_dir / "artifacts" / "sha256" / hexpart[:2] / hexpart[2:]
        yield url, keys[READER], snapshot


def api_calls(api: Any) -> dict[str, dict[str, Call]]:
    """The queries through the API (``api``: an httpx client with the reader's key)."""
    out: dict[str, dict[str, Call]] = {"API JSON": {}, "API Arrow": {}}
    for name, plan in PLANS.items():

        def as_json(plan: dict[str, Any] = plan) -> int:
            r = api.post(f"/api/v1/products/{HANDLE}/query", json=plan)
            r.raise_for_status()
            return int(r.json()["row_count"])

        def as_arrow(plan: dict[str, Any] = plan) -> int:
            r = api.post(
                f"/api/v1/products/{HANDLE}/query",
                json=plan,
                headers={"Accept": "application/vnd.apache.arrow.stream"},
            )
            r.raise_for_status()
            return int(pa.ipc.open_stream(r.content).read_all().num_rows)

        out["API JSON"][name] = as_json
        out["API Arrow"][name] = as_arrow
    return out


# -------------------------------------------------------------------- the other three ways


@contextmanager
def duckdb_calls(snapshot: Path) -> Iterator[dict[str, Call]]:
    import duckdb

    # The platform's settings (its footer cache included), so the ratio measures the API alone.
    conn = duckdb.connect(":memory:", config={"threads": 2, "memory_limit": "1GB"})
    conn.execute("SET parquet_metadata_cache=true")
    table = "read_parquet('" + str(snapshot).replace("'", "''") + "')"
    try:
        yield {
            name: lambda text=sql.format(t=table): conn.sql(text).to_arrow_table().num_rows
            for name, sql in SQL.items()
        }
    finally:
        conn.close()


@contextmanager
def postgres_calls(snapshot: Path) -> Iterator[dict[str, Call]]:
    """The rows COPYed into a scratch database with a careful user's indexes."""
    import psycopg
    import pyarrow.csv as pa_csv

    with (
        scratch_database("citybrain_bench") as db,
        psycopg.connect(db.dsn, autocommit=True) as conn,
    ):
        conn.execute(
            "CREATE TABLE flow (intersection text, minute timestamp, count integer, "
            "speed double precision, plate text)"
        )
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY flow FROM STDIN (FORMAT csv)") as copy:
            for batch in pq.ParquetFile(snapshot).iter_batches(batch_size=200_000):
                sink = pa.BufferOutputStream()
                pa_csv.write_csv(batch, sink, pa_csv.WriteOptions(include_header=False))
                copy.write(sink.getvalue().to_pybytes())
        for statement in PG_INDEXES:
            conn.execute(statement)
        conn.execute("VACUUM ANALYZE flow")
        print(
            f"  PostgreSQL: COPY, indexes, ANALYZE in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        yield {
            name: lambda text=sql.format(t="flow"): len(conn.execute(text).fetchall())
            for name, sql in SQL.items()
        }


def via_spark(snapshot: Path, reps: int) -> tuple[float, dict[str, tuple[float, int]]]:
    """The platform's Spark engine on local[2]: (start-up seconds, p50 per query)."""
    import sqlglot

    from marketplace.config import DataSettings
    from marketplace.data.compile import compile_plan
    from marketplace.data.engine import Snapshot
    from marketplace.data.masking import masked_view
    from marketplace.data.plan import QueryPlan
    from marketplace.data.schema import ColumnSpec
    from marketplace.data.spark_engine import SparkEngine
    from model_store import BlobStore

    blobs = BlobStore(snapshot.parents[2])
    digest = "sha256:" + snapshot.parent.name + snapshot.name
    snap = Snapshot(digest, 0, snapshot.stat().st_size)
    engine = SparkEngine(
        DataSettings(engine="spark", spark_master="local[2]", query_timeout_s=3600), blobs
    )
    view = masked_view([ColumnSpec.model_validate(c) for c in SCHEMA["columns"]], raw=False)
    out = {}
    try:
        started = time.perf_counter()
        engine.run(snap, sqlglot.parse_one("SELECT count(*) AS n FROM snapshot"), {})
        startup = time.perf_counter() - started
        for name, plan in PLANS.items():
            compiled = compile_plan(
                QueryPlan.model_validate(plan), view, 1, default_limit=1000, max_rows=100_000
            )

            def run(compiled: Any = compiled) -> int:
                # The page (the engine fetches one more row to know whether a next one exists).
                return min(
                    engine.run(snap, compiled.expression, compiled.params).num_rows,
                    compiled.page_size,
                )

            out[name] = p50(run, reps)
    finally:
        engine.close()
    return startup, out


# --------------------------------------------------------------------------------- report


def report(results: dict[str, dict[str, tuple[float, int]]]) -> None:
    ways = list(results)
    print("\np50 latency (ms) per query and way" + " " * 8 + "(rows returned)")
    print(f"{'':22}" + "".join(f"{w:>13}" for w in ways))
    for name in PLANS:
        cells = "".join(f"{results[w][name][0]:13.1f}" for w in ways)
        rows = {results[w][name][1] for w in ways}
        print(f"{name:22}{cells}   ({'/'.join(str(r) for r in sorted(rows))})")
    print("\nratios")
    duck, arrow, js = results.get("DuckDB"), results.get("API Arrow"), results.get("API JSON")
    if duck and arrow:
        for name in AGGREGATES:
            ratio = arrow[name][0] / duck[name][0]
            print(f"  API Arrow / DuckDB in-process, {name:20} {ratio:6.2f}x   (goal <= 3x)")
    pg = results.get("PostgreSQL")
    if pg and arrow:
        g = "Q1 group-by"
        print(
            f"  PostgreSQL / API Arrow, full group-by          {pg[g][0] / arrow[g][0]:6.2f}x   (goal >= 10x)"
        )
        if duck:
            print(f"  PostgreSQL / DuckDB in-process, full group-by  {pg[g][0] / duck[g][0]:6.2f}x")
    if js and arrow:
        s = "Q2 selective"
        print(
            f"  selective query through the API: p50 {js[s][0]:.1f} ms JSON, {arrow[s][0]:.1f} ms Arrow   (goal <= 15 ms)"
        )
    spark = results.get("Spark")
    if spark and duck:
        for name in PLANS:
            print(
                f"  Spark local[2] / DuckDB in-process, {name:20} {spark[name][0] / duck[name][0]:6.1f}x"
            )
    counts = {name: {results[w][name][1] for w in ways} for name in PLANS}
    mismatched = [name for name, rows in counts.items() if len(rows) != 1]
    print("\nrow counts " + ("agree across ways" if not mismatched else f"DIFFER for {mismatched}"))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=10_000_000, help="rows in the flow table (default 10,000,000)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="200,000 rows and 3 repetitions: a smoke run"
    )
    parser.add_argument(
        "--reps", type=int, default=15, help="timed repetitions per query and way (default 15)"
    )
    parser.add_argument(
        "--spark-reps", type=int, default=5, help="timed repetitions on Spark (default 5)"
    )
    parser.add_argument(
        "--ways",
        default="api,duckdb,postgres,spark",
        help="comma-separated subset of api,duckdb,postgres,spark",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="keep the table, database and logs here (default: a temporary folder, removed)",
    )
    args = parser.parse_args()
    rows, reps, spark_reps = args.rows, args.reps, args.spark_reps
    if args.quick:
        rows, reps, spark_reps = 200_000, 3, 2
    ways = {w.strip() for w in args.ways.split(",")}
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="citybrain-data-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(
            f"flow table: {rows:,} rows ({INTERSECTIONS} intersections x {rows // INTERSECTIONS:,} minutes)",
            flush=True,
        )
        parquet = work / "flow.parquet"
        started = time.perf_counter()
        make_table(rows, parquet)
        print(
            f"  generated in {time.perf_counter() - started:.1f} s, {parquet.stat().st_size / 1e6:.0f} MB Parquet",
            flush=True,
        )
        results: dict[str, dict[str, tuple[float, int]]] = {}
        with platform(work, parquet) as (url, key, snapshot):
            print(
                f"  snapshot {snapshot.stat().st_size / 1e6:.0f} MB; measuring (p50 of {reps}, Spark {spark_reps})",
                flush=True,
            )
            with ExitStack() as stack:
                calls: dict[str, dict[str, Call]] = {}
                if "api" in ways:
                    api = stack.enter_context(
                        httpx.Client(
                            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600
                        )
                    )
                    calls.update(api_calls(api))
                if "duckdb" in ways:
                    calls["DuckDB"] = stack.enter_context(duckdb_calls(snapshot))
                if "postgres" in ways:
                    calls["PostgreSQL"] = stack.enter_context(postgres_calls(snapshot))
                results.update(interleaved(calls, reps))
                if "api" in ways:
                    # The API's floor: an authenticated request that runs no query.
                    def me() -> int:
                        api.get("/api/v1/me").raise_for_status()
                        return 0

                    floor, _ = p50(me, reps)
                    print(
                        f"  API floor (GET /api/v1/me, authenticated): p50 {floor:.1f} ms",
                        flush=True,
                    )
            if "spark" in ways:
                startup, results["Spark"] = via_spark(snapshot, spark_reps)
                print(f"  Spark: session start-up and first query {startup:.1f} s", flush=True)
        report(results)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
