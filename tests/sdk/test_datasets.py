"""Datasets through the SDK: push a CSV as a version, query it (rows, pandas, Arrow, files,
pages), see masking as another tenant, download whole versions, and the metering of queries.

The query and download API is issue 16's (items 3 and 5). While the platform lacks those routes
these tests skip, saying so; once the routes exist they run as they are.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from citybrain_sdk import Client, MethodNotAllowed, NotFound

from tests.sdk.conftest import await_usage, client_for, skip_unless_route
from tests.sdk.server import Platform

LOTS = ("L-01", "L-02", "L-03")
START = datetime(2026, 11, 2, 8, 0)
ROWS = [
    {
        "lot": lot,
        "minute": (START + timedelta(minutes=m)).isoformat(sep=" "),
        "free": (i * 7 + m * 3) % 40,
        "plate": f"浙A·{10000 + i * 100 + m}",
    }
    for i, lot in enumerate(LOTS)
    for m in range(10)
]
SCHEMA = {
    "columns": [
        {"name": "lot", "type": "VARCHAR", "description": "Car park"},
        {"name": "minute", "type": "TIMESTAMP"},
        {"name": "free", "type": "INTEGER", "description": "Free spaces"},
        {
            "name": "plate",
            "type": "VARCHAR",
            "semantic": "plate_number",
            "sensitivity": "personal",
            "description": "Last car in",
        },
    ],
    "quality": [{"rule": "not_null", "column": "lot"}],
}


@pytest.fixture(scope="module")
def spaces(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A public dataset of ParkEasy's with 30 rows pushed through the SDK."""
    data = tmp_path_factory.mktemp("spaces") / "spaces.csv"
    with data.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(ROWS[0]))
        writer.writeheader()
        writer.writerows(ROWS)
    progress: list[tuple[int, int | None]] = []
    with client_for(platform, "parkeasy") as cb:
        product = cb.catalog.create(
            "sdk-spaces", kind="dataset", title="Free spaces (SDK tests)", domain="traffic"
        )
        try:
            version = cb.datasets.push(
                product.handle,
                data,
                schema=SCHEMA,
                progress=lambda done, total: progress.append((done, total)),
            )
        except (NotFound, MethodNotAllowed) as e:
            skip_unless_route(e)
        assert version.version == 1 and version.rows == len(ROWS)
        assert version.sha256 and version.schema is not None
        assert [c["name"] for c in version.schema["columns"]] == ["lot", "minute", "free", "plate"]
        assert progress[-1] == (data.stat().st_size, data.stat().st_size)
        cb.catalog.publish(product.handle)
    yield product.handle


def test_query_rows_filters_and_order(cb: Client, spaces: str) -> None:
    page = cb.datasets.query(
        spaces,
        select=["lot", "free"],
        where=[("lot", "in", ["L-01", "L-03"]), ("free", "ge", 10)],
        order_by=["-free", "lot"],
        limit=5,
    )
    expected = sorted(
        ((r["lot"], r["free"]) for r in ROWS if r["lot"] in ("L-01", "L-03") and r["free"] >= 10),
        key=lambda t: (-t[1], t[0]),
    )[:5]
    assert page.column_names == ["lot", "free"]
    assert [tuple(r) for r in page.rows] == expected
    assert page.row_count == 5 and page.version == 1 and page.masked == []  # the owner's view
    assert page.records()[0] == {"lot": expected[0][0], "free": expected[0][1]}


def test_group_by_and_aggregates(cb: Client, spaces: str) -> None:
    page = cb.datasets.query(
        spaces,
        group_by=["lot"],
        aggregates=[("avg", "free", "mean_free"), ("count", "*", "n")],
        order_by=["lot"],
    )
    assert page.column_names == ["lot", "mean_free", "n"]
    for (lot, mean_free, n), expected_lot in zip(page.rows, LOTS, strict=True):
        values = [r["free"] for r in ROWS if r["lot"] == expected_lot]
        assert lot == expected_lot and n == len(values)
        assert mean_free == pytest.approx(sum(values) / len(values))


