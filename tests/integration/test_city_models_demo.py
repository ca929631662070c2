"""The city's own models as ``citybrain demo`` registers them, called through the gateway.

The seed runs once for the module (``city_models=True``, a blob store, a temporary data dir):
it builds the 12345 hotline ASR (word error rate measured on espeak-ng speech), the complaint
router (trained) and the congestion forecaster (trained) and registers each as a published
catalog product with its model card, evaluation metrics and a per-unit price plan. Then each
model is called through the gateway (in-process app), and ``examples/hotline_pipeline.py`` runs
against a real server subprocess on the same database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http
from fastapi.testclient import TestClient
from sqlalchemy import select

from billing.tables import usage_event
from marketplace.api.app import create_app
from marketplace.config import Settings
from marketplace.db import make_engine, make_session_factory, transaction
from marketplace.seed import CITY_MODELS, SeedResult, seed_demo_city
from marketplace.tables import Tenant
from model_store import BlobStore
from model_store.builtin import complaint_router, congestion_forecaster, hotline_asr
from tests.utils.city import migrate_and_seed
from tests.utils.server import running_platform_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ASR, ROUTER, FORECASTER = hotline_asr.NAME, complaint_router.NAME, congestion_forecaster.NAME
SENTENCE = "There is heavy traffic congestion near the West Lake bridge."
_DEADLINE_S = 60.0  # a generous bound for "eventually"; never asserted as a duration


@dataclass
class Demo:
    url: str
    data_dir: Path
    seeded: SeedResult
    progress: list[str]
    wav: Path

    def headers(self, slug: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.seeded.keys[slug]}"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    data_dir = tmp_path_factory.mktemp("city-demo")
    url = f"sqlite:///{data_dir / 'citybrain.db'}"
    progress: list[str] = []
    seeded = migrate_and_seed(
        url,
        blobs=BlobStore(str(data_dir / "artifacts")),
        city_models=True,
        progress=progress.append,
    )
    (wav,) = hotline_asr.synthesize([SENTENCE], data_dir / "wav")
    return Demo(url=url, data_dir=data_dir, seeded=seeded, progress=progress, wav=wav)


@pytest.fixture(scope="module")
def client(demo: Demo) -> Iterator[TestClient]:
    settings = Settings(data_dir=demo.data_dir, database_url=demo.url)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _usage(demo: Demo, **where: Any) -> list[dict[str, Any]]:
    """Usage rows in the database (the flusher writes them within a second or so)."""
    engine = make_engine(demo.url)
    try:
        with engine.connect() as conn:
            stmt = select(usage_event)
            for column, value in where.items():
                stmt = stmt.where(usage_event.c[column] == value)
            return [dict(row._mapping) for row in conn.execute(stmt)]
    finally:
        engine.dispose()


def _eventually_usage(demo: Demo, count: int, **where: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + _DEADLINE_S
    while len(rows := _usage(demo, **where)) < count:
        assert time.monotonic() < deadline, f"{count} usage rows did not arrive: {rows}"
        time.sleep(0.1)
    return rows


def _tenant_id(demo: Demo, slug: str) -> int:
    engine = make_engine(demo.url)
    try:
        with make_session_factory(engine)() as session:
            tenant_id = session.scalar(select(Tenant.id).where(Tenant.slug == slug))
    finally:
        engine.dispose()
    assert tenant_id is not None
    return int(tenant_id)


def test_the_seed_registers_each_city_model_with_card_metrics_and_plan(
    demo: Demo, client: TestClient
) -> None:
    assert demo.seeded.created_products[-3:] == [ASR, ROUTER, FORECASTER]
    assert sum("built in" in line for line in demo.progress) == 3  # progress per model
    plans = {m.handle: m.plan for m in CITY_MODELS}
    for handle, metric in ((ASR, "wer"), (ROUTER, "accuracy"), (FORECASTER, "mae")):
        product = client.get(f"/api/v1/products/{handle}").json()
        assert product["kind"] == "model" and product["state"] == "published", product
        assert product["tier"] == "public" and "Evaluation" in product["description"]
        versions = client.get(f"/api/v1/products/{handle}/versions").json()
        version = versions["data"][0]
        assert version["notes"].startswith("# ")  # the model card
        manifest = version["manifest"]
        assert manifest["model_card"] == version["notes"]
        assert metric in manifest["metrics"] and metric in product["description"]
        plan = client.get(f"/api/v1/products/{handle}/plan").json()
        assert plan["current"]["plan"]["unit"] == plans[handle]["unit"], plan
        assert plan["current"]["plan"]["unit_price"] == plans[handle]["unit_price"], plan
    assert plans[ASR]["unit"] == "audio-second"


def test_a_second_seed_adds_nothing_and_builds_nothing(demo: Demo) -> None:
    blobs = BlobStore(str(demo.data_dir / "artifacts"))
    digests = blobs.list_digests()
    engine = make_engine(demo.url)
    progress: list[str] = []
    try:
        with transaction(make_session_factory(engine)) as session:
            again = seed_demo_city(session, blobs=blobs, city_models=True, progress=progress.append)
    finally:
        engine.dispose()
    assert again.created_products == [] and again.keys == {}
    assert progress == [] and blobs.list_digests() == digests


def test_hotline_asr_transcribes_and_bills_audio_seconds(demo: Demo, client: TestClient) -> None:
    audio = demo.wav.read_bytes()
    with wave.open(str(demo.wav)) as w:
        duration = w.getnframes() / w.getframerate()
    tensor = triton_http.InferInput("audio", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([audio], dtype=np.object_), binary_data=True)
    outputs = [
        triton_http.InferRequestedOutput(n, binary_data=False)
        for n in ("transcript", "audio_seconds")
    ]
    body, header_length = triton_http.InferenceServerClient.generate_request_body(
        [tensor], outputs=outputs
    )
    r = client.post(
        f"/v2/models/{ASR}/infer",
        content=body,
        headers={
            **demo.headers("parkeasy"),
            "Inference-Header-Content-Length": str(header_length),
            "Content-Type": "application/octet-stream",
            "Idempotency-Key": "asr-call-1",
        },
    )
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    transcript = out["transcript"]["data"][0]
    assert transcript.strip()
    assert hotline_asr.word_error_rate([SENTENCE], [transcript]) < 0.5, transcript
    assert out["audio_seconds"]["data"][0] == pytest.approx(duration, abs=0.05)
    (event,) = _eventually_usage(demo, 1, id="asr-call-1")
    assert event["product"] == ASR and event["unit"] == "audio-second"
    assert float(event["quantity"]) == pytest.approx(duration, abs=0.05)


def test_complaint_router_names_a_department(demo: Demo, client: TestClient) -> None:
    text = "The garbage bins on our street have not been emptied for a week and they smell."
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]}
    r = client.post(f"/v2/models/{ROUTER}/infer", json=body, headers=demo.headers("parkeasy"))
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert out["department"]["data"][0] in complaint_router.DEPARTMENTS
    assert 0.0 < out["confidence"]["data"][0] <= 1.0


def test_congestion_forecaster_returns_the_declared_shapes(demo: Demo, client: TestClient) -> None:
    n = congestion_forecaster.N_HISTORY
    history = np.linspace(20, 60, 2 * n, dtype=np.float32).reshape(2, n)
    features = np.array([[8.25, 1.0], [17.5, 5.0]], dtype=np.float32)
    body = {
        "inputs": [
            {
                "name": "history",
                "datatype": "FP32",
                "shape": [2, n],
                "data": history.ravel().tolist(),
            },
            {
                "name": "time_features",
                "datatype": "FP32",
                "shape": [2, 2],
                "data": features.ravel().tolist(),
            },
        ]
    }
    r = client.post(f"/v2/models/{FORECASTER}/infer", json=body, headers=demo.headers("parkeasy"))
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert (out["flow_next"]["datatype"], out["flow_next"]["shape"]) == ("FP32", [2, 1])
    assert (out["congestion_level"]["datatype"], out["congestion_level"]["shape"]) == (
        "INT64",
        [2, 1],
    )
    assert (out["congestion_probs"]["datatype"], out["congestion_probs"]["shape"]) == (
        "FP32",
        [2, 3],
    )
    assert all(level in (0, 1, 2) for level in out["congestion_level"]["data"])
    probs = np.asarray(out["congestion_probs"]["data"]).reshape(2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_the_hotline_pipeline_example_against_a_server(demo: Demo, tmp_path: Path) -> None:
    env = {"CITYBRAIN_BILLING__SPOOL_DIR": str(tmp_path / "spool")}  # one spool per process
    with running_platform_server(
        database_url=demo.url, data_dir=demo.data_dir, log=tmp_path / "server.log", env=env
    ) as server:
        url = server.url
        tenant = _tenant_id(demo, "xihu-district")
        result = subprocess.run(
            [sys.executable, "examples/hotline_pipeline.py", str(demo.wav), "--url", url],
            cwd=ROOT,
            env={**os.environ, "CITYBRAIN_API_KEY": demo.seeded.keys["xihu-district"]},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        lines = dict(line.split(":", 1) for line in result.stdout.splitlines() if ": " in line)
        assert lines["transcript"].strip() and lines["transcript"].strip() != "(no speech)"
        department = lines["department"].split("(")[0].strip()
        assert department in complaint_router.DEPARTMENTS, result.stdout
        rows = _eventually_usage(demo, 2, tenant_id=tenant)
        assert sorted((r["product"], r["unit"]) for r in rows) == [
            (ROUTER, "call"),
            (ASR, "audio-second"),
        ]
