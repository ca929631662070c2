"""The demo city's datasets: real data at seed time, deterministic, served under the same
tiers and masks as any other dataset."""

from __future__ import annotations

from typing import Any

import pytest

from marketplace.config import DataSettings
from marketplace.data.demo import DEMO_DATASETS, build_snapshots
from marketplace.data.demo_tables import intersection_flow
from marketplace.db import transaction
from marketplace.seed import seed_demo_city
from model_store import BlobStore
from tests.utils.datasets import Datasets

SMALL = DataSettings(demo_flow_days=1, demo_intersections=8)
README_PLAN: dict[str, Any] = {
    "select": ["intersection", "minute", "count"],
    "where": [{"column": "intersection", "op": "in", "value": ["I-03", "I-07"]}],
    "group_by": ["intersection"],
    "aggregates": [{"fn": "avg", "column": "count", "as": "mean_flow"}],
    "order_by": [{"column": "mean_flow", "desc": True}],
    "limit": 100,
}


@pytest.fixture
def demo(datasets: Datasets) -> Datasets:
    """The city seeded again with its blob store: every demo dataset gets its data."""
    blobs = datasets.city.client.app.state.blobs  # type: ignore[attr-defined]
    with transaction(datasets.city.session_factory) as s:
        seed_demo_city(s, blobs=blobs, data=SMALL)
    return datasets


def test_the_full_flow_table_is_a_week_at_fifty_intersections() -> None:
    table, schema = intersection_flow(DataSettings())
    assert table.num_rows == 7 * 1440 * 50 >= 500_000
    assert [c["name"] for c in schema["columns"]] == [
        "intersection",
        "minute",
        "count",
        "avg_speed_kmh",
    ]


def test_demo_data_is_the_same_every_time(tmp_path: Any) -> None:
    first = build_snapshots(DEMO_DATASETS[:2], SMALL, BlobStore(tmp_path / "a"))
    again = build_snapshots(DEMO_DATASETS[:2], SMALL, BlobStore(tmp_path / "b"))
    assert first == again
    assert BlobStore(tmp_path / "b").list_digests() == sorted(
        f["data_digest"] for f in first.values()
    )


def test_every_demo_dataset_holds_data_and_serves_it(demo: Datasets) -> None:
    for dataset in DEMO_DATASETS:
        owner = dataset.handle.split(".")[0]
        r = demo.query(owner, dataset.handle, {"aggregates": [{"fn": "count"}]})
        assert r.status_code == 200, (dataset.handle, r.text)
        assert r.json()["rows"][0][0] > 0
    flows = demo.query("parkeasy", "traffic-police.intersection-flow", README_PLAN).json()
    assert [row[0] for row in flows["rows"]] in (["I-03", "I-07"], ["I-07", "I-03"])
    assert flows["rows"][0][1] >= flows["rows"][1][1] > 0
    assert flows["columns"] == [
        {"name": "intersection", "type": "VARCHAR"},
        {"name": "mean_flow", "type": "DOUBLE"},
    ]
    # Open data downloads whole; the rest is for querying. (The fixture's city was seeded
    # without data first: its data is version 2.)
    air = demo.city.client.get(
        "/api/v1/products/environment.air-quality/versions/2/data",
        params={"format": "csv"},
        headers=demo.city.headers("parkeasy"),
    )
    assert air.status_code == 200 and air.headers["x-row-count"] == "7200"
    assert len(air.text.splitlines()) == 7201
    # Seeding again adds nothing.
    blobs = demo.city.client.app.state.blobs  # type: ignore[attr-defined]
    stored = blobs.list_digests()
    with transaction(demo.city.session_factory) as s:
        again = seed_demo_city(s, blobs=blobs, data=SMALL)
    assert again.created_products == [] and blobs.list_digests() == stored


def test_demo_personal_data_is_masked_for_grantees(demo: Datasets) -> None:
    violations = "traffic-police.violation-records"
    tickets = "hotline-12345.complaint-tickets"
    demo.grant("xihu-district", violations, tier="confidential")
    demo.grant("xihu-district", tickets, tier="confidential")
    raw = demo.rows("traffic-police", violations, {"select": ["plate"], "limit": 3})
    masked = demo.rows("xihu-district", violations, {"select": ["plate"], "limit": 3})
    for (plain,), (shown,) in zip(raw, masked, strict=True):
        assert shown == plain[:3] + "***" + plain[-2:] and plain != shown
    r = demo.city.client.get(
        f"/api/v1/products/{violations}/versions/2/data", headers=demo.city.headers("xihu-district")
    )
    assert r.status_code == 403 and "does not allow downloads" in r.json()["error"]
    r = demo.query("xihu-district", tickets, {"limit": 1})
    cols = [c["name"] for c in r.json()["columns"]]
    assert "caller_name" not in cols and "caller_phone" in cols
    assert "****" in r.json()["rows"][0][cols.index("caller_phone")]
    covers = "city-management.manhole-covers"
    demo.grant("parkeasy", covers, tier="restricted")
    exact = demo.rows("city-management", covers, {"select": ["location"], "limit": 5})
    snapped = demo.rows("parkeasy", covers, {"select": ["location"], "limit": 5})
    assert all(a != b for (a,), (b,) in zip(exact, snapped, strict=True))
