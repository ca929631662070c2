"""``POST /api/v1/products/{handle}/query``: tiers and grants exactly as for models, masks
for everyone but the owner, the answer's shape in four formats."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from tests.utils.datasets import QUERY, Datasets

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends


def test_the_answer_lists_columns_rows_count_cursor_masks_and_version(
    datasets: Datasets,
) -> None:
    handle = datasets.dataset("traffic-police")
    plan = {
        "select": ["plate", "occurred_at", "fine_cny"],
        "where": [{"column": "violation", "op": "in", "value": ["speeding", "red_light"]}],
        "order_by": [{"column": "occurred_at", "desc": True}],
        "limit": 2,
    }
    r = datasets.query("parkeasy", handle, plan)
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == ["columns", "rows", "row_count", "next_cursor", "masked", "version"]
    assert body["columns"] == [
        {"name": "plate", "type": "VARCHAR"},
        {"name": "occurred_at", "type": "TIMESTAMP"},
        {"name": "fine_cny", "type": "INTEGER"},
    ]
    assert body["rows"] == [
        ["浙C·***11", "2026-03-03T18:45:00", None],
        ["浙A·***45", "2026-03-02T09:30:00", 200],
    ]
    assert body["row_count"] == 2 and body["masked"] == ["plate"] and body["version"] == 1
    nxt = datasets.query("parkeasy", handle, {**plan, "cursor": body["next_cursor"]}).json()
    assert nxt["rows"] == [["浙A·***45", "2026-03-02T08:05:00", 200]]
    assert nxt["next_cursor"] is None


def test_accept_gives_the_same_result_as_csv_arrow_and_parquet(datasets: Datasets) -> None:
    handle = datasets.dataset("traffic-police")
    plan = {
        "group_by": ["violation"],
        "aggregates": [{"fn": "count", "as": "n"}, {"fn": "sum", "column": "fine_cny"}],
        "order_by": [{"column": "violation"}],
    }
    as_json = datasets.query("parkeasy", handle, plan).json()
    expected = {"violation": [], "n": [], "sum_fine_cny": []}
    for row in as_json["rows"]:
        for name, value in zip(expected, row, strict=True):
            expected[name].append(value)
    assert expected["violation"] == ["illegal_parking", "red_light", "speeding"]

    def table(accept: str) -> pa.Table:
        r = datasets.query("parkeasy", handle, plan, Accept=accept)
        assert r.status_code == 200 and r.headers["content-type"].startswith(accept)
        assert r.headers["x-row-count"] == "3" and r.headers["x-dataset-version"] == "1"
        assert json.loads(r.headers["x-columns"]) == as_json["columns"]
        if accept == "text/csv":
            return pa_csv.read_csv(io.BytesIO(r.content))
        if accept == "application/x-parquet":
            return pq.read_table(io.BytesIO(r.content))
        return pa.ipc.open_stream(r.content).read_all()

    for accept in ("text/csv", "application/vnd.apache.arrow.stream", "application/x-parquet"):
        assert table(accept).to_pydict() == expected


def test_tiers_and_grants_decide_exactly_as_for_models(datasets: Datasets) -> None:
    city = datasets.city
    public = datasets.dataset("traffic-police", tier="public")
    restricted = datasets.dataset("traffic-police", tier="restricted")
    confidential = datasets.dataset("traffic-police", tier="confidential")
    secret = datasets.dataset("traffic-police", tier="secret")
    draft = datasets.dataset("traffic-police", publish=False)
    missing = "traffic-police.no-such-dataset"

    def status(who: str | None, handle: str) -> int:
        return datasets.query(who, handle, {"select": ["record_id"]}).status_code

    # Anyone with a key reads public data; restricted needs a grant; confidential is for
    # government tenants (invisible to developers); secret and drafts are the owner's.
    assert [status("parkeasy", h) for h in (public, restricted, confidential, secret, draft)] == [
        200,
        403,
        404,
        404,
        404,
    ]
    assert status("xihu-district", confidential) == 403
    assert status("data-bureau", secret) == 404  # not even the operator
    assert all(status("traffic-police", h) == 200 for h in (restricted, secret, draft))
    hidden = datasets.query("parkeasy", secret, {}).json()
    absent = datasets.query("parkeasy", missing, {}).json()
    assert hidden["code"] == absent["code"] == "NotFound"
    assert hidden["error"].replace(secret, "?") == absent["error"].replace(missing, "?")
    denied = datasets.query("parkeasy", restricted, {}).json()
    assert denied["code"] == "Forbidden" and "access grant with 'data:read'" in denied["error"]
    assert status(None, public) == 401
    infer_only = city.key("parkeasy", scopes=["infer", "catalog:read"])
    r = city.client.post(QUERY.format(public), json={}, headers={"X-API-Key": infer_only})
    assert r.status_code == 403 and "data:read" in r.json()["error"]
    model = city.product("traffic-police", kind="model")
    assert status("parkeasy", model) == 404

    grant = datasets.grant("parkeasy", restricted, tier="restricted")
    assert status("parkeasy", restricted) == 200
    datasets.grant("xihu-district", confidential, tier="confidential")
    assert status("xihu-district", confidential) == 200
    r = city.client.delete(f"/api/v1/grants/{grant}", headers=city.headers("parkeasy"))
    assert r.status_code == 200, r.text
    assert status("parkeasy", restricted) == 403  # the very next call


def test_a_grantee_reads_masked_data_the_owner_reads_it_raw(datasets: Datasets) -> None:
    handle = datasets.dataset("traffic-police", tier="confidential")
    datasets.grant("xihu-district", handle, tier="confidential")
    plan = {"select": ["plate", "phone", "licence", "location"], "limit": 1}
    owner = datasets.query("traffic-police", handle, plan).json()
    agency = datasets.query("xihu-district", handle, plan).json()
    assert owner["rows"] == [
        ["浙A·12345", "13812345678", "330106199001011234", "30.274100,120.155100"]
    ]
    assert owner["masked"] == []
    plate, phone, licence, location = agency["rows"][0]
    assert (plate, phone) == ("浙A·***45", "138****5678")
    assert licence.startswith("p_") and len(licence) == 18
    assert location != "30.274100,120.155100" and location.count(",") == 1
    assert agency["masked"] == ["plate", "phone", "licence", "location"]
    # The caller's name is sensitive: not in the result, not in the schema it is shown.
    everything = datasets.query("xihu-district", handle, {}).json()
    assert "owner_name" not in [c["name"] for c in everything["columns"]]
    version = datasets.city.client.get(
        f"/api/v1/products/{handle}/versions/1", headers=datasets.city.headers("xihu-district")
    ).json()
    assert "owner_name" not in [c["name"] for c in version["schema"]["columns"]]
    own = datasets.city.client.get(
        f"/api/v1/products/{handle}/versions/1", headers=datasets.city.headers("traffic-police")
    ).json()
    assert "owner_name" in [c["name"] for c in own["schema"]["columns"]]


def test_a_grant_lifts_masks_column_by_column(datasets: Datasets) -> None:
    handle = datasets.dataset("traffic-police", tier="restricted")
    datasets.grant("parkeasy", handle, unmasked=["plate", "owner_name"], tier="restricted")
    r = datasets.query("parkeasy", handle, {"select": ["plate", "phone", "owner_name"], "limit": 1})
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [["浙A·12345", "138****5678", "张三丰"]]
    assert r.json()["masked"] == ["phone"]


def test_probing_a_masked_or_hidden_column_tells_nothing(datasets: Datasets) -> None:
    handle = datasets.dataset("traffic-police", tier="confidential")
    datasets.grant("xihu-district", handle, tier="confidential")

    def count(where: dict[str, object]) -> int:
        r = datasets.query(
            "xihu-district", handle, {"where": [where], "aggregates": [{"fn": "count"}]}
        )
        assert r.status_code == 200, r.text
        rows: list[list[int]] = r.json()["rows"]
        return rows[0][0]

    # A plate that exists and one that does not: the same answer.
    assert count({"column": "plate", "op": "eq", "value": "浙A·12345"}) == 0
    assert count({"column": "plate", "op": "eq", "value": "浙Z·00000"}) == 0
    assert count({"column": "plate", "op": "eq", "value": "浙A·***45"}) == 2
    assert count({"column": "phone", "op": "prefix", "value": "138123"}) == 0
    # A sensitive column is unknown, in the same words as a column that does not exist.
    hidden = datasets.query(
        "xihu-district",
        handle,
        {"where": [{"column": "owner_name", "op": "eq", "value": "张三丰"}]},
    )
    missing = datasets.query(
        "xihu-district", handle, {"where": [{"column": "nobody", "op": "eq", "value": "张三丰"}]}
    )
    assert hidden.status_code == missing.status_code == 422
    assert hidden.json()["error"].replace("owner_name", "?") == missing.json()["error"].replace(
        "nobody", "?"
    )
    # The owner's filter on the real plate finds it.
    r = datasets.query(
        "traffic-police",
        handle,
        {
            "where": [{"column": "plate", "op": "eq", "value": "浙A·12345"}],
            "aggregates": [{"fn": "count"}],
        },
    )
    assert r.json()["rows"] == [[2]]


def test_injection_attempts_are_refused_or_inert(datasets: Datasets) -> None:
    handle = datasets.dataset("traffic-police")
    for plan in (
        {"select": ['record_id" FROM snapshot; DROP TABLE x; --']},
        {"order_by": [{"column": "record_id; SELECT 1"}]},
        {"aggregates": [{"fn": "count", "as": "n\" FROM read_csv('/etc/passwd') --"}]},
        {"where": [{"column": "record_id", "op": "eq OR 1=1", "value": "x"}]},
    ):
        r = datasets.query("parkeasy", handle, plan)
        assert r.status_code == 422, (plan, r.text)
    r = datasets.query(
        "parkeasy",
        handle,
        {"where": [{"column": "record_id", "op": "eq", "value": "x' OR '1'='1"}]},
    )
    assert r.status_code == 200 and r.json()["rows"] == []


def test_versions_a_caller_may_read(datasets: Datasets) -> None:
    city = datasets.city
    handle = datasets.dataset("traffic-police")
    assert datasets.upload("traffic-police", handle).status_code == 201  # version 2
    assert datasets.query("parkeasy", handle, {}).json()["version"] == 2
    assert datasets.query("parkeasy", handle, {"version": 1}).json()["version"] == 1
    r = datasets.query("parkeasy", handle, {"version": 7})
    assert r.status_code == 404 and "no data version 7" in r.json()["error"]
    meta_only = city.client.post(
        f"/api/v1/products/{handle}/versions",
        json={"notes": "docs"},
        headers=city.headers("traffic-police"),
    )
    assert meta_only.status_code == 201
    r = datasets.query("parkeasy", handle, {"version": 3})
    assert r.status_code == 404
    assert datasets.query("parkeasy", handle, {}).json()["version"] == 2


def test_a_repeated_plan_is_answered_through_each_callers_own_view(datasets: Datasets) -> None:
    """Look-ups and compiled plans are reused between calls: never across views, product keys,
    grants or catalog changes."""
    city = datasets.city
    handle = datasets.dataset("traffic-police", tier="restricted")
    twin = datasets.dataset("traffic-police", tier="restricted")  # the same bytes, its own key
    unmasking = datasets.grant("parkeasy", handle, unmasked=["plate"], tier="restricted")
    datasets.grant("parkeasy", twin, tier="restricted")
    datasets.grant("xihu-district", handle, tier="restricted")
    plan = {"select": ["plate", "licence"], "limit": 1}

    def row(who: str, h: str = handle) -> list[str]:
        rows: list[list[str]] = datasets.rows(who, h, plan)
        return rows[0]

    for _ in range(2):
        assert row("traffic-police") == ["浙A·12345", "330106199001011234"]
        assert row("parkeasy")[0] == "浙A·12345"  # its grant unmasks the plate
        assert row("xihu-district")[0] == "浙A·***45"
    # Pseudonyms are keyed per product: the same file in another product reads differently.
    pseudonym, twin_pseudonym = row("xihu-district")[1], row("parkeasy", twin)[1]
    assert pseudonym.startswith("p_") and twin_pseudonym.startswith("p_")
    assert pseudonym != twin_pseudonym
    assert row("parkeasy", twin)[0] == "浙A·***45"

    # A revoked grant stops unmasking (and reading) on the very next call ...
    r = city.client.delete(f"/api/v1/grants/{unmasking}", headers=city.headers("parkeasy"))
    assert r.status_code == 200, r.text
    assert datasets.query("parkeasy", handle, plan).status_code == 403
    datasets.grant("parkeasy", handle, tier="restricted")
    assert row("parkeasy") == row("xihu-district")  # masked now, the same pseudonym
    # ... and a product made secret is the owner's alone on the very next call.
    r = city.client.patch(
        f"/api/v1/products/{handle}",
        json={"tier": "secret"},
        headers=city.headers("traffic-police"),
    )
    assert r.status_code == 200, r.text
    assert datasets.query("xihu-district", handle, plan).status_code == 404
    assert row("traffic-police") == ["浙A·12345", "330106199001011234"]
