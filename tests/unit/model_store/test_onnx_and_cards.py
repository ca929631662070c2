"""The onnx format on the embedded runtime, its upload validation, and README model cards."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from model_store import EmbeddedRuntime, InvalidArtifactError, ModelManifest, validate_model
from model_store.cards import CardError, parse_readme
from model_store.formats.onnx import onnx_signature
from tests.utils.bentoml_models import make_onnx_graph

MANIFEST = {
    "format": "onnx",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
    "batching": {"max_batch_size": 8},
}


def _embedded(artifact: Path, manifest: ModelManifest, x: np.ndarray[Any, Any]) -> Any:
    async def go() -> Any:
        runtime = EmbeddedRuntime()
        try:
            await runtime.load("m", manifest, artifact)
            return await runtime.infer("m", {"x": x})
        finally:
            await runtime.close()

    return asyncio.run(go())


def test_embedded_outputs_equal_onnxruntime_run_directly(tmp_path: Path) -> None:
    graph = make_onnx_graph(tmp_path / "affine.onnx")
    manifest = ModelManifest.model_validate(MANIFEST)
    x = np.random.default_rng(7).standard_normal((5, 3)).astype(np.float32)
    direct = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    (expected,) = direct.run(["y"], {"x": x})
    out = _embedded(graph, manifest, x)
    assert out["y"].dtype == np.float32
    np.testing.assert_array_equal(out["y"], expected)


def test_signature_is_read_from_the_graph(tmp_path: Path) -> None:
    inputs, outputs = onnx_signature(make_onnx_graph(tmp_path / "a.onnx").read_bytes())
    assert [s.model_dump() for s in inputs] == MANIFEST["inputs"]
    assert [s.model_dump() for s in outputs] == MANIFEST["outputs"]


def test_validation_refuses_a_manifest_that_does_not_fit_the_graph(tmp_path: Path) -> None:
    graph = make_onnx_graph(tmp_path / "a.onnx")
    validate_model(ModelManifest.model_validate(MANIFEST), graph)
    wrong_name = {**MANIFEST, "outputs": [{"name": "z", "datatype": "FP32", "shape": [-1, 2]}]}
    with pytest.raises(InvalidArtifactError, match="'z'"):
        validate_model(ModelManifest.model_validate(wrong_name), graph)
    wrong_type = {**MANIFEST, "outputs": [{"name": "y", "datatype": "FP64", "shape": [-1, 2]}]}
    with pytest.raises(InvalidArtifactError):
        validate_model(ModelManifest.model_validate(wrong_type), graph)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not onnx")
    with pytest.raises(InvalidArtifactError):
        validate_model(ModelManifest.model_validate(MANIFEST), junk)


def test_readme_front_matter_becomes_the_card() -> None:
    card = parse_readme(
        "---\nlicense: mit\ntags: [traffic]\npipeline_tag: tabular-regression\n"
        "language: zh\nmetrics: {mae: 0.5, rmse: .nan}\ndate: 2024-01-02\n---\n\n# Flow\nText\n"
    )
    assert card.fields == {
        "license": "mit",
        "tags": ["traffic"],
        "pipeline_tag": "tabular-regression",
        "language": "zh",
        "metrics": {"mae": 0.5, "rmse": None},
        "date": "2024-01-02",
    }
    assert card.text == "# Flow\nText\n"
    assert card.metrics == {"mae": 0.5}
    assert parse_readme("# Just text\n").fields == {}
    with pytest.raises(CardError, match="mapping"):
        parse_readme("---\n- a\n- b\n---\n")
    with pytest.raises(CardError, match="never closes"):
        parse_readme("---\nlicense: mit\n")
    with pytest.raises(CardError, match="YAML"):
        parse_readme("---\nkey: [unclosed\n---\n")
