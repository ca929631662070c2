"""v2 health, server and model metadata, readiness, /metrics, and the bounded queue."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from marketplace.gateway.metrics import GatewayMetrics
from marketplace.gateway.pipeline import ServingState, run
from marketplace.gateway.resolve import ResolvedModel
from marketplace.tables import Product
from model_store import BlobStore, EmbeddedRuntime, ModelManifest, QueueFullError
from model_store.v2 import decode_request
from tests.unit.gateway.conftest import Models
from tests.unit.model_store.factories import doubler_manifest


def test_health_and_server_metadata(models: Models) -> None:
    c = models.city.client
    assert c.get("/v2/health/live").json() == {"live": True}
    ready = c.get("/v2/health/ready").json()
    assert ready["ready"] is True and ready["components"]["database"] == {"status": "up"}
    meta = c.get("/v2").json()
    assert meta["name"] == "citybrain" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_and_readiness(models: Models) -> None:
    c = models.city.client
    # Public models: anyone may read their metadata, like the catalog listing.
    meta = c.get(f"/v2/models/{models.public}").json()
    assert meta == {
        "name": models.public,
        "versions": ["1"],
        "platform": "pytorch_torchscript",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, -1]}],
    }
    assert c.get(f"/v2/models/{models.public}/versions/1").json() == meta
    assert c.get(f"/v2/models/{models.public}/ready").status_code == 200
    assert c.get(f"/v2/models/{models.public}/versions/1/ready").status_code == 200
    r = c.get(f"/v2/models/{models.public}/versions/7")
    assert r.status_code == 404 and "no version '7'" in r.json()["error"]
    assert c.get(f"/v2/models/{models.public}/versions/latest").status_code == 404
    assert c.get("/v2/models/nobody.nothing").status_code == 404
    # A bad key is refused even where anonymous callers are welcome.
    assert c.get(f"/v2/models/{models.public}", headers={"X-API-Key": "cbk_bad"}).status_code == 401


def test_metrics_for_the_operator(models: Models) -> None:
    c, h = models.city.client, models.city.headers
    secret = models.model("traffic-police", tier="secret")
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
    assert (
        c.post(f"/v2/models/{models.public}/infer", json=body, headers=h("parkeasy")).status_code
        == 200
    )
    assert (
        c.post(
            f"/v2/models/{models.public}/infer", json={"inputs": []}, headers=h("parkeasy")
        ).status_code
        == 400
    )
    assert (
        c.post(f"/v2/models/{secret}/infer", json=body, headers=h("traffic-police")).status_code
        == 200
    )
    assert (
        c.post("/v2/models/nobody.nothing/infer", json=body, headers=h("parkeasy")).status_code
        == 404
    )
    assert c.get("/metrics").status_code == 401
    assert c.get("/metrics", headers=h("parkeasy")).status_code == 403
    r = c.get("/metrics", headers=h("data-bureau"))
    assert r.status_code == 200
    text = r.text
    p = models.public
    assert f'citybrain_inference_requests_total{{model="{p}",status="200"}} 1.0' in text
    assert f'citybrain_inference_requests_total{{model="{p}",status="400"}} 1.0' in text
    assert 'citybrain_inference_requests_total{model="(unresolved)",status="404"} 1.0' in text
    assert f'citybrain_inference_request_seconds_count{{model="{p}",status="200"}} 1.0' in text
    assert f'citybrain_runtime_batch_size_count{{model="{p}"}} 1.0' in text
    assert f'citybrain_runtime_queue_depth{{model="{p}"}} 0.0' in text
    assert "citybrain_billing_events_appended_total 2.0" in text
    # Secret products never appear by name.
    assert secret not in text and 'model="traffic-police.(secret)"' in text


class _Gate:
    """A model that blocks until released, so requests pile up in its queue."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.release.wait(10)
        return {"y": inputs["x"] * 2}

    def close(self) -> None:
        self.release.set()


@pytest.mark.parametrize("max_batch_size", [0, 1])
def test_a_full_queue_answers_503_with_retry_after(tmp_path: Path, max_batch_size: int) -> None:
    gate = _Gate()
    manifest = doubler_manifest(max_batch_size=max_batch_size)
    manifest = ModelManifest.model_validate(
        {
            **manifest.model_dump(),
            "batching": {"max_batch_size": max_batch_size, "max_queue_size": 1},
        }
    )
    if max_batch_size == 0:
        manifest = ModelManifest.model_validate(
            {
                **manifest.model_dump(),
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}],
            }
        )
    blobs = BlobStore(tmp_path / "blobs")
    info = blobs.put_bytes(b"artifact")
    model = ResolvedModel(
        handle="t.m",
        product_id=1,
        owner_tenant_id=1,
        tier="public",
        state="published",
        listing=Product(tenant_id=1, state="published", tier="public"),
        versions=(1,),
        version=1,
        digest=info.digest,
        manifest=manifest,
    )
    request = decode_request(
        b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[1]}]}', None
    )

    async def go() -> list[Any]:
        runtime = EmbeddedRuntime(loader=lambda m, p: gate)
        state = ServingState(runtime, blobs, GatewayMetrics(CollectorRegistry()))
        try:
            calls = [asyncio.ensure_future(run(state, model, request)) for _ in range(4)]
            await asyncio.sleep(0.2)
            gate.release.set()
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            gate.release.set()
            await runtime.close()

    results = asyncio.run(go())
    refused = [r for r in results if isinstance(r, QueueFullError)]
    assert refused and refused[0].status == 503 and refused[0].headers["Retry-After"]
    assert any(isinstance(r, dict) for r in results)
