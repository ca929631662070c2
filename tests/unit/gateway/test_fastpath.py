"""The inference route's own ASGI handler (marketplace.api.fastpath) keeps every promise the
FastAPI stack made for it: request ids, body limits, the error shape, audit and access log."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import pytest
from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from sqlalchemy import select

from marketplace.api.fastpath import INFER_PATH, PlatformApp
from marketplace.tables import AuditEntry
from tests.unit.gateway.conftest import Models

if TYPE_CHECKING:
    # The response type of starlette's TestClient (httpx2, the successor of httpx).
    from httpx2 import Response

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}]}


def _infer(
    models: Models,
    handle: str,
    who: str | None = "parkeasy",
    *,
    content: str | bytes | Iterator[bytes] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """POST an infer request (``BODY`` unless ``content``) as ``who`` with extra ``headers``."""
    return models.city.client.post(
        f"/v2/models/{handle}/infer",
        content=json.dumps(BODY) if content is None else content,
        headers={**models.city.headers(who), **(headers or {})},
    )


def test_the_infer_paths_are_the_fast_paths_and_nothing_else() -> None:
    for path, groups in (
        ("/v2/models/a.b/infer", ("a.b", None)),
        ("/v2/models/a.b/versions/3/infer", ("a.b", "3")),
    ):
        match = INFER_PATH.match(path)
        assert match is not None and match.groups() == groups
    for other in ("/v2/models/a.b", "/v2/models/a/b/infer", "/v2/models//infer", "/v2/infer"):
        assert INFER_PATH.match(other) is None


def test_the_app_is_the_platform_app_and_documents_the_infer_routes(models: Models) -> None:
    app = models.city.client.app
    assert isinstance(app, PlatformApp)
    # The fast path is their only handler: FastAPI has no route of its own for them.
    assert not [r for r in app.routes if getattr(r, "path", "").endswith("/infer")]
    spec = models.city.client.get("/openapi.json").json()
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        op = spec["paths"][path]["post"]
        content = op["requestBody"]["content"]
        assert content["application/json"]["schema"] == {
            "$ref": "#/components/schemas/V2InferRequest"
        }
        assert "application/octet-stream" in content  # the binary tensor extension
        assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/V2InferResponse"
        }
        for status in ("400", "401", "403", "404", "413", "429", "503"):
            error = op["responses"][status]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/ErrorPublic"}
        assert {p["name"] for p in op["parameters"]} >= {"name", "Idempotency-Key"}
    # What the fast path answers is what the document says, success and error alike.
    registry = Registry().with_resource(
        "urn:spec", Resource.from_contents(spec, default_specification=DRAFT202012)
    )

    def check(body: object, component: str) -> None:
        schema = {"$ref": f"urn:spec#/components/schemas/{component}"}
        Draft202012Validator(schema, registry=registry).validate(body)

    check(BODY, "V2InferRequest")
    r = _infer(models, models.public)
    assert r.status_code == 200
    check(r.json(), "V2InferResponse")
    r = _infer(models, "traffic-police.nothing-here")
    assert r.status_code == 404
    check(r.json(), "ErrorPublic")
    with pytest.raises(ValidationError):
        check({"outputs": []}, "V2InferResponse")  # the schema can fail: no model_name


def test_other_methods_on_an_infer_path_get_405_naming_post(models: Models) -> None:
    r = models.city.client.get(
        f"/v2/models/{models.public}/infer", headers={"X-Request-Id": "client-chosen-id-3"}
    )
    assert r.status_code == 405
    assert r.headers["Allow"] == "POST"
    assert r.json() == {
        "error": "GET is not allowed here",
        "code": "MethodNotAllowed",
        "request_id": "client-chosen-id-3",
    }
    assert r.headers.get_list("X-Request-Id") == ["client-chosen-id-3"]


def test_request_ids_are_taken_or_made_and_echoed_on_success_and_error(models: Models) -> None:
    r = _infer(models, models.public, headers={"X-Request-Id": "client-chosen-id-1"})
    assert r.status_code == 200
    assert r.headers["X-Request-Id"] == "client-chosen-id-1"
    r = _infer(models, models.public, headers={"X-Request-Id": "bad id!"})
    made = r.headers["X-Request-Id"]
    assert made != "bad id!" and len(made) == 32
    # An error carries the id in the header and in the body, once.
    r = _infer(
        models, "traffic-police.nothing-here", headers={"X-Request-Id": "client-chosen-id-2"}
    )
    assert r.status_code == 404
    assert r.headers.get_list("X-Request-Id") == ["client-chosen-id-2"]
    assert r.json() == {
        "error": "model 'traffic-police.nothing-here' not found",
        "code": "NotFound",
        "request_id": "client-chosen-id-2",
    }


def test_bodies_over_the_limit_are_413_declared_or_streamed(models: Models) -> None:
    app = models.city.client.app
    assert isinstance(app, PlatformApp)
    limit = app.infer_limit_bytes
    app.infer_limit_bytes = 64
    try:
        big = json.dumps(BODY).encode() + b" " * 100
        r = _infer(models, models.public, content=big)
        assert r.status_code == 413
        assert r.json()["code"] == "PayloadTooLarge"
        assert r.headers["X-Request-Id"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: caught while streaming
            yield big[:50]
            yield big[50:]

        r = _infer(models, models.public, content=chunks())
        assert r.status_code == 413
        assert r.json()["code"] == "PayloadTooLarge"
    finally:
        app.infer_limit_bytes = limit
    assert _infer(models, models.public).status_code == 200


def test_errors_have_the_platform_shape_and_denials_are_audited(models: Models) -> None:
    r = _infer(models, models.public, who=None, headers={"Authorization": "Basic abc"})
    assert r.status_code == 401
    doc = r.json()
    assert doc["code"] == "Unauthenticated" and doc["request_id"] == r.headers["X-Request-Id"]
    r = _infer(
        models, models.public, who=None, headers={"X-API-Key": "cbk_000000000000_" + "a" * 30}
    )
    assert r.status_code == 401
    rid = r.headers["X-Request-Id"]
    with models.city.session_factory() as s:
        denial = s.scalars(select(AuditEntry).where(AuditEntry.request_id == rid)).one()
    assert denial.action == "access.deny" and denial.outcome == "deny"
    assert denial.target == f"/v2/models/{models.public}/infer"
    r = _infer(models, models.public, content=b"{not json")
    assert r.status_code == 400 and r.json()["code"] == "BadRequest"


def test_the_access_log_names_the_key_not_the_secret(
    models: Models, caplog: pytest.LogCaptureFixture
) -> None:
    token = models.city.key("parkeasy", scopes=["infer"])
    with caplog.at_level(logging.INFO, logger="citybrain.access"):
        r = _infer(models, models.public, who=None, headers={"X-API-Key": token})
    assert r.status_code == 200
    line = [m for m in caplog.messages if "/infer" in m][-1]
    key_id = token.split("_")[1]
    assert f"POST /v2/models/{models.public}/infer 200" in line
    assert f"caller=key:{key_id}" in line and token.split("_")[2] not in line
