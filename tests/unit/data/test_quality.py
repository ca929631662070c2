"""Quality rules at upload: each rule, the score, blocking rules that keep a version from
being published, and the score on the listing and in search (``min_quality``)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.utils.datasets import Datasets

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends

CSV = """id,kind,n,seen,code
1,a,5,2026-03-02 08:00:00,AB-1
2,b,-3,2026-03-02 09:00:00,AB-2
2,z,700,2026-03-02 10:00:00,bad
4,,12,,AB-4
"""
COLUMNS = [
    {"name": "id", "type": "INTEGER"},
    {"name": "kind"},
    {"name": "n", "type": "INTEGER"},
    {"name": "seen", "type": "TIMESTAMP"},
    {"name": "code"},
]


def _report(datasets: Datasets, rules: list[dict[str, Any]]) -> dict[str, Any]:
    handle = datasets.city.product("traffic-police", publish=False)
    r = datasets.upload("traffic-police", handle, CSV, {"columns": COLUMNS, "quality": rules})
    assert r.status_code == 201, r.text
    quality: dict[str, Any] = r.json()["quality"]
    return quality


@pytest.mark.parametrize(
    ("rule", "passed", "failing", "sample"),
    [
        ({"rule": "not_null", "column": "kind"}, False, 1, []),
        ({"rule": "not_null", "column": "id"}, True, 0, []),
        ({"rule": "unique", "column": "id"}, False, 2, ["2"]),
        ({"rule": "unique", "column": "code"}, True, 0, []),
        ({"rule": "range", "column": "n", "min": 0, "max": 500}, False, 2, ["-3", "700"]),
        ({"rule": "range", "column": "n", "min": -10}, True, 0, []),
        (
            {"rule": "range", "column": "seen", "max": "2026-03-02 09:30:00"},
            False,
            1,
            ["2026-03-02 10:00:00"],
        ),
        ({"rule": "pattern", "column": "code", "pattern": "[A-Z]{2}-[0-9]+"}, False, 1, ["bad"]),
        ({"rule": "allowed_values", "column": "kind", "values": ["a", "b"]}, False, 1, ["z"]),
        ({"rule": "allowed_values", "column": "n", "values": [5, -3, 700, 12]}, True, 0, []),
        (
            {"rule": "freshness", "column": "seen", "max_age_hours": 24},
            False,
            4,
            ["2026-03-02T10:00:00"],
        ),
        ({"rule": "freshness", "column": "seen", "max_age_hours": 24 * 365 * 20}, True, 0, []),
        ({"rule": "min_rows", "min": 4}, True, 0, []),
        ({"rule": "min_rows", "min": 10}, False, 6, ["4"]),
    ],
)
def test_each_rule(
    datasets: Datasets, rule: dict[str, Any], passed: bool, failing: int, sample: list[str]
) -> None:
    report = _report(datasets, [rule])
    (result,) = report["rules"]
    assert (result["rule"], result["column"]) == (rule["rule"], rule.get("column"))
    assert (result["passed"], result["failing_rows"]) == (passed, failing)
    assert sorted(result["sample"]) == sorted(sample)
    assert report["blocked"] is False


def test_the_score_is_the_mean_share_of_rows_that_pass(datasets: Datasets) -> None:
    report = _report(
        datasets,
        [
            {"rule": "not_null", "column": "kind"},  # 3 of 4
            {"rule": "range", "column": "n", "min": 0, "max": 500},  # 2 of 4
            {"rule": "min_rows", "min": 1},  # passes
        ],
    )
    assert report["score"] == pytest.approx((0.75 + 0.5 + 1) / 3, abs=1e-4)
    assert _report(datasets, [])["score"] is None


def test_a_failing_blocking_rule_keeps_the_version_unpublished(datasets: Datasets) -> None:
    city, h = datasets.city, datasets.city.headers
    blocking = [{"rule": "unique", "column": "id", "blocking": True}]
    handle = city.product("traffic-police", publish=False)
    r = datasets.upload("traffic-police", handle, CSV, {"columns": COLUMNS, "quality": blocking})
    assert r.status_code == 201 and r.json()["quality"]["blocked"] is True
    r = city.client.post(f"/api/v1/products/{handle}/publish", headers=h("traffic-police"))
    assert r.status_code == 409 and "fails blocking quality rules (unique(id))" in r.json()["error"]
    restricted = city.product("traffic-police", tier="restricted", publish=False)
    datasets.upload("traffic-police", restricted, CSV, {"columns": COLUMNS, "quality": blocking})
    r = city.client.post(f"/api/v1/products/{restricted}/submit", headers=h("traffic-police"))
    assert r.status_code == 409
    # The owner can still read it, by number.
    r = datasets.query("traffic-police", handle, {"version": 1})
    assert r.status_code == 200 and r.json()["row_count"] == 4
    assert datasets.query("traffic-police", handle, {}).status_code == 404  # not published
    # A version that passes replaces it, and the product publishes.
    fixed = CSV.replace("2,z", "3,z")
    r = datasets.upload("traffic-police", handle, fixed, {"columns": COLUMNS, "quality": blocking})
    assert r.json()["quality"]["blocked"] is False
    r = city.client.post(f"/api/v1/products/{handle}/publish", headers=h("traffic-police"))
    assert r.status_code == 200, r.text
    # A later blocked version is never served to others: they keep reading version 2.
    r = datasets.upload("traffic-police", handle, CSV, {"columns": COLUMNS, "quality": blocking})
    assert r.json()["version"] == 3
    assert datasets.query("parkeasy", handle, {}).json()["version"] == 2
    assert datasets.query("parkeasy", handle, {"version": 3}).status_code == 404
    assert datasets.query("traffic-police", handle, {"version": 3}).status_code == 200


def test_samples_are_the_owners_alone(datasets: Datasets) -> None:
    city = datasets.city
    rules = [{"rule": "pattern", "column": "code", "pattern": "[A-Z]{2}-[0-9]+"}]
    handle = city.product("traffic-police", publish=False)
    datasets.upload("traffic-police", handle, CSV, {"columns": COLUMNS, "quality": rules})
    city.client.post(f"/api/v1/products/{handle}/publish", headers=city.headers("traffic-police"))
    url = f"/api/v1/products/{handle}/versions/1"
    own = city.client.get(url, headers=city.headers("traffic-police")).json()
    other = city.client.get(url).json()  # anonymous: a public listing
    assert own["quality"]["rules"][0]["sample"] == ["bad"]
    assert other["quality"]["rules"][0]["sample"] == [] and other["quality"]["score"] == 0.75


def test_the_listing_shows_the_score_and_search_filters_on_it(datasets: Datasets) -> None:
    city = datasets.city
    good = [{"rule": "not_null", "column": "id"}]
    poor = [{"rule": "not_null", "column": "kind"}, {"rule": "unique", "column": "id"}]
    handles = {}
    for name, rules in (("well-kept", good), ("patchy", poor)):
        handle = city.product(
            "tourism", name=f"q-{name}", publish=False, title=f"Zebra crossings {name}"
        )
        datasets.upload("tourism", handle, CSV, {"columns": COLUMNS, "quality": rules})
        city.client.post(f"/api/v1/products/{handle}/publish", headers=city.headers("tourism"))
        handles[name] = handle
    r = city.client.get(f"/api/v1/products/{handles['patchy']}").json()
    assert r["quality"] == pytest.approx(0.625)
    found = city.client.get("/api/v1/catalog/search", params={"q": "zebra"}).json()
    assert {p["handle"]: p["quality"] for p in found["data"]} == {
        handles["well-kept"]: 1.0,
        handles["patchy"]: 0.625,
    }
    for path, params in (
        ("/api/v1/catalog/search", {"q": "zebra", "min_quality": 0.9}),
        ("/api/v1/catalog/search", {"min_quality": 0.9, "owner": "tourism"}),
        ("/api/v1/products", {"min_quality": 0.9, "owner": "tourism"}),
    ):
        body = city.client.get(path, params=params).json()
        assert [p["handle"] for p in body["data"]] == [handles["well-kept"]], path
        assert body["count"] == 1 and body.get("facets", {"kind": {"dataset": 1}})["kind"] == {
            "dataset": 1
        }
    bad = city.client.get("/api/v1/catalog/search", params={"min_quality": 2})
    assert bad.status_code == 422
