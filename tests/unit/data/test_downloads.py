"""``GET .../versions/{n}/data?format=``: the caller's whole masked view, streamed, in Parquet,
CSV and JSON Lines; the row cap and paging through the API."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from marketplace.api.app import create_app
from marketplace.config import Settings
from marketplace.db import transaction
from marketplace.seed import seed_demo_city
from tests.utils.city import City
from tests.utils.datasets import DOWNLOAD, Datasets

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends


def test_three_formats_hold_the_same_masked_rows(datasets: Datasets) -> None:
    city = datasets.city
    handle = datasets.dataset("traffic-police", tier="confidential", downloadable=True)
    datasets.grant("xihu-district", handle, tier="confidential")
    view = datasets.query("xihu-district", handle, {}).json()
    names = [c["name"] for c in view["columns"]]
    expected = [dict(zip(names, row, strict=True)) for row in view["rows"]]
    assert "owner_name" not in names and expected[0]["plate"] == "浙A·***45"

    def get(fmt: str) -> bytes:
        r = city.client.get(
            DOWNLOAD.format(handle, 1),
            params={"format": fmt},
            headers=city.headers("xihu-district"),
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-disposition"] == f'attachment; filename="{handle}-1.{fmt}"'
        assert r.headers["x-row-count"] == "4"
        assert json.loads(r.headers["x-masked-columns"]) == [
            "plate",
            "phone",
            "licence",
            "location",
        ]
        return r.content

    from_parquet = pq.read_table(io.BytesIO(get("parquet"))).to_pylist()
    from_jsonl = [json.loads(line) for line in get("jsonl").decode().splitlines()]
    csv_table = pa_csv.read_csv(
        io.BytesIO(get("csv")),
        convert_options=pa_csv.ConvertOptions(
            column_types={"phone": "string", "licence": "string"}
        ),
    )
    assert from_jsonl == expected
    assert [{**r, "occurred_at": r["occurred_at"].isoformat()} for r in from_parquet] == expected
    assert csv_table.column_names == names
    assert csv_table.column("plate").to_pylist() == [r["plate"] for r in expected]
    # The owner downloads raw data; others without a grant get nothing.
    raw = city.client.get(
        DOWNLOAD.format(handle, 1),
        params={"format": "jsonl"},
        headers=city.headers("traffic-police"),
    )
    assert json.loads(raw.text.splitlines()[0])["plate"] == "浙A·12345"
    denied = city.client.get(DOWNLOAD.format(handle, 1), headers=city.headers("health"))
    hidden = city.client.get(DOWNLOAD.format(handle, 1), headers=city.headers("parkeasy"))
    assert (denied.status_code, hidden.status_code) == (403, 404)
    assert (
        city.client.get(
            DOWNLOAD.format(handle, 1),
            params={"format": "xls"},
            headers=city.headers("traffic-police"),
        ).status_code
        == 422
    )
    assert (
        city.client.get(
            DOWNLOAD.format(handle, 9), headers=city.headers("traffic-police")
        ).status_code
        == 404
    )


def test_downloads_need_the_owner_to_allow_them_and_are_audited(datasets: Datasets) -> None:
    city = datasets.city
    closed = datasets.dataset("traffic-police", tier="restricted")
    opened = datasets.dataset("traffic-police", tier="restricted", downloadable=True)
    for handle in (closed, opened):
        datasets.grant("parkeasy", handle, tier="restricted")
    r = city.client.get(DOWNLOAD.format(closed, 1), headers=city.headers("parkeasy"))
    assert r.status_code == 403 and "does not allow downloads" in r.json()["error"]
    assert datasets.query("parkeasy", closed, {}).status_code == 200  # querying is use
    own = city.key("traffic-police", scopes=["catalog:read"])
    assert (
        city.client.get(DOWNLOAD.format(closed, 1), headers={"X-API-Key": own}).status_code == 200
    )
    assert (
        city.client.get(DOWNLOAD.format(opened, 1), headers=city.headers("parkeasy")).status_code
        == 200
    )
    assert city.client.get(DOWNLOAD.format(opened, 1)).status_code == 404  # anonymous, restricted
    log = city.client.get("/api/v1/audit", headers=city.headers("parkeasy")).json()["data"]
    assert any(
        e["action"] == "product.download" and e["target"] == f"product:{opened}:1" for e in log
    )


def test_the_row_cap_pages_through_next_cursor(tmp_path: Path, database_url: str) -> None:
    settings = Settings(data_dir=tmp_path / "var", database_url=database_url, data={"max_rows": 3})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        with transaction(client.app.state.session_factory) as s:  # type: ignore[attr-defined]
            keys = seed_demo_city(s).keys
        datasets = Datasets(City(client, keys, client.app.state.session_factory))  # type: ignore[attr-defined]
        handle = datasets.dataset("traffic-police", downloadable=True)
        first = datasets.query("parkeasy", handle, {"select": ["record_id"], "limit": 1000}).json()
        assert first["row_count"] == 3 and first["next_cursor"]
        rest = datasets.query(
            "parkeasy",
            handle,
            {"select": ["record_id"], "limit": 1000, "cursor": first["next_cursor"]},
        )
        assert rest.json()["rows"] == [["V4"]] and rest.json()["next_cursor"] is None
        csv_page = datasets.query("parkeasy", handle, {"select": ["record_id"]}, Accept="text/csv")
        assert csv_page.headers["x-next-cursor"] == first["next_cursor"]
        # Downloads are the whole view: the page cap does not apply.
        r = client.get(
            DOWNLOAD.format(handle, 1),
            params={"format": "jsonl"},
            headers=datasets.city.headers("parkeasy"),
        )
        assert len(r.text.splitlines()) == 4
