"""Query plans → sqlglot → DuckDB: every op, every aggregate, paging, and what is refused."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from marketplace.data.compile import compile_plan, encode_cursor
from marketplace.data.duckdb_engine import DuckDBEngine
from marketplace.data.engine import Snapshot
from marketplace.data.masking import MaskedView, masked_view
from marketplace.data.plan import QueryPlan
from marketplace.data.schema import ColumnSpec
from marketplace.errors import InvalidInputError
from model_store import BlobStore
from tests.unit.data.conftest import snapshot_of

TABLE = pa.table(
    {
        "name": ["a", "b", "c%", None, "ab_x"],
        "n": pa.array([1, 2, 3, 4, None], pa.int64()),
        "x": [0.5, 1.5, 2.5, None, 4.5],
        "t": pa.array(
            [
                datetime(2026, 3, 2, 8, 0),
                datetime(2026, 3, 2, 8, 30),
                datetime(2026, 3, 2, 9, 15),
                datetime(2026, 3, 3, 0, 10),
                None,
            ],
            pa.timestamp("us"),
        ),
        "flag": [True, False, True, False, None],
    }
)
COLUMNS = [
    ColumnSpec(name="name", type="VARCHAR"),
    ColumnSpec(name="n", type="BIGINT"),
    ColumnSpec(name="x", type="DOUBLE"),
    ColumnSpec(name="t", type="TIMESTAMP"),
    ColumnSpec(name="flag", type="BOOLEAN"),
]


@pytest.fixture
def snap(blobs: BlobStore, tmp_path: Path) -> Snapshot:
    return snapshot_of(TABLE, blobs, tmp_path)


def run(
    engine: DuckDBEngine,
    snap: Snapshot,
    plan: dict[str, Any],
    view: MaskedView | None = None,
    *,
    max_rows: int = 1000,
) -> tuple[list[str], list[dict[str, Any]], Any]:
    compiled = compile_plan(
        QueryPlan.model_validate(plan),
        view or masked_view(COLUMNS, raw=True),
        1,
        default_limit=100,
        max_rows=max_rows,
    )
    table = engine.run(snap, compiled.expression, compiled.params)
    return [c.name for c in compiled.columns], table.to_pylist()[: compiled.page_size], compiled


def names(engine: DuckDBEngine, snap: Snapshot, *where: dict[str, Any]) -> list[Any]:
    _, rows, _ = run(engine, snap, {"select": ["name"], "where": list(where)})
    return [r["name"] for r in rows]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"column": "name", "op": "eq", "value": "a"}, ["a"]),
        ({"column": "name", "op": "ne", "value": "a"}, ["b", "c%", "ab_x"]),
        ({"column": "n", "op": "lt", "value": 3}, ["a", "b"]),
        ({"column": "n", "op": "le", "value": 3}, ["a", "b", "c%"]),
        ({"column": "n", "op": "gt", "value": 3}, [None]),
        ({"column": "n", "op": "ge", "value": 3}, ["c%", None]),
        ({"column": "n", "op": "lt", "value": 2.5}, ["a", "b"]),  # a fraction stays one
        ({"column": "x", "op": "gt", "value": 2}, ["c%", "ab_x"]),
        ({"column": "name", "op": "in", "value": ["a", "c%", "zz"]}, ["a", "c%"]),
        ({"column": "name", "op": "not_in", "value": ["a", "c%"]}, ["b", "ab_x"]),
        ({"column": "n", "op": "between", "value": [2, 3]}, ["b", "c%"]),
        ({"column": "name", "op": "is_null"}, [None]),
        ({"column": "n", "op": "not_null"}, ["a", "b", "c%", None]),
        ({"column": "name", "op": "prefix", "value": "a"}, ["a", "ab_x"]),
        ({"column": "name", "op": "contains", "value": "%"}, ["c%"]),  # % is no wildcard
        ({"column": "name", "op": "contains", "value": "_"}, ["ab_x"]),  # nor is _
        ({"column": "t", "op": "ge", "value": "2026-03-02 09:00:00"}, ["c%", None]),
        ({"column": "t", "op": "between", "value": ["2026-03-02", "2026-03-02 08:59"]}, ["a", "b"]),
        ({"column": "flag", "op": "eq", "value": True}, ["a", "c%"]),
    ],
)
def test_every_filter_op(
    engine: DuckDBEngine, snap: Snapshot, where: dict[str, Any], expected: list[Any]
) -> None:
    assert names(engine, snap, where) == expected


def test_filters_combine_with_and(engine: DuckDBEngine, snap: Snapshot) -> None:
    both = names(
        engine,
        snap,
        {"column": "n", "op": "ge", "value": 2},
        {"column": "name", "op": "prefix", "value": "c"},
    )
    assert both == ["c%"]


def test_aggregates_and_time_buckets(engine: DuckDBEngine, snap: Snapshot) -> None:
    cols, rows, compiled = run(
        engine,
        snap,
        {
            "aggregates": [
                {"fn": "count"},
                {"fn": "count", "column": "n", "as": "with_n"},
                {"fn": "count_distinct", "column": "flag"},
                {"fn": "sum", "column": "n"},
                {"fn": "avg", "column": "x"},
                {"fn": "min", "column": "t"},
                {"fn": "max", "column": "name"},
            ]
        },
    )
    assert cols == [
        "count",
        "with_n",
        "count_distinct_flag",
        "sum_n",
        "avg_x",
        "min_t",
        "max_name",
    ]
    assert [c.type for c in compiled.columns] == [
        "BIGINT",
        "BIGINT",
        "BIGINT",
        "BIGINT",
        "DOUBLE",
        "TIMESTAMP",
        "VARCHAR",
    ]
    assert list(rows[0].values()) == [5, 4, 2, 10, 2.25, datetime(2026, 3, 2, 8, 0), "c%"]

    for unit, expected in [
        ("hour", [(datetime(2026, 3, 2, 8), 2), (datetime(2026, 3, 2, 9), 1)]),
        ("day", [(datetime(2026, 3, 2), 3), (datetime(2026, 3, 3), 1)]),
        ("minute", [(datetime(2026, 3, 2, 8, 0), 1), (datetime(2026, 3, 2, 8, 30), 1)]),
    ]:
        # As a group-by key, and as an aggregate: the same groups.
        key = {"column": "t", "time_bucket": unit, "as": "bucket"}
        agg = {"fn": "time_bucket", "column": "t", "unit": unit, "as": "bucket"}
        for plan in (
            {"group_by": [key], "aggregates": [{"fn": "count", "as": "k"}]},
            {"aggregates": [agg, {"fn": "count", "as": "k"}]},
        ):
            where = [{"column": "t", "op": "not_null"}]
            _, rows, _ = run(engine, snap, {**plan, "where": where, "limit": 2})
            assert [(r["bucket"], r["k"]) for r in rows] == expected


def test_group_by_orders_and_pages_without_repeating_a_row(
    engine: DuckDBEngine, snap: Snapshot
) -> None:
    plan: dict[str, Any] = {
        "group_by": ["flag"],
        "aggregates": [{"fn": "count", "as": "k"}, {"fn": "sum", "column": "n", "as": "s"}],
        "order_by": [{"column": "k", "desc": True}],
    }
    _, rows, _ = run(engine, snap, plan)
    assert rows == [
        {"flag": False, "k": 2, "s": 6},
        {"flag": True, "k": 2, "s": 4},
        {"flag": None, "k": 1, "s": None},
    ]
    seen: list[Any] = []
    cursor = None
    for _ in range(5):
        _, page, compiled = run(engine, snap, {"select": ["name"], "limit": 2, "cursor": cursor})
        seen += [r["name"] for r in page]
        more = len(engine.run(snap, compiled.expression, compiled.params)) > compiled.page_size
        if not more:
            break
        cursor = encode_cursor(
            QueryPlan.model_validate({"select": ["name"], "limit": 2}),
            1,
            compiled.offset + compiled.page_size,
        )
    assert seen == ["a", "b", "c%", None, "ab_x"]


def test_a_cursor_continues_its_own_query_only(engine: DuckDBEngine, snap: Snapshot) -> None:
    plan = QueryPlan.model_validate({"select": ["name"], "limit": 2})
    cursor = encode_cursor(plan, 1, 2)
    _, rows, _ = run(engine, snap, {"select": ["name"], "limit": 2, "cursor": cursor})
    assert [r["name"] for r in rows] == ["c%", None]
    with pytest.raises(InvalidInputError, match="another query"):
        run(engine, snap, {"select": ["n"], "limit": 2, "cursor": cursor})
    with pytest.raises(InvalidInputError, match="invalid cursor"):
        run(engine, snap, {"select": ["name"], "cursor": "not-a-cursor"})


def test_the_row_cap_bounds_every_page(engine: DuckDBEngine, snap: Snapshot) -> None:
    _, rows, compiled = run(engine, snap, {"select": ["n"], "limit": 500}, max_rows=3)
    assert compiled.page_size == 3 and len(rows) == 3


@pytest.mark.parametrize(
    "plan",
    [
        {"select": ['name" FROM snapshot; --']},
        {"select": ["name", "nope"]},
        {"where": [{"column": "n) OR (1=1", "op": "eq", "value": 1}]},
        {"group_by": ["name; DROP TABLE x"], "aggregates": [{"fn": "count"}]},
        {"aggregates": [{"fn": "sum", "column": "*"}]},
        {"order_by": [{"column": "1"}]},
    ],
)
def test_identifiers_must_be_columns_of_the_view(
    engine: DuckDBEngine, snap: Snapshot, plan: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInputError, match="unknown column"):
        run(engine, snap, plan)


@pytest.mark.parametrize(
    "plan",
    [
        {"aggregates": [{"fn": "count", "as": 'k" , 1 AS "z'}]},
        {"group_by": [{"column": "name", "as": "a b"}], "aggregates": []},
        {"aggregates": [{"fn": "sum(n); --", "column": "n"}]},
        {"where": [{"column": "n", "op": "= 1 OR", "value": 1}]},
        {"where": [{"column": "n", "op": "in", "value": []}]},
        {"where": [{"column": "n", "op": "eq", "value": {"$ne": 1}}]},
        {"select": ["name"], "sql": "SELECT 1"},
    ],
)
def test_malformed_plans_are_refused_before_any_sql(plan: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        QueryPlan.model_validate(plan)


def test_values_are_bound_never_pasted(engine: DuckDBEngine, snap: Snapshot) -> None:
    attack = "a' OR '1'='1"
    assert names(engine, snap, {"column": "name", "op": "eq", "value": attack}) == []
    assert names(engine, snap, {"column": "name", "op": "in", "value": [attack, "b"]}) == ["b"]
    assert names(engine, snap, {"column": "name", "op": "prefix", "value": "%"}) == []
    _, _, compiled = run(engine, snap, {"where": [{"column": "name", "op": "eq", "value": attack}]})
    assert attack not in compiled.sql("duckdb") and attack in compiled.params.values()


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"column": "n", "op": "eq", "value": "1"}, "compare it with a number"),
        ({"column": "name", "op": "gt", "value": 3}, "compare it with a string"),
        ({"column": "flag", "op": "eq", "value": 1}, "compare it with true or false"),
        ({"column": "flag", "op": "eq", "value": "yes"}, "compare it with true or false"),
        ({"column": "n", "op": "eq", "value": True}, "not BOOLEAN"),
        ({"column": "n", "op": "contains", "value": "1"}, "not text"),
    ],
)
def test_values_must_fit_their_column(
    engine: DuckDBEngine, snap: Snapshot, where: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        run(engine, snap, {"where": [where]})


def test_a_timestamp_that_does_not_parse_is_a_422_not_a_crash(
    engine: DuckDBEngine, snap: Snapshot
) -> None:
    with pytest.raises(InvalidInputError, match="does not fit its column's type"):
        names(engine, snap, {"column": "t", "op": "lt", "value": "yesterday-ish"})


def test_functions_must_fit_their_column(engine: DuckDBEngine, snap: Snapshot) -> None:
    with pytest.raises(InvalidInputError, match="needs a number"):
        run(engine, snap, {"aggregates": [{"fn": "avg", "column": "name"}]})
    with pytest.raises(InvalidInputError, match="time_bucket needs a date or timestamp"):
        run(engine, snap, {"group_by": [{"column": "n", "time_bucket": "hour"}]})
    with pytest.raises(InvalidInputError, match="orders by its output columns"):
        run(engine, snap, {"group_by": ["flag"], "order_by": [{"column": "n"}]})
    with pytest.raises(InvalidInputError, match="appears twice"):
        run(engine, snap, {"select": ["n", "n"]})


def test_one_plan_renders_for_several_engines(engine: DuckDBEngine, snap: Snapshot) -> None:
    _, _, compiled = run(
        engine,
        snap,
        {
            "where": [{"column": "name", "op": "prefix", "value": "a"}],
            "group_by": [{"column": "t", "time_bucket": "hour", "as": "h"}],
            "aggregates": [{"fn": "count_distinct", "column": "name"}],
        },
    )
    duck, spark = compiled.sql("duckdb"), compiled.sql("spark")
    assert '"name" LIKE $p0' in duck and "`name` LIKE :p0" in spark
    assert "DATE_TRUNC('HOUR'" in duck and "DATE_TRUNC('HOUR'" in spark
