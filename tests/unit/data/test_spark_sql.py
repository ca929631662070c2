"""Plans rendered for Spark (no JVM needed): values stay bound parameters, the snapshot is the
view Spark reads, DuckDB's meaning is kept where Spark's functions differ, and Java is out of
reach. Spark itself runs these in tests/integration/test_spark_engine.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlglot

from marketplace.config import DataSettings
from marketplace.data.compile import compile_plan
from marketplace.data.duckdb_engine import DuckDBEngine
from marketplace.data.engine import make_engine
from marketplace.data.masking import masked_view
from marketplace.data.plan import QueryPlan
from marketplace.data.schema import ColumnSpec
from marketplace.data.spark_engine import SparkEngine, snapshot_view, spark_conf
from marketplace.data.spark_sql import to_spark_sql
from marketplace.errors import InvalidInputError
from model_store import BlobStore

COLUMNS = [
    ColumnSpec(name="plate", type="VARCHAR", semantic="plate_number", sensitivity="personal"),
    ColumnSpec(name="licence", type="VARCHAR", sensitivity="personal", mask="pseudonym"),
    ColumnSpec(name="spot", type="VARCHAR", semantic="geo_point"),
    ColumnSpec(name="seen", type="TIMESTAMP"),
    ColumnSpec(name="fine", type="INTEGER"),
]


def _spark(plan: dict[str, object]) -> tuple[str, dict[str, object]]:
    view = masked_view(COLUMNS, raw=False, key=b"k" * 32)
    compiled = compile_plan(QueryPlan.model_validate(plan), view, 1, default_limit=10, max_rows=10)
    return to_spark_sql(compiled.expression, "cb_snapshot_ab"), compiled.params


def test_values_stay_parameters_and_the_snapshot_is_its_view() -> None:
    hostile = "x' OR 1=1 --"
    sql, params = _spark(
        {
            "select": ["plate", "seen"],
            "where": [
                {"column": "plate", "op": "eq", "value": hostile},
                {"column": "seen", "op": "ge", "value": "2026-03-02 08:00:00"},
            ],
        }
    )
    assert hostile not in sql and "2026-03-02" not in sql
    assert params["p0"] == hostile and ":p0" in sql and ":mask_ipad" in sql
    assert "FROM cb_snapshot_ab" in sql and "snapshot)" not in sql
    # DuckDB's TIMESTAMP is Spark's TIMESTAMP_NTZ; the point parser stays a TRY_CAST.
    assert "CAST(:p1 AS TIMESTAMP_NTZ)" in sql
    assert "TRY_CAST(" in sql and " RLIKE " in sql


def test_the_geo_grid_is_computed_in_doubles_and_printed_as_duckdb_prints() -> None:
    sql, _ = _spark({"select": ["spot"]})
    # No decimal literal is left to Spark's DECIMAL arithmetic, no ROUND(x, 5) to its
    # half-up rounding of decimal text.
    tree = sqlglot.parse_one(sql, read="spark")
    for literal in tree.find_all(sqlglot.exp.Literal):
        if literal.is_number and not literal.is_int:
            assert isinstance(literal.parent, sqlglot.exp.Cast)
    assert not [r for r in tree.find_all(sqlglot.exp.Round) if r.args.get("decimals")]


@pytest.mark.parametrize(
    "call",
    [
        "reflect('java.lang.System', 'getenv', 'HOME')",
        "java_method('java.lang.Runtime', 'getRuntime')",
        "input_file_name()",
        "some_udf(plate)",
    ],
)
def test_functions_spark_must_not_run_are_refused(call: str) -> None:
    query = sqlglot.parse_one(f"SELECT {call} AS x FROM snapshot", read="duckdb")
    with pytest.raises(InvalidInputError, match="not available on the Spark engine"):
        to_spark_sql(query, "cb_snapshot_ab")


def test_the_spark_engine_is_made_but_not_started(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    engine = make_engine(DataSettings(engine="spark", spark_master="local[2]"), blobs)
    assert isinstance(engine, SparkEngine) and not engine.started
    engine.close()
    assert isinstance(make_engine(DataSettings(), blobs), DuckDBEngine)


def test_the_session_binds_loopback_and_reads_no_file_by_path() -> None:
    conf = spark_conf(DataSettings(spark_conf={"spark.executor.memory": "8g"}))
    assert conf["spark.driver.host"] == conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.sql.runSQLOnFiles"] == "false" and conf["spark.ui.enabled"] == "false"
    assert conf["spark.sql.session.timeZone"] == "UTC" and conf["spark.sql.ansi.enabled"] == "true"
    assert conf["spark.executor.memory"] == "8g"
    assert snapshot_view("sha256:" + "ab" * 32) == "cb_snapshot_" + "ab" * 32
