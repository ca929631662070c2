"""Spark SQL answers every plan exactly as DuckDB does: the same plans, through the same masked
views, run on both engines over one snapshot and compared row for row.

Spark is slow to start (a JVM and a local[2] driver: tens of seconds here), so one session
serves the whole module and the cases are few: each covers a family (every aggregate, each op
family, time buckets, every mask, paging, downloads, limits) rather than one case per op.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot

from marketplace.config import DataSettings, Settings
from marketplace.data.compile import compile_plan, encode_cursor, whole_view
from marketplace.data.duckdb_engine import DuckDBEngine
from marketplace.data.engine import Snapshot, make_engine
from marketplace.data.errors import QueryTimeoutError
from marketplace.data.masking import MaskedView, masked_view
from marketplace.data.plan import QueryPlan
from marketplace.data.schema import ColumnSpec
from marketplace.data.spark_engine import SparkEngine
from marketplace.errors import InvalidInputError
from model_store import BlobStore
from tests.utils.city import City
from tests.utils.datasets import Datasets

KEY = b"per-product pseudonym key, 32 b."
ROWS = 1200
START = datetime(2026, 3, 2, 0, 0)


def _table() -> pa.Table:
    """A deterministic flow-and-violation table with NULLs, LIKE metacharacters, Chinese text,
    negative numbers, repeated plates and some malformed geo points."""
    rnd = random.Random(16)
    names = ["I-01", "I-02", "I-03", "I_04", "I%05", "路口\\06", None]
    plates = [f"浙{rnd.choice('ABC')}·{rnd.randint(0, 99999):05d}" for _ in range(40)]
    rows: dict[str, list[Any]] = {k: [] for k in COLUMN_TYPES}
    for i in range(ROWS):
        minute = START + timedelta(minutes=rnd.randint(0, 3 * 24 * 60 - 1), seconds=i % 7)
        spot = f"{rnd.uniform(30.25, 30.3):.6f},{rnd.uniform(120.15, 120.2):.6f}"
        rows["n"].append(i)
        rows["intersection"].append(names[i % len(names)])
        rows["minute"].append(minute)
        rows["reported_at"].append(
            None if i % 11 == 0 else (minute + timedelta(hours=8)).replace(tzinfo=UTC)
        )
        rows["day"].append(None if i % 13 == 0 else date(2026, 3, 1) + timedelta(days=i % 5))
        rows["count"].append(None if i % 17 == 0 else rnd.randint(-5, 120))
        rows["speed"].append(None if i % 19 == 0 else round(rnd.uniform(0.0, 80.0), 3))
        rows["flag"].append(None if i % 23 == 0 else rnd.random() < 0.5)
        rows["plate"].append(None if i % 29 == 0 else rnd.choice(plates))
        rows["phone"].append(f"1{rnd.randint(3, 9)}{rnd.randint(0, 999999999):09d}")
        rows["licence"].append(None if i % 31 == 0 else f"33010619{rnd.randint(0, 9999):04d}")
        rows["owner_name"].append(rnd.choice(["张三丰", "李四", "王五", "赵六"]))
        rows["seen_at"].append(minute + timedelta(seconds=rnd.randint(0, 59)))
        rows["location"].append(spot if i % 37 else rnd.choice(["oops", "", "30.2", None, "1e3,5"]))
    return pa.table({k: pa.array(v, COLUMN_TYPES[k]) for k, v in rows.items()})


COLUMN_TYPES = {
    "n": pa.int64(),
    "intersection": pa.string(),
    "minute": pa.timestamp("us"),
    "reported_at": pa.timestamp("us", tz="UTC"),
    "day": pa.date32(),
    "count": pa.int32(),
    "speed": pa.float64(),
    "flag": pa.bool_(),
    "plate": pa.string(),
    "phone": pa.string(),
    "licence": pa.string(),
    "owner_name": pa.string(),
    "seen_at": pa.timestamp("us"),
    "location": pa.string(),
}
COLUMNS = [
    ColumnSpec(name="n", type="BIGINT"),
    ColumnSpec(name="intersection", type="VARCHAR"),
    ColumnSpec(name="minute", type="TIMESTAMP"),
    ColumnSpec(name="reported_at", type="TIMESTAMPTZ"),
    ColumnSpec(name="day", type="DATE"),
    ColumnSpec(name="count", type="INTEGER"),
    ColumnSpec(name="speed", type="DOUBLE"),
    ColumnSpec(name="flag", type="BOOLEAN"),
    ColumnSpec(name="plate", type="VARCHAR", semantic="plate_number", sensitivity="personal"),
    ColumnSpec(name="phone", type="VARCHAR", semantic="phone", sensitivity="personal"),
    ColumnSpec(
        name="licence", type="VARCHAR", semantic="id_card", sensitivity="personal", mask="pseudonym"
    ),
    ColumnSpec(name="owner_name", type="VARCHAR", semantic="person_name", sensitivity="sensitive"),
    ColumnSpec(
        name="seen_at",
        type="TIMESTAMP",
        semantic="timestamp",
        sensitivity="personal",
        mask="partial",
    ),
    ColumnSpec(name="location", type="VARCHAR", semantic="geo_point"),
]


def view(**kw: Any) -> MaskedView:
    return masked_view(COLUMNS, **{"raw": False, "key": KEY, **kw})


@dataclass
class Engines:
    duck: DuckDBEngine
    spark: SparkEngine
    snapshot: Snapshot
    blobs: BlobStore


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    tmp = tmp_path_factory.mktemp("spark")
    blobs = BlobStore(tmp / "blobs")
    pq.write_table(_table(), tmp / "snapshot.parquet")
    info = blobs.put_file(tmp / "snapshot.parquet")
    snapshot = Snapshot(info.digest, ROWS, info.size)
    duck = DuckDBEngine(DataSettings(), blobs)
    # Generous limits: the machine running the suite may be busy, and the first query also
    # reads the snapshot's footer.
    spark = make_engine(DataSettings(engine="spark", query_timeout_s=600), blobs)
    assert isinstance(spark, SparkEngine)
    yield Engines(duck, spark, snapshot, blobs)
    spark.close()
    duck.close()


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple((v is None, str(v)) for v in row.values())


def _same_rows(duck: pa.Table, spark: pa.Table, *, ordered: bool) -> None:
    assert [(f.name, str(f.type), f.nullable) for f in spark.schema] == [
        (f.name, str(f.type), f.nullable) for f in duck.schema
    ]
    assert spark.schema == duck.schema
    expected, got = duck.to_pylist(), spark.to_pylist()
    if not ordered:
        expected, got = sorted(expected, key=_key), sorted(got, key=_key)
    assert len(got) == len(expected)
    for want, have in zip(expected, got, strict=True):
        assert have.keys() == want.keys()
        for name, value in want.items():
            if isinstance(value, float) and not math.isnan(value):
                assert have[name] == pytest.approx(value, rel=1e-12, abs=1e-12), (name, want)
            else:
                assert have[name] == value, (name, want, have)


def _both(engines: Engines, plan: dict[str, Any], v: MaskedView | None = None) -> pa.Table:
    """Run ``plan`` on both engines, check they agree, return DuckDB's answer."""
    duck, spark, snapshot = engines.duck, engines.spark, engines.snapshot
    parsed = QueryPlan.model_validate(plan)
    compiled = compile_plan(parsed, v or view(), 1, default_limit=5000, max_rows=5000)
    expected = duck.run(snapshot, compiled.expression, compiled.params)
    got = spark.run(snapshot, compiled.expression, compiled.params)
    _same_rows(expected, got, ordered=bool(parsed.order_by) or parsed.grouped)
    return expected