def test_pandas_arrow_and_files(cb: Client, spaces: str, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    page = cb.datasets.query(spaces, select=["lot", "free"], order_by=["lot", "free"])
    frame = page.to_pandas()
    assert frame.columns.tolist() == ["lot", "free"] and len(frame) == len(ROWS)
    assert frame["free"].sum() == sum(r["free"] for r in ROWS)
    assert page.to_arrow().num_rows == len(ROWS)

    table = cb.datasets.query_arrow(spaces, select=["lot", "free"], order_by=["lot", "free"])
    assert table.column_names == ["lot", "free"] and pa.types.is_integer(table.schema[1].type)
    assert table.column("free").to_pylist() == frame["free"].tolist()

    csv_path = cb.datasets.query_to_file(spaces, tmp_path / "q.csv", select=["lot", "free"])
    with csv_path.open(encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == len(ROWS)
    parquet_path = cb.datasets.query_to_file(
        spaces, tmp_path / "q.parquet", format="parquet", where=[("lot", "eq", "L-02")]
    )
    assert pq.read_table(parquet_path).num_rows == sum(1 for r in ROWS if r["lot"] == "L-02")


def test_pages_follow_the_cursor(cb: Client, spaces: str) -> None:
    pages = list(cb.datasets.pages(spaces, select=["plate"], order_by=["plate"], limit=7))
    plates = [row[0] for page in pages for row in page.rows]
    assert len(pages) == 5 and pages[-1].next_cursor is None
    assert plates == sorted(r["plate"] for r in ROWS)


def test_another_tenant_sees_plates_masked(platform: Platform, spaces: str) -> None:
    with client_for(platform, "tourism") as other:
        page = other.datasets.query(spaces, select=["lot", "plate"], order_by=["lot"], limit=3)
    assert page.masked == ["plate"]
    raw = {r["plate"] for r in ROWS}
    assert page.rows and not raw & {row[1] for row in page.rows}


def test_download_whole_versions(cb: Client, spaces: str, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    progress: list[tuple[int, int | None]] = []
    path = cb.datasets.download(
        spaces, tmp_path, progress=lambda done, total: progress.append((done, total))
    )
    assert path.parent == tmp_path and path.suffix == ".parquet"
    assert pq.read_table(path).num_rows == len(ROWS)
    assert progress and progress[-1][0] == path.stat().st_size
    as_csv = cb.datasets.download(spaces, tmp_path / "all.csv", version=1, format="csv")
    text = as_csv.read_text(encoding="utf-8")
    assert len(list(csv.DictReader(io.StringIO(text)))) == len(ROWS)
    lines = cb.datasets.download(spaces, tmp_path / "all.jsonl", format="jsonl").read_text("utf-8")
    assert {json.loads(line)["lot"] for line in lines.splitlines()} == set(LOTS)


def test_queries_are_metered_in_rows_once_per_key(platform: Platform, spaces: str) -> None:
    """hotline-12345 queries nothing else in these tests: its usage is this test's."""
    with client_for(platform, "hotline-12345") as cb:
        first = cb.datasets.query(spaces, select=["lot"], limit=4, idempotency_key="sdk-rows-1")
        again = cb.datasets.query(spaces, select=["lot"], limit=4, idempotency_key="sdk-rows-1")
        assert first.rows == again.rows and again.replayed and not first.replayed
        cb.datasets.query(spaces, select=["lot"], limit=2)
        # The spool reaches the database in order: once a later call shows, so have these.
        cb.models.infer("traffic-police.flow-smoother", {"flow": np.ones((1, 4), np.float32)})
        await_usage(cb, "traffic-police.flow-smoother", events=1)
        rows = cb.usage.list(product=spaces)
    assert sum(r.events for r in rows) == 2
    assert {r.unit for r in rows} == {"rows"}
    assert sum(r.quantity for r in rows) == 6
