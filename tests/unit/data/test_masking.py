"""The masked view under every query: each mask, grants lifting them, and probing that fails."""

from __future__ import annotations

import hashlib
import hmac
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from marketplace.data.compile import compile_plan
from marketplace.data.duckdb_engine import DuckDBEngine
from marketplace.data.engine import Snapshot
from marketplace.data.masking import MaskedView, masked_view
from marketplace.data.plan import QueryPlan
from marketplace.data.schema import ColumnSpec
from marketplace.errors import InvalidInputError
from model_store import BlobStore
from tests.unit.data.conftest import snapshot_of

KEY = bytes(range(32))
TABLE = pa.table(
    {
        "plate": ["浙A·12345", "浙A·12345", "浙B·54321", None],
        "phone": ["13812345678", "13812345678", "13900001111", "110"],
        "id_card": ["330106199001011234", "330106199001011234", "33010619850202345X", None],
        "name": ["张三丰", "张三丰", "李四", "王五"],
        "address": ["西湖区文三路100号", "西湖区文三路100号", "滨江区江南大道1号", "近"],
        "licence": ["L-001", "L-001", "L-002", "L-003"],
        "seen_at": pa.array(
            [1_772_438_400_000_000, 1_772_442_000_000_000, 0, None], pa.timestamp("us")
        ),
        "caller": ["甲", "乙", "丙", "丁"],
        "spot": ["30.274100,120.155100", "30.274200,120.155000", "oops", None],
        "fine": pa.array([200, 200, 150, None], pa.int32()),
    }
)
COLUMNS = [
    ColumnSpec(name="plate", type="VARCHAR", semantic="plate_number", sensitivity="personal"),
    ColumnSpec(name="phone", type="VARCHAR", semantic="phone", sensitivity="personal"),
    ColumnSpec(name="id_card", type="VARCHAR", semantic="id_card", sensitivity="personal"),
    ColumnSpec(name="name", type="VARCHAR", semantic="person_name", sensitivity="personal"),
    ColumnSpec(
        name="address", type="VARCHAR", semantic="address", sensitivity="personal", mask="partial"
    ),
    ColumnSpec(name="licence", type="VARCHAR", sensitivity="personal"),
    ColumnSpec(
        name="seen_at",
        type="TIMESTAMP",
        semantic="timestamp",
        sensitivity="personal",
        mask="partial",
    ),
    ColumnSpec(name="caller", type="VARCHAR", sensitivity="sensitive"),
    ColumnSpec(name="spot", type="VARCHAR", semantic="geo_point"),
    ColumnSpec(name="fine", type="INTEGER"),
]


@pytest.fixture
def snap(blobs: BlobStore, tmp_path: Path) -> Snapshot:
    return snapshot_of(TABLE, blobs, tmp_path)


def view(**kw: Any) -> MaskedView:
    return masked_view(COLUMNS, **{"raw": False, "key": KEY, **kw})


def query(
    engine: DuckDBEngine, snap: Snapshot, plan: dict[str, Any], v: MaskedView | None = None
) -> list[dict[str, Any]]:
    compiled = compile_plan(
        QueryPlan.model_validate(plan), v or view(), 1, default_limit=100, max_rows=100
    )
    rows: list[dict[str, Any]] = engine.run(snap, compiled.expression, compiled.params).to_pylist()
    return rows


def pseudonym(value: str, key: bytes = KEY) -> str:
    return "p_" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:16]


def test_each_mask_by_semantic(engine: DuckDBEngine, snap: Snapshot) -> None:
    rows = query(engine, snap, {})
    assert "caller" not in rows[0]  # sensitive: absent
    assert [r["plate"] for r in rows] == ["浙A·***45", "浙A·***45", "浙B·***21", None]
    assert [r["phone"] for r in rows] == ["138****5678", "138****5678", "139****1111", "****"]
    assert rows[2]["id_card"] == "330106********345X"
    assert [r["name"] for r in rows] == ["张**", "张**", "李**", "王**"]
    assert rows[0]["address"] == "西湖区文三路***" and rows[3]["address"] == "***"
    # No semantic with a partial form: an HMAC-SHA256 pseudonym under the product's key.
    assert [r["licence"] for r in rows] == [
        pseudonym(v) for v in ("L-001", "L-001", "L-002", "L-003")
    ]
    assert rows[0]["seen_at"].hour == 0 and rows[0]["seen_at"].minute == 0  # the day only
    assert rows[3]["fine"] is None and rows[0]["fine"] == 200  # public: as stored


def test_geo_points_snap_to_the_grid(engine: DuckDBEngine, snap: Snapshot) -> None:
    rows = query(engine, snap, {"select": ["spot"]})
    lat, lon = (float(x) for x in rows[0]["spot"].split(","))
    assert rows[0]["spot"] != "30.274100,120.155100"
    # Within half a 500 m cell of the truth; both nearby points land in the same cell.
    dy = (lat - 30.2741) * 111_320
    dx = (lon - 120.1551) * 111_320 * math.cos(math.radians(30.2741))
    assert math.hypot(dx, dy) < 500
    assert rows[1]["spot"] == rows[0]["spot"]
    assert rows[2]["spot"] is None and rows[3]["spot"] is None  # malformed: nothing leaks
    coarse = query(engine, snap, {"select": ["spot"]}, view(grid_m=5000.0))
    assert coarse[0]["spot"] != rows[0]["spot"]