def test_every_aggregate_agrees(engines: Engines) -> None:
    aggregates = [
        {"fn": "count"},
        {"fn": "count", "column": "speed"},
        {"fn": "count_distinct", "column": "plate", "as": "plates"},
        {"fn": "sum", "column": "count"},
        {"fn": "sum", "column": "speed"},
        {"fn": "avg", "column": "count"},
        {"fn": "avg", "column": "speed"},
        {"fn": "min", "column": "minute"},
        {"fn": "max", "column": "reported_at"},
        {"fn": "min", "column": "day"},
        {"fn": "max", "column": "speed"},
        {"fn": "min", "column": "flag"},
        {"fn": "max", "column": "phone"},
    ]
    grouped = _both(
        engines,
        {
            "group_by": ["intersection"],
            "aggregates": aggregates,
            "order_by": [{"column": "avg_speed", "desc": True}],
        },
    )
    assert grouped.num_rows == 7 and None in grouped.column("intersection").to_pylist()
    whole = _both(engines, {"aggregates": aggregates})
    assert whole.column("count").to_pylist() == [ROWS]


def test_every_filter_family_agrees(engines: Engines) -> None:
    # Each plan combines ops of several families (text equality and sets, LIKE with its
    # metacharacters taken literally, order on numbers, times and dates, nulls).
    families = [
        [
            {"column": "intersection", "op": "eq", "value": "I-01"},
            {
                "column": "minute",
                "op": "between",
                "value": ["2026-03-02 06:00:00", "2026-03-03T09:30"],
            },
        ],
        [
            {"column": "intersection", "op": "ne", "value": "I-01"},
            {"column": "count", "op": "lt", "value": 3.5},
            {"column": "speed", "op": "ge", "value": 10},
        ],
        [
            {"column": "intersection", "op": "in", "value": ["I_04", "I%05", "nope"]},
            {"column": "count", "op": "le", "value": 60},
            {"column": "count", "op": "gt", "value": -3},
        ],
        [
            {"column": "intersection", "op": "not_in", "value": ["I-01", "I-02"]},
            {"column": "intersection", "op": "prefix", "value": "I_"},
            {"column": "day", "op": "between", "value": ["2026-03-02", "2026-03-03"]},
        ],
        [
            {"column": "intersection", "op": "contains", "value": "%0"},
            {"column": "reported_at", "op": "gt", "value": "2026-03-03 12:00:00"},
            {"column": "flag", "op": "eq", "value": True},
        ],
        [
            {"column": "intersection", "op": "contains", "value": "\\06"},
            {"column": "count", "op": "is_null"},
        ],
        [{"column": "plate", "op": "not_null"}, {"column": "day", "op": "is_null"}],
    ]
    sizes = []
    for where in families:
        table = _both(
            engines,
            {
                "select": ["n", "intersection", "count", "day"],
                "where": where,
                "order_by": [{"column": "n"}],
            },
        )
        sizes.append(table.num_rows)
    # Each family selects something, and none selects everything.
    assert all(0 < size < ROWS for size in sizes), sizes


