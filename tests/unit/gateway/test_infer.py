"""Inference through the v2 gateway: JSON and binary tensors, policy, errors, metering."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import tritonclient.http as triton
from sqlalchemy import func, select, update

from billing.tables import usage_event
from marketplace.db import transaction
from marketplace.keys.service import get_key, revoke_key
from marketplace.tables import ApiKey, Grant, Tenant, utcnow
from model_store import EmbeddedRuntime, ModelManifest
from tests.unit.gateway.conftest import Models, python_model
from tests.utils.city import City
from tests.utils.postgres import PG_ADMIN_DSN

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends

X = np.arange(6, dtype=np.float32).reshape(2, 3)


def _json_body(x: np.ndarray = X, name: str = "x", **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": name, "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        ],
        **extra,
    }


def _infer(
    city: City, handle: str, body: Any, who: str | None = "parkeasy", path: str = "", **headers: str
) -> Any:
    return city.client.post(
        f"/v2/models/{handle}{path}/infer",
        content=json.dumps(body) if not isinstance(body, bytes) else body,
        headers={**city.headers(who), **headers},
    )


def _in_process(
    artifact: Path, manifest: ModelManifest, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    async def go() -> dict[str, np.ndarray]:
        runtime = EmbeddedRuntime()
        try:
            await runtime.load("m", manifest, artifact)
            return await runtime.infer("m", inputs)
        finally:
            await runtime.close()

    return asyncio.run(go())


def test_json_inference_equals_the_embedded_runtime(models: Models) -> None:
    r = _infer(models.city, models.public, _json_body(id="abc"))
    assert r.status_code == 200, r.text
    doc = r.json()
    expected = _in_process(models.artifact, models.manifest, {"x": X})["y"]
    assert doc["model_name"] == models.public and doc["model_version"] == "1" and doc["id"] == "abc"
    (out,) = doc["outputs"]
    assert out["name"] == "y" and out["datatype"] == "FP32" and out["shape"] == [2, 3]
    np.testing.assert_array_equal(np.array(out["data"], dtype=np.float32).reshape(2, 3), expected)
    # The same through an explicit version.
    r = _infer(models.city, models.public, _json_body(), path="/versions/1")
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == out["data"]


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "application/json"])
def test_binary_tensors_like_tritonclient_sends_them(
    models: Models, content_type: str | None
) -> None:
    inp = triton.InferInput("x", [2, 3], "FP32")
    inp.set_data_from_numpy(X, binary_data=True)
    out = triton.InferRequestedOutput("y", binary_data=True)
    body, json_size = triton.InferenceServerClient.generate_request_body([inp], [out])
    headers = {"Inference-Header-Content-Length": str(json_size)}
    if content_type:
        headers["Content-Type"] = content_type
    r = _infer(models.city, models.public, body, **headers)
    assert r.status_code == 200, r.text
    result = triton.InferenceServerClient.parse_response_body(
        r.content, header_length=int(r.headers["Inference-Header-Content-Length"])
    )
    np.testing.assert_array_equal(result.as_numpy("y"), X * 2)


def test_binary_data_output_returns_every_output_binary(models: Models) -> None:
    r = _infer(models.city, models.public, _json_body(parameters={"binary_data_output": True}))
    assert r.status_code == 200
    n = int(r.headers["Inference-Header-Content-Length"])
    header = json.loads(r.content[:n])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == X.nbytes
    np.testing.assert_array_equal(np.frombuffer(r.content[n:], dtype="<f4").reshape(2, 3), X * 2)


ECHO = """
import numpy as np


class M:
    def load(self):
        pass

    def predict(self, inputs):
        return {"o_" + k[2:]: np.array(v) for k, v in inputs.items()}
