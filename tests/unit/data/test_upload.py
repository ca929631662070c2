"""Data versions through the API: CSV, Parquet and JSON Lines become Parquet snapshots; bad
uploads get a clear 4xx and leave nothing behind; ``citybrain datasets push/pull``."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from marketplace.api.app import create_app
from marketplace.cli import app as cli
from marketplace.cli import datasets as cli_datasets
from marketplace.config import Settings
from marketplace.db import transaction
from marketplace.seed import seed_demo_city
from marketplace.tables import ProductVersion
from model_store import BlobStore
from tests.utils.city import City
from tests.utils.datasets import VIOLATIONS_CSV, VIOLATIONS_SCHEMA, Datasets

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends

ROWS = [line.split(",")[0] for line in VIOLATIONS_CSV.splitlines()[1:]]


def _blobs(city: City) -> BlobStore:
    store: BlobStore = city.client.app.state.blobs  # type: ignore[attr-defined]
    return store


def _versions(city: City) -> int:
    with transaction(city.session_factory) as s:
        return int(s.scalar(select(func.count()).select_from(ProductVersion)) or 0)


def _staging(city: City) -> list[Path]:
    settings: Settings = city.client.app.state.settings  # type: ignore[attr-defined]
    folder = settings.data.staging_dir
    assert folder is not None
    return list(folder.iterdir()) if folder.exists() else []


def test_a_csv_upload_becomes_a_typed_content_addressed_snapshot(datasets: Datasets) -> None:
    city = datasets.city
    handle = city.product("traffic-police", publish=False)
    r = datasets.upload("traffic-police", handle)
    assert r.status_code == 201, r.text
    v = r.json()
    types = {c["name"]: c["type"] for c in v["schema"]["columns"]}
    assert types == {
        "record_id": "VARCHAR",
        "plate": "VARCHAR",
        "violation": "VARCHAR",
        "occurred_at": "TIMESTAMP",
        "fine_cny": "INTEGER",
        "phone": "VARCHAR",  # a phone is text, though its digits would read as a number
        "licence": "VARCHAR",
        "owner_name": "VARCHAR",
        "location": "VARCHAR",
    }
    plate = next(c for c in v["schema"]["columns"] if c["name"] == "plate")
    assert (plate["semantic"], plate["sensitivity"]) == ("plate_number", "personal")
    assert v["rows"] == 4 and v["version"] == 1
    digest = f"sha256:{v['sha256']}"
    with _blobs(city).open(digest) as f:
        data = f.read()
    assert hashlib.sha256(data).hexdigest() == v["sha256"] and len(data) == v["bytes"]
    assert pq.read_table(io.BytesIO(data)).column("record_id").to_pylist() == ROWS
    assert v["quality"]["score"] == pytest.approx((1 + 0.75) / 2)
    failing = [rule for rule in v["quality"]["rules"] if not rule["passed"]]
    assert failing == [
        {
            "rule": "not_null",
            "column": "fine_cny",
            "passed": False,
            "failing_rows": 1,
            "sample": [],
            "blocking": False,
        }
    ]
    # The same data again: the same snapshot, stored once.
    again = datasets.upload("traffic-police", handle).json()
    assert again["version"] == 2 and again["sha256"] == v["sha256"]
    assert _blobs(city).list_digests() == [digest]
    assert _staging(city) == []


def test_parquet_and_json_lines_uploads(datasets: Datasets) -> None:
    handle = datasets.city.product("environment", publish=False)
    table = pa.table({"station": ["西溪", "下沙"], "pm25": [35.5, 41.0], "aqi": [50, 58]})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    schema = {"columns": [{"name": "station"}, {"name": "pm25"}, {"name": "aqi"}]}
    r = datasets.upload("environment", handle, sink.getvalue(), schema, filename="air.parquet")
    assert r.status_code == 201, r.text
    assert [c["type"] for c in r.json()["schema"]["columns"]] == ["VARCHAR", "DOUBLE", "BIGINT"]
    lines = "\n".join(json.dumps(row, ensure_ascii=False) for row in table.to_pylist()) + "\n"
    declared = {"columns": [{"name": "station"}, {"name": "pm25"}, {"name": "aqi", "type": "int"}]}
    r = datasets.upload("environment", handle, lines, declared, filename="air.jsonl")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["rows"] == 2 and body["schema"]["columns"][2]["type"] == "INTEGER"
    # An explicit format wins over the name.
    r = datasets.upload("environment", handle, lines, declared, filename="air.txt", fmt="jsonl")
    assert r.status_code == 201, r.text
    # The schema may come as a file part too (curl -F schema=@schema.json).
    r = datasets.city.client.post(
        f"/api/v1/products/{handle}/versions/data",
        files={
            "file": ("air.jsonl", lines.encode(), "application/x-ndjson"),
            "schema": ("schema.json", json.dumps(declared).encode(), "application/json"),
        },
        headers=datasets.city.headers("environment"),
    )
    assert r.status_code == 201 and r.json()["version"] == 4, r.text


BAD_SCHEMA = {"columns": [{"name": "record_id"}, {"name": "n", "type": "bigint"}]}


@pytest.mark.parametrize(
    ("data", "schema", "filename", "status", "message"),
    [
        (
            "record_id,n\nA,1\nB,two\n",
            BAD_SCHEMA,
            "x.csv",
            422,
            "column 'n': 1 values are not BIGINT",
        ),
        ("record_id\nA\n", BAD_SCHEMA, "x.csv", 422, "schema column 'n' is missing from the file"),
        (
            "record_id,n,extra\nA,1,z\n",
            BAD_SCHEMA,
            "x.csv",
            422,
            "file column 'extra' is not in the schema",
        ),
        ('record_id,n\nA,1\n"B,2\nC', BAD_SCHEMA, "x.csv", 422, "could not be read as csv"),
        (b"PAR1 not really parquet", BAD_SCHEMA, "x.parquet", 422, "could not be read as parquet"),
        (
            '{"record_id": "A", "n": 1}\n{"record_id": ',
            BAD_SCHEMA,
            "x.jsonl",
            422,
            "could not be read as jsonl",
        ),
        ("record_id,n\nA,1\n", BAD_SCHEMA, "x.xlsx", 415, "unsupported upload format 'xlsx'"),
        ("record_id,n\nA,1\n", "{not json", "x.csv", 422, "invalid schema"),
        (
            "record_id,n\nA,1\n",
            {"columns": [{"name": "record id"}]},
            "x.csv",
            422,
            "invalid column name",
        ),
        (
            "record_id,n\nA,1\n",
            {"columns": [{"name": "n", "type": "money"}]},
            "x.csv",
            422,
            "unsupported type",
        ),
        (
            "record_id,n\nA,1\n",
            {
                "columns": [{"name": "record_id"}, {"name": "n"}],
                "quality": [{"rule": "pattern", "column": "n", "pattern": "x"}],
            },
            "x.csv",
            422,
            "needs a text column",
        ),
        (
            "record_id,n\nA,1\n",
            {"columns": [{"name": "record_id", "semantic": "geo_point"}, {"name": "n"}]},
            "x.csv",
            422,
            "is a geo_point: 1 values are not 'lat,lon'",
        ),
    ],
)
def test_bad_uploads_get_a_clear_4xx_and_leave_nothing_behind(
    datasets: Datasets, data: str | bytes, schema: Any, filename: str, status: int, message: str
) -> None:
    city = datasets.city
    handle = city.product("traffic-police", publish=False)
    before = (_versions(city), _blobs(city).list_digests())
    r = datasets.upload("traffic-police", handle, data, schema, filename=filename)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "code", "request_id"} and message in body["error"]
    assert "/" not in body["error"].split("read as")[-1]  # no server path in the message
    assert (_versions(city), _blobs(city).list_digests()) == before
    assert _staging(city) == []


def test_who_may_upload(datasets: Datasets) -> None:
    city = datasets.city
    mine = city.product("traffic-police", publish=False)
    model = city.product("traffic-police", kind="model", publish=False)
    r = datasets.upload("traffic-police", model)
    assert r.status_code == 409 and "data versions need a dataset" in r.json()["error"]
    public = city.product("traffic-police")
    assert datasets.upload("parkeasy", public).status_code == 403  # visible, not its own
    secret = city.product("traffic-police", tier="secret")
    hidden = datasets.upload("parkeasy", secret)
    missing = datasets.upload("parkeasy", "traffic-police.no-such-dataset")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["error"].replace(secret, "?") == missing.json()["error"].replace(
        "traffic-police.no-such-dataset", "?"
    )
    read_only = city.key("traffic-police", scopes=["catalog:read", "data:read"])
    assert datasets.upload("", mine, headers={"X-API-Key": read_only}).status_code == 403
    assert datasets.upload("", mine, headers={}).status_code == 401
    r = city.client.post(
        f"/api/v1/products/{mine}/versions/data",
        data={"schema": json.dumps(VIOLATIONS_SCHEMA)},
        headers=city.headers("traffic-police"),
    )
    assert r.status_code == 422 and "'file' part" in r.json()["error"]
    assert _versions(city) == 9  # only the demo city's own


def test_uploads_have_their_own_size_limit(tmp_path: Path, database_url: str) -> None:
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        data={"max_upload_bytes": len(VIOLATIONS_CSV.encode()) + 10},
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        with transaction(client.app.state.session_factory) as s:  # type: ignore[attr-defined]
            keys = seed_demo_city(s).keys
        city = City(client, keys, client.app.state.session_factory)  # type: ignore[attr-defined]
        datasets = Datasets(city)
        handle = city.product("traffic-police", publish=False)
        assert datasets.upload("traffic-police", handle).status_code == 201  # under the limit
        big = VIOLATIONS_CSV + VIOLATIONS_CSV.splitlines()[1].replace("V1", "V5") + "\n"
        r = datasets.upload("traffic-police", handle, big)
        assert r.status_code == 413 and r.json()["code"] == "PayloadTooLarge"
        assert _versions(city) == 10 and len(_blobs(city).list_digests()) == 1
        assert _staging(city) == []


@pytest.fixture
def runner(datasets: Datasets, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    return datasets.city.cli_runner(monkeypatch, cli_datasets, "_client")


def test_datasets_push_and_pull(datasets: Datasets, runner: CliRunner, tmp_path: Path) -> None:
    city = datasets.city
    handle = city.product("traffic-police", publish=False)
    data, schema = tmp_path / "violations.csv", tmp_path / "schema.json"
    data.write_text(VIOLATIONS_CSV, encoding="utf-8")
    schema.write_text(json.dumps(VIOLATIONS_SCHEMA), encoding="utf-8")
    key = city.keys["traffic-police"]
    r = runner.invoke(
        cli, ["datasets", "push", handle, str(data), "--schema", str(schema), "--api-key", key]
    )
    assert r.exit_code == 0, r.output
    assert f"{handle} version 1: 4 rows, sha256 " in r.output and "quality 0.875" in r.output
    out = tmp_path / "back.parquet"
    r = runner.invoke(cli, ["datasets", "pull", handle, "1", "-o", str(out), "--api-key", key])
    assert r.exit_code == 0, r.output
    assert pq.read_table(out).column("record_id").to_pylist() == ROWS
    schema.write_text(json.dumps({"columns": [{"name": "record_id"}]}), encoding="utf-8")
    r = runner.invoke(
        cli, ["datasets", "push", handle, str(data), "--schema", str(schema), "--api-key", key]
    )
    said = " ".join(r.output.split())  # the console wraps long lines
    assert r.exit_code == 1 and "422 InvalidData" in said and "not in the schema" in said