def test_pseudonyms_are_keyed_per_product(engine: DuckDBEngine, snap: Snapshot) -> None:
    other = bytes(32)
    a = query(engine, snap, {"select": ["licence"]})
    b = query(engine, snap, {"select": ["licence"]}, view(key=other))
    assert a[0]["licence"] == a[1]["licence"] != a[2]["licence"]
    assert b[0]["licence"] == pseudonym("L-001", other) != a[0]["licence"]


def test_owners_read_raw_and_grants_lift_masks_column_by_column(
    engine: DuckDBEngine, snap: Snapshot
) -> None:
    raw = query(engine, snap, {}, masked_view(COLUMNS, raw=True))
    assert raw[0]["plate"] == "浙A·12345" and raw[0]["caller"] == "甲"
    assert raw[0]["spot"] == "30.274100,120.155100"
    lifted = query(engine, snap, {}, view(unmasked={"plate", "caller"}))
    assert lifted[0]["plate"] == "浙A·12345" and lifted[0]["caller"] == "甲"
    assert lifted[0]["phone"] == "138****5678"  # still masked


def test_filters_groups_orders_and_aggregates_see_masked_values_only(
    engine: DuckDBEngine, snap: Snapshot
) -> None:
    # Probing for a plate by its real number finds nothing, whether it exists or not.
    for value in ("浙A·12345", "浙Z·99999"):
        assert (
            query(engine, snap, {"where": [{"column": "plate", "op": "eq", "value": value}]}) == []
        )
        assert (
            query(engine, snap, {"where": [{"column": "plate", "op": "in", "value": [value]}]})
            == []
        )
    for probe in ("123", "12345", "A·1"):
        hits = {"where": [{"column": "plate", "op": "contains", "value": probe}]}
        assert query(engine, snap, hits) == []
    assert (
        query(engine, snap, {"where": [{"column": "phone", "op": "prefix", "value": "1381"}]}) == []
    )
    # The masked value itself matches.
    found = query(engine, snap, {"where": [{"column": "plate", "op": "eq", "value": "浙A·***45"}]})
    assert len(found) == 2
    grouped = query(
        engine,
        snap,
        {
            "group_by": ["plate"],
            "aggregates": [
                {"fn": "count", "as": "k"},
                {"fn": "min", "column": "phone", "as": "first_phone"},
                {"fn": "count_distinct", "column": "licence", "as": "licences"},
            ],
            "order_by": [{"column": "plate"}],
        },
    )
    assert grouped == [
        {"plate": "浙A·***45", "k": 2, "first_phone": "138****5678", "licences": 1},
        {"plate": "浙B·***21", "k": 1, "first_phone": "139****1111", "licences": 1},
        {"plate": None, "k": 1, "first_phone": "****", "licences": 1},
    ]
    ordered = query(engine, snap, {"select": ["licence"], "order_by": [{"column": "licence"}]})
    assert [r["licence"] for r in ordered] == sorted(r["licence"] for r in ordered)
    with pytest.raises(InvalidInputError, match=r"needs a number; id_card is VARCHAR \(masked\)"):
        query(engine, snap, {"aggregates": [{"fn": "sum", "column": "id_card"}]})


@pytest.mark.parametrize(
    "plan",
    [
        {"select": ["{col}"]},
        {"where": [{"column": "{col}", "op": "is_null"}]},
        {"where": [{"column": "{col}", "op": "eq", "value": "甲"}]},
        {"group_by": ["{col}"], "aggregates": [{"fn": "count"}]},
        {"aggregates": [{"fn": "count_distinct", "column": "{col}"}]},
        {"order_by": [{"column": "{col}"}]},
    ],
)
def test_a_sensitive_column_answers_exactly_like_a_missing_one(
    engine: DuckDBEngine, snap: Snapshot, plan: dict[str, Any]
) -> None:
    import json

    def error(col: str) -> str:
        with pytest.raises(InvalidInputError) as e:
            query(engine, snap, json.loads(json.dumps(plan).replace("{col}", col)))
        return e.value.message.replace(col, "<col>")

    assert error("caller") == error("no_such_column")
    # A grant that names it makes it readable.
    lifted = view(unmasked={"caller"})
    assert query(engine, snap, {"select": ["caller"]}, lifted)[0] == {"caller": "甲"}


def test_the_masked_schema_says_what_the_caller_sees() -> None:
    shown = {c["name"]: c for c in view().schema()}
    assert "caller" not in shown
    assert shown["plate"]["masked"] == "partial" and shown["licence"]["masked"] == "pseudonym"
    assert shown["spot"]["masked"] == "geo_grid" and "masked" not in shown["fine"]
    assert shown["seen_at"]["type"] == "TIMESTAMP" and shown["phone"]["type"] == "VARCHAR"
    owner = {c["name"]: c for c in masked_view(COLUMNS, raw=True).schema()}
    assert "caller" in owner and "masked" not in owner["plate"]


def test_a_pseudonymised_view_cannot_be_queried_without_its_key() -> None:
    keyless = masked_view(COLUMNS, raw=False)
    with pytest.raises(ValueError, match="key"):
        keyless.select()