"""
DATATYPES = {
    "BOOL": [True, False, True],
    "UINT8": [0, 7, 255],
    "UINT16": [0, 7, 65535],
    "UINT32": [0, 7, 2**32 - 1],
    "UINT64": [0, 7, 2**63],
    "INT8": [-128, 0, 127],
    "INT16": [-32768, 0, 32767],
    "INT32": [-(2**31), 0, 2**31 - 1],
    "INT64": [-(2**63), 0, 2**63 - 1],
    "FP16": [0.5, -1.0, 2.0],
    "FP32": [0.25, -1.5, 3.0],
    "FP64": [0.125, -1e300, 1e300],
    "BYTES": ["a", "", "城市"],
}


def test_every_v2_datatype_round_trips_as_json_and_binary(models: Models) -> None:
    specs = [{"name": f"i_{t.lower()}", "datatype": t, "shape": [3]} for t in DATATYPES]
    outs = [{"name": f"o_{t.lower()}", "datatype": t, "shape": [3]} for t in DATATYPES]
    artifact, manifest = python_model(models.tmp, ECHO, {"inputs": specs, "outputs": outs})
    handle = models.city.product("traffic-police", kind="model", publish=False)
    r = models.upload("traffic-police", handle, artifact, manifest)
    assert r.status_code == 201, r.text
    body = {"inputs": [{**s, "data": DATATYPES[s["datatype"]]} for s in specs]}  # type: ignore[index]
    r = _infer(models.city, handle, body, who="traffic-police", path="/versions/1")
    assert r.status_code == 200, r.text
    got = {o["datatype"]: o["data"] for o in r.json()["outputs"]}
    assert got == DATATYPES
    # Binary both ways, as tritonclient does it.
    inputs = []
    for s in specs:
        inp = triton.InferInput(s["name"], [3], s["datatype"])
        arr = np.array(
            DATATYPES[s["datatype"]],
            dtype=object if s["datatype"] == "BYTES" else triton.triton_to_np_dtype(s["datatype"]),
        )  # type: ignore[index]
        if s["datatype"] == "BYTES":
            arr = np.array([v.encode() for v in DATATYPES["BYTES"]], dtype=object)
        inp.set_data_from_numpy(arr, binary_data=True)
        inputs.append(inp)
    req, n = triton.InferenceServerClient.generate_request_body(
        inputs, [triton.InferRequestedOutput(o["name"], binary_data=True) for o in outs]
    )
    r = _infer(
        models.city,
        handle,
        req,
        who="traffic-police",
        path="/versions/1",
        **{"Inference-Header-Content-Length": str(n)},
    )
    assert r.status_code == 200, r.text
    result = triton.InferenceServerClient.parse_response_body(
        r.content, header_length=int(r.headers["Inference-Header-Content-Length"])
    )
    for t, values in DATATYPES.items():
        got_arr = result.as_numpy(f"o_{t.lower()}")
        if t == "BYTES":
            assert [v.decode() for v in got_arr] == values
        else:
            np.testing.assert_array_equal(
                got_arr, np.array(values, dtype=triton.triton_to_np_dtype(t))
            )


@pytest.mark.parametrize(
    ("body", "headers", "needle"),
    [
        (b"{not json", {}, "malformed JSON"),
        ({"inputs": []}, {}, "no 'inputs'"),
        (_json_body(name="q"), {}, "unknown input 'q'"),
        (
            {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1, 1], "data": [1]}]},
            {},
            "expected FP32, got INT64",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [1, 2]}]},
            {},
            "needs 6 elements",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2, 3]}]},
            {},
            "rank 2",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP99", "shape": [1], "data": [1]}]},
            {},
            "unsupported datatype",
        ),
        (_json_body(outputs=[{"name": "nope"}]), {}, "unknown output 'nope'"),
        (_json_body(), {"Inference-Header-Content-Length": "abc"}, "must be an integer"),
        (_json_body(), {"Inference-Header-Content-Length": "100000"}, "body has"),
        (
            {
                "inputs": [
                    {
                        "name": "x",
                        "datatype": "FP32",
                        "shape": [1, 2],
                        "parameters": {"binary_data_size": 8},
                    }
                ]
            },
            {},
            "without Inference-Header-Content-Length",
        ),
        (_json_body(X[:, :1].repeat(20, axis=0)), {}, "max_batch_size"),
        (_json_body(), {"Idempotency-Key": "k" * 300}, "Idempotency-Key"),
    ],
)
def test_malformed_requests_are_400_naming_the_problem(
    models: Models, body: Any, headers: dict[str, str], needle: str
) -> None:
    r = _infer(models.city, models.public, body, **headers)
    assert r.status_code == 400, r.text
    doc = r.json()
    assert set(doc) == {"error", "code", "request_id"} and doc["code"] == "BadRequest"
    assert needle in doc["error"]


def test_truncated_binary_data_is_400(models: Models) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [2, 3],
                    "parameters": {"binary_data_size": 24},
                }
            ]
        }
    ).encode()
    r = _infer(
        models.city,
        models.public,
        header + X.tobytes()[:10],
        **{"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 400 and "truncated binary data for input 'x'" in r.json()["error"]


def test_hidden_models_look_exactly_like_missing_ones(models: Models) -> None:
    secret = models.model("traffic-police", tier="secret")
    draft = models.model("traffic-police", publish=False)
    for handle in (secret, draft):
        for path in ("", "/versions/1"):
            real = _infer(models.city, handle, _json_body(), path=path)
            fake = _infer(models.city, "traffic-police.no-such-model", _json_body(), path=path)
            assert real.status_code == fake.status_code == 404
            assert real.json()["error"].replace(handle, "X") == fake.json()["error"].replace(
                "traffic-police.no-such-model", "X"
            )
            assert real.json()["code"] == fake.json()["code"]
            for suffix in ("", "/ready"):
                m = models.city.client.get(
                    f"/v2/models/{handle}{path}{suffix}", headers=models.city.headers("parkeasy")
                )
                assert m.status_code == 404
    # The owner uses both (the draft by explicit version: no version means a published one).
    assert _infer(models.city, secret, _json_body(), who="traffic-police").status_code == 200
    assert (
        _infer(
            models.city, draft, _json_body(), who="traffic-police", path="/versions/1"
        ).status_code
        == 200
    )
    r = _infer(models.city, draft, _json_body(), who="traffic-police")
    assert r.status_code == 404 and "no published version" in r.json()["error"]


def test_tier_policy_for_use(models: Models) -> None:
    restricted = models.model("traffic-police", tier="restricted")
    confidential = models.model("traffic-police", tier="confidential")
    # Visible to these callers, but using them takes an access grant.
    r = _infer(models.city, restricted, _json_body(), who="parkeasy")
    assert r.status_code == 403 and "access grant" in r.json()["error"]
    assert _infer(models.city, confidential, _json_body(), who="xihu-district").status_code == 403
    assert _infer(models.city, confidential, _json_body(), who="parkeasy").status_code == 404
    assert _infer(models.city, restricted, _json_body(), who="traffic-police").status_code == 200
    # Public: any key with infer; no key → 401; a key without infer → 403.
    assert _infer(models.city, models.public, _json_body(), who=None).status_code == 401
    reader = models.city.key("parkeasy", scopes=["catalog:read"])
    r = _infer(models.city, models.public, _json_body(), who=None, **{"X-API-Key": reader})
    assert r.status_code == 403 and "'infer'" in r.json()["error"]
    assert (
        _infer(
            models.city, models.public, _json_body(), who=None, Authorization="Basic abc"
        ).status_code
        == 401
    )


def _grant(models: Models, who: str, handle: str, decider: str) -> str:
    return models.city.grant(who, handle, decider, purpose="signal planning")


def test_grants_open_restricted_and_confidential_models_until_revoked_or_expired(
    models: Models,
) -> None:
    restricted = models.model("traffic-police", tier="restricted")
    confidential = models.model("traffic-police", tier="confidential")
    gid = _grant(models, "parkeasy", restricted, decider="traffic-police")
    assert _infer(models.city, restricted, _json_body(), who="parkeasy").status_code == 200
    # The grant covers that product only.
    assert _infer(models.city, confidential, _json_body(), who="parkeasy").status_code == 404
    conf_gid = _grant(models, "xihu-district", confidential, decider="data-bureau")
    assert _infer(models.city, confidential, _json_body(), who="xihu-district").status_code == 200
    # Revoked: refused on the very next call.
    r = models.city.client.delete(
        f"/api/v1/grants/{gid}", headers=models.city.headers("traffic-police")
    )
    assert r.status_code == 200
    assert _infer(models.city, restricted, _json_body(), who="parkeasy").status_code == 403
    # Expired: likewise.
    with transaction(models.city.session_factory) as s:
        s.execute(
            update(Grant)
            .where(Grant.id == conf_gid)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert _infer(models.city, confidential, _json_body(), who="xihu-district").status_code == 403


def test_a_revoked_key_fails_on_its_next_call(models: Models) -> None:
    token = models.city.key("parkeasy", scopes=["infer"])
    hdr = {"X-API-Key": token}
    assert _infer(models.city, models.public, _json_body(), who=None, **hdr).status_code == 200
    with transaction(models.city.session_factory) as s:
        revoke_key(s, get_key(s, token.split("_")[1], tenant_id=None), actor="test")
    assert _infer(models.city, models.public, _json_body(), who=None, **hdr).status_code == 401


def test_catalog_writes_take_effect_at_once(models: Models) -> None:
    c, h = models.city.client, models.city.headers
    assert _infer(models.city, models.public, _json_body()).json()["model_version"] == "1"
    # A new version is served as the latest at once (the resolution cache is invalidated).
    triple = ModelManifest.model_validate(models.manifest.model_dump())
    r = models.upload("traffic-police", models.public, models.artifact, triple)
    assert r.status_code == 201
    assert _infer(models.city, models.public, _json_body()).json()["model_version"] == "2"
    # Raising the tier to secret hides it from others on the very next call.
    r = c.patch(
        f"/api/v1/products/{models.public}", json={"tier": "secret"}, headers=h("traffic-police")
    )
    assert r.status_code == 200
    assert _infer(models.city, models.public, _json_body()).status_code == 404


def test_successful_calls_are_metered_once_per_idempotency_key(models: Models) -> None:
    gateway = models.city.client.app.state.gateway  # type: ignore[attr-defined]
    spool = gateway.usage.spool
    before = spool.stats().appended
    r1 = _infer(models.city, models.public, _json_body(), **{"Idempotency-Key": "retry-1"})
    r2 = _infer(models.city, models.public, _json_body(), **{"Idempotency-Key": "retry-1"})
    assert r1.status_code == r2.status_code == 200
    assert "idempotent-replayed" not in r1.headers
    assert r2.headers["idempotent-replayed"] == "true"
    assert r1.json()["outputs"] == r2.json()["outputs"]
    # Failed calls are never metered.
    assert (
        _infer(models.city, models.public, {"inputs": []}, **{"Idempotency-Key": "bad"}).status_code
        == 400
    )
    r3 = _infer(models.city, models.public, _json_body())
    assert spool.stats().appended == before + 2
    # The event ids: the idempotency key, and the request id when there is none.
    with transaction(models.city.session_factory) as s:
        tid = s.scalar(select(Tenant.id).where(Tenant.slug == "parkeasy"))
    assert spool.seen_recently(tid, "retry-1")
    assert spool.seen_recently(tid, r3.headers["x-request-id"])
    assert not spool.seen_recently(tid, "bad")


def test_a_repeated_x_request_id_never_merges_two_calls_into_one_usage_event(
    models: Models,
) -> None:
    """X-Request-Id is the client's to choose (and echoed), so it cannot be the usage event's
    id: two calls sharing one would be counted once when the events reach the database."""
    gateway = models.city.client.app.state.gateway  # type: ignore[attr-defined]
    meter = gateway.usage
    with transaction(models.city.session_factory) as s:
        tid = s.scalar(select(Tenant.id).where(Tenant.slug == "parkeasy"))
        before = s.scalar(select(func.count()).select_from(usage_event))
    replies = [
        _infer(models.city, models.public, _json_body(), **{"X-Request-Id": "same-id-0001"})
        for _ in range(2)
    ]
    assert [r.status_code for r in replies] == [200, 200]
    assert [r.headers["x-request-id"] for r in replies] == ["same-id-0001"] * 2  # still echoed
    assert not meter.spool.seen_recently(tid, "same-id-0001")
    meter.flusher.flush_once()
    with transaction(models.city.session_factory) as s:
        rows = s.execute(
            select(usage_event.c.id, usage_event.c.request_id).where(
                usage_event.c.request_id == "same-id-0001"
            )
        ).all()
        after = s.scalar(select(func.count()).select_from(usage_event))
    assert after - before == 2
    assert len(rows) == 2 and rows[0].id != rows[1].id  # the request id is kept beside them


def test_inference_stamps_the_keys_last_use_off_the_request_path(models: Models) -> None:
    token = models.city.key("parkeasy", scopes=["infer"])
    key_id = token.split("_")[1]
    r = _infer(models.city, models.public, _json_body(), who=None, **{"X-API-Key": token})
    assert r.status_code == 200
    gateway = models.city.client.app.state.gateway  # type: ignore[attr-defined]
    # The stamp is written by a background task; wait for it (bounded), then read it.
    deadline = time.monotonic() + 10
    stamped = None
    while time.monotonic() < deadline and stamped is None:
        with transaction(models.city.session_factory) as s:
            stamped = s.scalar(select(ApiKey.last_used_at).where(ApiKey.id == key_id))
        if stamped is None:
            time.sleep(0.05)
    assert stamped is not None
    assert key_id in gateway.authenticator._stamped  # once per resolution period per process


@pytest.mark.databases("postgresql")
def test_keys_are_read_through_the_pool_and_survive_dropped_connections(models: Models) -> None:
    """On PostgreSQL, keys are read through the asynchronous psycopg pool
    (marketplace.keys.reader); the server drops every connection of that pool (a restart, an
    idle timeout) and calls keep being answered."""
    from marketplace.keys.reader import PostgresKeyReader

    gateway = models.city.client.app.state.gateway  # type: ignore[attr-defined]
    assert isinstance(gateway.authenticator.keys, PostgresKeyReader)
    body = json.dumps(_json_body(np.array([[1.0, 2.0, 3.0]], dtype=np.float32)))

    def call() -> int:
        r = models.city.client.post(
            f"/v2/models/{models.public}/infer",
            content=body,
            headers=models.city.headers("parkeasy"),
        )
        return r.status_code

    assert call() == 200
    database = models.city.client.app.state.engine.url.database  # type: ignore[attr-defined]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        dropped = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name = '' AND pid <> pg_backend_pid() "
            "AND state = 'idle'",
            (database,),
        ).fetchall()
    assert dropped
    assert all(call() == 200 for _ in range(3))
