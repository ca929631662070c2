"""The demo model in the seed, and ``citybrain models push/pull`` against the app."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from marketplace.cli import app as cli
from marketplace.cli import models as cli_models
from marketplace.data.demo import DEMO_DATASETS
from marketplace.db import transaction
from marketplace.seed import seed_demo_city
from model_store.builtin.flow_smoother import NAME, FlowSmoother
from tests.unit.gateway.conftest import Models
from tests.utils.city import City


def test_seed_registers_and_serves_the_flow_smoother_once(city: City) -> None:
    blobs = city.client.app.state.blobs  # type: ignore[attr-defined]
    with transaction(city.session_factory) as s:
        first = seed_demo_city(s, blobs=blobs)
    stored = blobs.list_digests()
    with transaction(city.session_factory) as s:
        again = seed_demo_city(s, blobs=blobs)
    assert first.created_products == [NAME] and again.created_products == []
    # The model's artifact and the demo datasets' snapshots, each stored once.
    assert len(stored) == 1 + len(DEMO_DATASETS) and blobs.list_digests() == stored
    meta = city.client.get(f"/v2/models/{NAME}").json()
    assert meta["inputs"] == [{"name": "flow", "datatype": "FP32", "shape": [-1, -1]}]
    assert meta["outputs"][0]["name"] == "smoothed"
    flow = np.random.default_rng(1).poisson(30, size=(3, 30)).astype(np.float32)
    body = {
        "inputs": [
            {"name": "flow", "datatype": "FP32", "shape": [3, 30], "data": flow.ravel().tolist()}
        ]
    }
    r = city.client.post(f"/v2/models/{NAME}/infer", json=body, headers=city.headers("parkeasy"))
    assert r.status_code == 200, r.text
    out = np.array(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(3, 30)
    with torch.inference_mode():
        expected = FlowSmoother()(torch.from_numpy(flow)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.fixture
def runner(models: Models, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    return models.city.cli_runner(monkeypatch, cli_models, "_http_client")


def test_models_push_and_pull(models: Models, runner: CliRunner, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(models.manifest.model_dump(mode="json")))
    key = models.city.keys["traffic-police"]
    r = runner.invoke(
        cli,
        [
            "models",
            "push",
            models.public,
            str(models.artifact),
            "--manifest",
            str(manifest),
            "--api-key",
            key,
            "--notes",
            "v2",
        ],
    )
    assert r.exit_code == 0, r.output
    assert f"{models.public} version 2 stored: sha256:" in r.output
    out = tmp_path / "pulled.pt"
    r = runner.invoke(cli, ["models", "pull", models.public, "2", "-o", str(out), "--api-key", key])
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == models.artifact.read_bytes()


def test_models_push_reports_a_refusal(models: Models, runner: CliRunner, tmp_path: Path) -> None:
    wrong = models.manifest.model_dump(mode="json")
    wrong["outputs"][0]["datatype"] = "INT8"
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(wrong))
    key = models.city.keys["traffic-police"]
    r = runner.invoke(
        cli,
        [
            "models",
            "push",
            models.public,
            str(models.artifact),
            "--manifest",
            str(manifest),
            "--api-key",
            key,
        ],
    )
    assert r.exit_code == 1
    assert "upload refused: 422 InvalidArtifact: signature mismatch" in " ".join(r.output.split())
    r = runner.invoke(
        cli,
        ["models", "push", models.public, str(models.artifact), "--manifest", str(manifest)],
        env={"CITYBRAIN_API_KEY": ""},
    )
    assert r.exit_code == 1 and "API key" in r.output
