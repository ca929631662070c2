"""BentoML archives (built with the real bentoml package) imported through the API and served."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from marketplace.cli import app as cli
from marketplace.cli import models as cli_models
from tests.unit.gateway.conftest import Models
from tests.utils.bentoml_models import ONNX_B, ONNX_W, build_bentomodels
from tests.utils.city import City

IMPORT = "/api/v1/products/{}/versions/bentoml"


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_bentomodels(tmp_path_factory.mktemp("bento"))


def _import(city: City, handle: str, archive: Path, **headers: str):  # type: ignore[no-untyped-def]
    return city.client.post(
        IMPORT.format(handle),
        content=archive.read_bytes(),
        headers={
            **city.headers("traffic-police"),
            "Content-Type": "application/octet-stream",
            **headers,
        },
    )


def _publish(city: City, handle: str) -> None:
    r = city.client.post(
        f"/api/v1/products/{handle}/publish", headers=city.headers("traffic-police")
    )
    assert r.status_code == 200, r.text


def _infer(city: City, handle: str, x: np.ndarray) -> dict[str, np.ndarray]:
    body = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }
    r = city.client.post(
        f"/v2/models/{handle}/infer", content=json.dumps(body), headers=city.headers("parkeasy")
    )
    assert r.status_code == 200, r.text
    return {
        o["name"]: np.asarray(o["data"], dtype=np.float32).reshape(o["shape"])
        for o in r.json()["outputs"]
    }


def test_torchscript_bentomodel_serves_with_its_readme_as_card(
    models: Models, archives: dict[str, Path]
) -> None:
    city = models.city
    handle = city.product("traffic-police", tier="public", kind="model", publish=False)
    r = _import(city, handle, archives["doubler"])
    assert r.status_code == 201, r.text
    version = r.json()
    manifest = version["manifest"]
    assert manifest["format"] == "torchscript"
    assert manifest["batching"]["max_batch_size"] > 0  # batchable along dimension 0
    assert manifest["metrics"] == {"accuracy": 0.97, "mae": 0.125}
    assert manifest["model_card"].startswith("# Doubler")
    meta = version["metadata"]
    assert meta["source"]["module"] == "bentoml.torchscript"
    assert meta["source"]["tag"].startswith("doubler:")
    assert meta["source"]["labels"] == {"team": "traffic"}

    shown = city.client.get(
        f"/api/v1/products/{handle}/versions/{version['version']}",
        headers=city.headers("traffic-police"),
    ).json()
    card = shown["metadata"]["card"]
    assert card["license"] == "apache-2.0"
    assert card["tags"] == ["traffic", "smoothing"]
    assert card["pipeline_tag"] == "tabular-regression"
    assert card["language"] == ["en", "zh"]

    _publish(city, handle)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(_infer(city, handle, x)["y"], x * 2.0 + 1.0)


def test_onnx_bentomodel_takes_its_signature_from_the_graph(
    models: Models, archives: dict[str, Path]
) -> None:
    city = models.city
    handle = city.product("traffic-police", tier="public", kind="model", publish=False)
    r = _import(city, handle, archives["affine"])
    assert r.status_code == 201, r.text
    manifest = r.json()["manifest"]
    assert manifest["format"] == "onnx"
    assert manifest["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert manifest["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]
    _publish(city, handle)
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]], dtype=np.float32)
    np.testing.assert_allclose(_infer(city, handle, x)["y"], x @ ONNX_W + ONNX_B, rtol=1e-6)

    r = city.client.get(
        f"/api/v1/products/{handle}/versions/1/artifact", headers=city.headers("traffic-police")
    )
    assert r.status_code == 200
    assert r.headers["content-disposition"].endswith('.onnx"')


def test_unsupported_framework_is_refused_by_name(
    models: Models, archives: dict[str, Path]
) -> None:
    city = models.city
    handle = city.product("traffic-police", tier="public", kind="model", publish=False)
    r = _import(city, handle, archives["pickled"])
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "InvalidArtifact"
    assert "bentoml.picklable_model" in body["error"]
    assert body["request_id"]
    versions = city.client.get(
        f"/api/v1/products/{handle}/versions", headers=city.headers("traffic-police")
    )
    assert versions.json()["data"] == []


def test_manifest_fields_sent_with_the_archive_override_it(
    models: Models, archives: dict[str, Path]
) -> None:
    city = models.city
    handle = city.product("traffic-police", tier="public", kind="model", publish=False)
    override = {
        "outputs": [{"name": "z", "datatype": "FP32", "shape": [-1, 3]}],
        "batching": {"max_batch_size": 0},
    }
    r = _import(city, handle, archives["doubler"], **{"X-Model-Manifest": json.dumps(override)})
    assert r.status_code == 201, r.text
    manifest = r.json()["manifest"]
    assert manifest["outputs"][0]["name"] == "z"
    assert manifest["batching"]["max_batch_size"] == 0
    wrong = {"outputs": [{"name": "y", "datatype": "INT64", "shape": [-1, 3]}]}
    r = _import(city, handle, archives["doubler"], **{"X-Model-Manifest": json.dumps(wrong)})
    assert r.status_code == 422, r.text
    r = _import(city, handle, archives["affine"], **{"X-Model-Manifest": '{"format": "python"}'})
    assert r.status_code == 422
    assert "onnx model, not python" in r.json()["error"]


def test_garbage_is_not_a_bentomodel(models: Models, tmp_path: Path) -> None:
    city = models.city
    handle = city.product("traffic-police", tier="public", kind="model", publish=False)
    junk = tmp_path / "junk.bentomodel"
    junk.write_bytes(b"not a tar archive at all" * 10)
    r = _import(city, handle, junk)
    assert r.status_code == 422
    assert "not a .bentomodel" in r.json()["error"]


def test_another_tenants_model_is_not_found(models: Models, archives: dict[str, Path]) -> None:
    city = models.city
    handle = city.product("traffic-police", tier="public", kind="model", publish=False)
    r = city.client.post(
        IMPORT.format(handle),
        content=archives["affine"].read_bytes(),
        headers={**city.headers("parkeasy"), "Content-Type": "application/octet-stream"},
    )
    missing = city.client.post(
        IMPORT.format("traffic-police.no-such-model"),
        content=archives["affine"].read_bytes(),
        headers={**city.headers("parkeasy"), "Content-Type": "application/octet-stream"},
    )
    assert r.status_code in (403, 404)
    assert r.status_code == missing.status_code


def test_cli_pushes_a_bentomodel(
    models: Models, archives: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    city = models.city
    runner = city.cli_runner(monkeypatch, cli_models, "_http_client")
    handle = city.product("traffic-police", tier="public", kind="model", publish=False)
    key = city.keys["traffic-police"]
    archive = archives["affine"]
    r = runner.invoke(cli, ["models", "push", handle, str(archive), "--api-key", key])
    assert r.exit_code == 0, r.output
    assert f"{handle} version 1 stored: sha256:" in r.output
    r = CliRunner().invoke(
        cli, ["models", "push", handle, str(archives["pickled"]), "--api-key", key]
    )
    assert r.exit_code == 1
    assert "bentoml.picklable_model" in " ".join(r.output.split())
