"""The DuckDB engine's fence: no file but the snapshots, locked settings, time and memory
limits that end a query with a clear error instead of a hung worker."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import sqlglot

from marketplace.config import DataSettings
from marketplace.data.duckdb_engine import DuckDBEngine
from marketplace.data.errors import QueryMemoryError, QueryTimeoutError
from model_store import BlobStore
from tests.unit.data.conftest import snapshot_of


@pytest.fixture
def snap(blobs: BlobStore, tmp_path: Path):  # type: ignore[no-untyped-def]
    return snapshot_of(pa.table({"n": [1, 2, 3]}), blobs, tmp_path)


def _sql(text: str) -> sqlglot.exp.Expr:
    return sqlglot.parse_one(text, dialect="duckdb")


def test_the_snapshot_is_the_only_file_a_query_can_read(
    engine: DuckDBEngine,
    snap,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    assert engine.run(snap, _sql("SELECT sum(n) AS s FROM snapshot"), {}).to_pylist() == [{"s": 6}]
    outside = tmp_path / "outside.csv"
    outside.write_text("a\n1\n")
    for attempt in (
        f"SELECT * FROM read_csv('{outside}')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM read_parquet('http://127.0.0.1:9/x.parquet')",
    ):
        with pytest.raises(duckdb.Error, match=r"disabled|not allowed|Permission"):
            engine.run(snap, _sql(attempt), {})
    for setting in ("SET enable_external_access=true", "SET memory_limit='100GB'"):
        with pytest.raises(duckdb.Error, match="locked"):
            engine.run(snap, _sql(setting), {})


def test_every_query_runs_with_the_fenced_settings(engine: DuckDBEngine, snap) -> None:  # type: ignore[no-untyped-def]
    """Each query has a cursor of its own: the connection's settings must reach it (a plain
    SET would not: timestamps would be shown in the host's zone, footers re-read per query)."""
    probe = _sql(
        "SELECT current_setting('TimeZone') AS tz,"
        " current_setting('parquet_metadata_cache') AS footers,"
        " current_setting('enable_progress_bar') AS bar,"
        " CAST(TIMESTAMPTZ '2026-03-01 08:00:00+08' AS VARCHAR) AS shown FROM snapshot LIMIT 1"
    )
    for _ in range(2):  # a second cursor as the first
        assert engine.run(snap, probe, {}).to_pylist() == [
            {"tz": "UTC", "footers": True, "bar": False, "shown": "2026-03-01 00:00:00+00"}
        ]


def test_a_query_past_the_time_limit_is_interrupted(
    blobs: BlobStore,
    snap,  # type: ignore[no-untyped-def]
) -> None:
    engine = DuckDBEngine(DataSettings(query_timeout_s=0.2), blobs)
    try:
        endless = _sql("SELECT count(*) FROM range(1000000000000) a, snapshot")
        with pytest.raises(QueryTimeoutError, match=r"time limit of 0\.2 s") as e:
            engine.run(snap, endless, {})
        assert e.value.status == 503
        # The slot and the engine are free again.
        assert engine.run(snap, _sql("SELECT count(*) AS k FROM snapshot"), {}).num_rows == 1
    finally:
        engine.close()


def test_a_query_past_the_memory_limit_fails_cleanly(
    blobs: BlobStore,
    snap,  # type: ignore[no-untyped-def]
) -> None:
    engine = DuckDBEngine(DataSettings(memory_limit="16MB", threads=1), blobs)
    try:
        hungry = _sql("SELECT list(range::VARCHAR) AS l FROM range(20000000), snapshot")
        with pytest.raises(QueryMemoryError) as e:
            engine.run(snap, hungry, {})
        assert e.value.status == 503 and e.value.code == "QueryOutOfMemory"
    finally:
        engine.close()
