"""The OpenAPI document as the contract, in the small (``marketplace.api.contract``); the
whole API is fuzzed against it by ``tests/integration/test_schemathesis.py``."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from fastapi.testclient import TestClient

from marketplace.api.app import create_app
from marketplace.api.schemas import in_utc
from marketplace.config import BillingSettings, Settings
from tests.utils.city import City


def test_timestamps_are_rfc3339_with_z(city: City) -> None:
    body = {"name": "stamped", "kind": "dataset", "title": "S", "domain": "traffic"}
    r = city.client.post("/api/v1/products", json=body, headers=city.headers("parkeasy"))
    assert r.status_code == 201, r.text
    for field in ("created_at", "updated_at"):
        stamp = r.json()[field]
        assert stamp.endswith("Z"), stamp  # SQLite hands it back naive, PostgreSQL with +00:00
        assert datetime.fromisoformat(stamp).tzinfo is not None
    keys = city.client.get("/api/v1/keys", headers=city.headers("parkeasy")).json()["data"]
    assert keys and all(k["created_at"].endswith("Z") for k in keys)


def test_in_utc_reads_naive_as_utc_and_converts_offsets() -> None:
    naive = datetime(2026, 12, 2, 9, 46, 2, 72076)
    assert in_utc(naive) == naive.replace(tzinfo=UTC)
    east8 = datetime(2026, 12, 2, 17, 46, tzinfo=timezone(timedelta(hours=8)))
    assert in_utc(east8).utcoffset() == timedelta(0) and in_utc(east8).hour == 9


def test_405_names_every_method_of_the_path(city: City) -> None:
    r = city.client.put("/api/v1/keys", headers=city.headers("parkeasy"))
    assert r.status_code == 405 and r.json()["code"] == "MethodNotAllowed"
    assert r.headers["allow"] == "GET, HEAD, POST"  # Starlette alone said "GET"
    r = city.client.options("/api/v1/products/parkeasy.anything")
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET, HEAD, PATCH"
    # /versions/model is its own route, not version "model" of /versions/{version}.
    r = city.client.get("/api/v1/products/parkeasy.anything/versions/model")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = city.client.get("/v2/models/parkeasy.anything/infer")  # the fast path
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_every_operation_declares_its_errors_with_the_error_schema(city: City) -> None:
    document = city.client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    operations = [
        (method, path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
    ]
    assert len(operations) > 60
    for method, path, op in operations:
        for status in ("401", "403", "404", "422", "429", "503"):
            declared = op["responses"].get(status)
            assert declared is not None, (method, path, status)
            if not path.startswith("/api/3/"):  # CKAN's own envelope there
                ref = declared["content"]["application/json"]["schema"]["$ref"]
                fields = set(schemas[ref.rsplit("/", 1)[1]]["properties"])
                assert {"error", "code", "request_id"} <= fields, (method, path, status)
        if "requestBody" in op:
            assert {"409", "413", "415"} <= set(op["responses"]), (method, path)


def test_parameters_have_their_real_format(city: City) -> None:
    document = city.client.get("/openapi.json").json()

    def param(path: str, name: str) -> dict:  # type: ignore[type-arg]
        ps = document["paths"][path]["get"]["parameters"]
        return next(p for p in ps if p["name"] == name)["schema"]

    period = param("/api/v1/invoices", "period")["anyOf"][0]
    assert period["pattern"].startswith("^") and period["type"] == "string"
    usage_from = param("/api/v1/usage", "from")["anyOf"]
    assert {"format": "date-time", "type": "string"} in usage_from
    assert {"format": "date", "type": "string"} in usage_from
    tier = param("/api/v1/products", "tier")["anyOf"][0]["$ref"].rsplit("/", 1)[1]
    assert set(document["components"]["schemas"][tier]["enum"]) == {
        "public",
        "restricted",
        "confidential",
        "secret",
    }
    headers = city.headers("data-bureau")
    for bad in ("2026-13", "26-11", "0000-01"):
        r = city.client.get(f"/api/v1/invoices?period={bad}", headers=headers)
        assert r.status_code == 422, (bad, r.text)
    assert city.client.get("/api/v1/invoices?period=2026-11", headers=headers).status_code == 200
    for bad in ("2026-11-01T10:00:00", "1764700000", "2026-02-30"):
        r = city.client.get(f"/api/v1/usage?from={bad}", headers=headers)
        assert r.status_code == 422, (bad, r.text)
    ok = city.client.get("/api/v1/usage?from=2026-11-01T10:00:00Z&to=2026-12-01", headers=headers)
    assert ok.status_code == 200, ok.text
    for bad in ("0.5", "1764700000", "2026-11-01T10:00:00", "2026-11-01"):
        r = city.client.get(f"/api/v1/federation/feed?modified_since={bad}", headers=headers)
        assert r.status_code == 422, (bad, r.text)
    feed = city.client.get(
        "/api/v1/federation/feed",
        params={"modified_since": "2026-11-01T10:00:00+08:00"},
        headers=headers,
    )
    assert feed.status_code == 200, feed.text


def test_a_database_outage_answers_503_not_500(tmp_path: Path, sqlite_template: Path) -> None:
    """The database goes away for real (its folder is moved, the pool emptied): API routes and
    the v2 fast path answer 503 in the error shape, with Retry-After, then recover."""
    folder = tmp_path / "db"
    folder.mkdir()
    shutil.copy(sqlite_template, folder / "citybrain.db")
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=f"sqlite:///{folder / 'citybrain.db'}",
        billing=BillingSettings(flush_interval_s=3600),
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.get("/api/v1/products").status_code == 200
        engine = client.app.state.engine  # type: ignore[attr-defined]
        gone = folder.with_name("db-gone")
        folder.rename(gone)
        engine.dispose()  # pooled connections still hold the moved file open
        try:
            for r in (
                client.get("/api/v1/products"),
                client.get("/api/v1/catalog/search?q=traffic"),
                client.post("/v2/models/nobody.nothing/infer", json={"inputs": []}),
            ):
                assert r.status_code == 503, r.text
                body = r.json()
                assert body["code"] == "Unavailable" and "database" in body["error"]
                assert r.headers["retry-after"] and body["request_id"]
        finally:
            gone.rename(folder)
        engine.dispose()
        assert client.get("/api/v1/products").status_code == 200