def test_time_buckets_agree(engines: Engines) -> None:
    _both(
        engines,
        {
            "group_by": [
                {"column": "minute", "time_bucket": "hour", "as": "hour"},
                {"column": "day", "time_bucket": "day"},
            ],
            "aggregates": [{"fn": "avg", "column": "count", "as": "mean"}, {"fn": "count"}],
        },
    )
    by_day = _both(
        engines,
        {
            "aggregates": [
                {"fn": "time_bucket", "column": "reported_at", "unit": "day", "as": "d"},
                {"fn": "time_bucket", "column": "minute", "unit": "minute", "as": "m"},
                {"fn": "sum", "column": "speed"},
            ],
            "order_by": [{"column": "sum_speed", "desc": True}],
            "limit": 50,
        },
    )
    assert by_day.schema.field("d").type.tz is not None  # zoned stays zoned


def test_every_mask_agrees(engines: Engines) -> None:
    # Personal plates and phones partial, licences pseudonymised, the timestamp cut to its
    # day, the name dropped, points snapped to the grid.
    masked = _both(engines, {"order_by": [{"column": "n"}], "limit": 5000})
    assert "owner_name" not in masked.column_names
    row = masked.slice(1, 1).to_pylist()[0]
    assert row["plate"].count("*") == 3 and row["phone"][3:7] == "****"
    assert row["licence"].startswith("p_") and row["seen_at"].hour == 0
    spots = {s for s in masked.column("location").to_pylist() if s}
    assert len(spots) < ROWS / 3  # snapped: many points share a cell
    # Grouping, counting and filtering act on the masked values alone.
    _both(
        engines,
        {
            "group_by": ["licence", "location"],
            "aggregates": [{"fn": "count"}, {"fn": "count_distinct", "column": "plate"}],
        },
    )
    _both(
        engines,
        {
            "select": ["plate", "phone"],
            "where": [{"column": "plate", "op": "prefix", "value": "浙A·***"}],
            "order_by": [{"column": "phone"}],
        },
    )
    # A grant lifts masks column by column (the name included); the owner sees it all raw.
    lifted = _both(engines, {"order_by": [{"column": "n"}]}, view(unmasked=["plate", "owner_name"]))
    assert "owner_name" in lifted.column_names
    _both(engines, {"order_by": [{"column": "n"}], "limit": 300}, view(raw=True))
    # Another grid size snaps the same way on both.
    _both(engines, {"select": ["location"]}, view(grid_m=120.0))


def test_pages_and_downloads_agree(engines: Engines) -> None:
    duck, spark, snapshot = engines.duck, engines.spark, engines.snapshot
    plan = {"select": ["n", "plate"], "order_by": [{"column": "plate", "desc": True}], "limit": 100}
    page = dict(plan, cursor=encode_cursor(QueryPlan.model_validate(plan), 1, 300))
    _both(engines, page)
    query, params = whole_view(view())
    with duck.stream(snapshot, query, params, batch_rows=500) as reader:
        expected = reader.read_all()
    with spark.stream(snapshot, query, params, batch_rows=500) as reader:
        batches = list(reader)
    assert max(b.num_rows for b in batches) <= 500
    _same_rows(expected, pa.Table.from_batches(batches, schema=expected.schema), ordered=False)


