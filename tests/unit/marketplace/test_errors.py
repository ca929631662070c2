"""Every error is JSON {error, code, request_id}; responses carry X-Request-Id."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from marketplace.db import transaction
from marketplace.tables import Product
from tests.utils.city import City

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends


def _shape(r) -> dict:  # type: ignore[no-untyped-def,type-arg]
    body = r.json()
    assert set(body) == {"error", "code", "request_id"}, body
    assert body["request_id"] == r.headers["x-request-id"]
    return body


def test_unknown_route_is_json_404(city: City) -> None:
    r = city.client.get("/api/v1/nowhere")
    assert r.status_code == 404 and _shape(r)["code"] == "NotFound"


def test_validation_error_is_json_422_naming_the_field(city: City) -> None:
    r = city.client.post(
        "/api/v1/products", json={"kind": "dataset"}, headers=city.headers("parkeasy")
    )
    body = _shape(r)
    assert r.status_code == 422 and body["code"] == "ValidationError" and "name" in body["error"]
    r = city.client.post(
        "/api/v1/products",
        content=b"{not json",
        headers={**city.headers("parkeasy"), "content-type": "application/json"},
    )
    assert r.status_code == 422 and _shape(r)["code"] == "ValidationError"


def test_auth_errors_have_the_shape(city: City) -> None:
    r = city.client.get("/api/v1/keys")
    assert r.status_code == 401 and _shape(r)["code"] == "Unauthenticated"
    r = city.client.get(
        "/api/v1/keys", headers={"X-API-Key": city.key("parkeasy", scopes=["infer"])}
    )
    assert r.status_code == 403 and _shape(r)["code"] == "Forbidden"


def test_conflict_has_the_shape(city: City) -> None:
    body = {"name": "dup", "kind": "dataset", "title": "D", "domain": "traffic"}
    city.client.post("/api/v1/products", json=body, headers=city.headers("parkeasy"))
    r = city.client.post("/api/v1/products", json=body, headers=city.headers("parkeasy"))
    assert r.status_code == 409 and _shape(r)["code"] == "Conflict"


def test_body_over_the_limit_is_413_and_writes_nothing(city: City) -> None:
    limit = city.client.app.state.settings.max_body_bytes  # type: ignore[attr-defined]
    big = {
        "name": "big",
        "kind": "dataset",
        "title": "B",
        "domain": "traffic",
        "description": "x" * (limit + 10),
    }
    r = city.client.post("/api/v1/products", json=big, headers=city.headers("parkeasy"))
    assert r.status_code == 413 and _shape(r)["code"] == "PayloadTooLarge"

    def chunks() -> Iterator[bytes]:
        # No Content-Length: the limit is enforced while streaming.
        yield b'{"name": "big2", "kind": "dataset", "title": "B", "domain": "traffic", "description": "'
        for _ in range(limit // 1000 + 2):
            yield b"y" * 1000
        yield b'"}'

    r = city.client.post(
        "/api/v1/products",
        content=chunks(),
        headers={**city.headers("parkeasy"), "content-type": "application/json"},
    )
    assert r.status_code == 413 and _shape(r)["code"] == "PayloadTooLarge"
    with transaction(city.session_factory) as s:
        assert (
            s.scalar(select(func.count(Product.id)).where(Product.name.in_(["big", "big2"]))) == 0
        )


def test_request_id_is_echoed_or_made(city: City) -> None:
    r = city.client.get("/api/v1/health", headers={"X-Request-Id": "trace-abc-12345"})
    assert r.headers["x-request-id"] == "trace-abc-12345"
    r = city.client.get("/api/v1/health", headers={"X-Request-Id": "bad id with spaces"})
    assert (
        r.headers["x-request-id"] != "bad id with spaces" and len(r.headers["x-request-id"]) == 32
    )