def test_limits_and_bad_values_fail_alike(engines: Engines) -> None:
    duck, spark, snapshot = engines.duck, engines.spark, engines.snapshot
    plan = QueryPlan.model_validate(
        {"where": [{"column": "day", "op": "eq", "value": "the second of March"}]}
    )
    compiled = compile_plan(plan, view(), 1, default_limit=10, max_rows=10)
    for engine in (duck, spark):
        with pytest.raises(InvalidInputError, match="does not fit"):
            engine.run(snapshot, compiled.expression, compiled.params)
    # Java by name never reaches Spark.
    reflect = sqlglot.parse_one(
        "SELECT reflect('java.lang.System', 'getenv', 'HOME') AS h FROM snapshot", read="duckdb"
    )
    with pytest.raises(InvalidInputError, match="reflect"):
        spark.run(snapshot, reflect, {})
    # A query past the time limit is cancelled, and the engine answers the next one.
    quick = SparkEngine(DataSettings(engine="spark", query_timeout_s=3), engines.blobs)
    try:
        endless = sqlglot.parse_one(
            "SELECT count(*) AS c FROM snapshot a, snapshot b, snapshot c, snapshot d "
            "WHERE a.n + b.n + c.n + d.n > -1",
            read="duckdb",
        )
        with pytest.raises(QueryTimeoutError):
            quick.run(snapshot, endless, {})
        count = sqlglot.parse_one("SELECT count(*) AS c FROM snapshot", read="duckdb")
        assert quick.run(snapshot, count, {}).to_pylist() == [{"c": ROWS}]
    finally:
        quick.close()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """The platform with Spark as its data engine (on this module's running session)."""
    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        data=DataSettings(engine="spark", query_timeout_s=600),
    )


def test_the_api_answers_through_spark(engines: Engines, city: City) -> None:
    datasets = Datasets(city)
    handle = datasets.dataset("traffic-police", tier="confidential")
    datasets.grant("xihu-district", handle, tier="confidential")
    plan = {"select": ["plate", "phone", "fine_cny"], "order_by": [{"column": "fine_cny"}]}
    owner = datasets.query("traffic-police", handle, plan)
    agency = datasets.query("xihu-district", handle, plan)
    assert owner.status_code == agency.status_code == 200, agency.text
    assert owner.json()["rows"][0] == ["浙B·54321", "13900001111", 150]
    assert agency.json()["rows"] == [
        ["浙B·***21", "139****1111", 150],
        ["浙A·***45", "138****5678", 200],
        ["浙A·***45", "138****5678", 200],
        ["浙C·***11", "137****2222", None],
    ]
    assert agency.json()["masked"] == ["plate", "phone"]
    arrow = datasets.query(
        "xihu-district", handle, plan, accept="application/vnd.apache.arrow.stream"
    )
    table = pa.ipc.open_stream(arrow.content).read_all()
    assert table.column("plate").to_pylist()[0] == "浙B·***21"
    grouped = datasets.rows(
        "xihu-district",
        handle,
        {"group_by": ["plate"], "aggregates": [{"fn": "sum", "column": "fine_cny", "as": "s"}]},
    )
    assert grouped == [["浙A·***45", 400], ["浙B·***21", 150], ["浙C·***11", None]]
    # The owner's ad hoc SQL (DuckDB's dialect) runs on Spark too, fenced the same way.
    sql = f"/api/v1/products/{handle}/sql"
    owner_sql = city.client.post(
        sql,
        json={"sql": "SELECT plate, count(*) AS n FROM data GROUP BY plate ORDER BY n DESC, plate"},
        headers=city.headers("traffic-police"),
    )
    assert owner_sql.status_code == 200, owner_sql.text
    assert owner_sql.json()["rows"] == [["浙A·12345", 2], ["浙B·54321", 1], ["浙C·11111", 1]]
    java = city.client.post(
        sql,
        json={"sql": "SELECT reflect('java.lang.System', 'getenv', 'HOME') AS h FROM data"},
        headers=city.headers("traffic-police"),
    )
    # (the message names the engine: this app runs on Spark, not DuckDB)
    assert (
        java.status_code == 422
        and "reflect() is not available on the Spark engine" in java.json()["error"]
    )
