"""Tests of publish-time validation of artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model_store.errors import InvalidArtifactError
from model_store.formats import load_model, save_torchscript
from model_store.manifest import ModelManifest, TensorSpec
from model_store.validation import validate_model
from tests.unit.model_store.factories import (
    doubler_manifest,
    make_python_model,
    make_torchscript_model,
    write_python_zip,
)


def _with_outputs(manifest: ModelManifest, name: str, datatype: str) -> ModelManifest:
    return manifest.model_copy(
        update={"outputs": [TensorSpec(name=name, datatype=datatype, shape=[-1, -1])]}
    )


def test_good_torchscript_model_passes(tmp_path: Path) -> None:
    path, manifest = make_torchscript_model(tmp_path)
    validate_model(manifest, path)


def test_good_python_model_passes(tmp_path: Path) -> None:
    path, manifest = make_python_model(tmp_path)
    validate_model(manifest, path)


class _DictDoubler(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"y": x * 2.0}


def test_wrong_output_name_rejected_python(tmp_path: Path) -> None:
    path, manifest = make_python_model(tmp_path)
    with pytest.raises(
        InvalidArtifactError, match="signature mismatch: output 'y' is not declared"
    ):
        validate_model(_with_outputs(manifest, "z", "FP32"), path)


def test_wrong_output_name_rejected_torchscript_dict(tmp_path: Path) -> None:
    path = save_torchscript(_DictDoubler(), tmp_path / "dict.pt")
    manifest = _with_outputs(doubler_manifest("torchscript"), "z", "FP32")
    with pytest.raises(InvalidArtifactError, match="signature mismatch: output 'z' is missing"):
        validate_model(manifest, path)


def test_output_count_mismatch_rejected_torchscript(tmp_path: Path) -> None:
    path, manifest = make_torchscript_model(tmp_path)
    two = manifest.model_copy(
        update={
            "outputs": [
                TensorSpec(name="y", datatype="FP32", shape=[-1, -1]),
                TensorSpec(name="z", datatype="FP32", shape=[-1, -1]),
            ]
        }
    )
    with pytest.raises(InvalidArtifactError, match="signature mismatch: forward returned 1"):
        validate_model(two, path)


@pytest.mark.parametrize("factory", [make_torchscript_model, make_python_model])
def test_wrong_output_datatype_rejected(tmp_path: Path, factory: object) -> None:
    path, manifest = factory(tmp_path)  # type: ignore[operator]
    with pytest.raises(InvalidArtifactError, match="output 'y' is FP32, declared INT64"):
        validate_model(_with_outputs(manifest, "y", "INT64"), path)


def test_wrong_rank_rejected(tmp_path: Path) -> None:
    path, manifest = make_torchscript_model(tmp_path)
    bad = manifest.model_copy(
        update={"outputs": [TensorSpec(name="y", datatype="FP32", shape=[-1, -1, -1])]}
    )
    with pytest.raises(InvalidArtifactError, match="signature mismatch: output 'y' has shape"):
        validate_model(bad, path)


def test_garbage_torchscript_rejected(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a torchscript archive")
    with pytest.raises(InvalidArtifactError, match=r"^unloadable: "):
        validate_model(doubler_manifest("torchscript"), path)


def test_garbage_python_zip_rejected(tmp_path: Path) -> None:
    path = tmp_path / "garbage.zip"
    path.write_bytes(b"PK not really a zip")
    with pytest.raises(InvalidArtifactError, match=r"^unloadable: BadZipFile"):
        validate_model(doubler_manifest("python", entrypoint="doubler:Doubler"), path)


def test_missing_entrypoint_class_rejected(tmp_path: Path) -> None:
    path, _ = make_python_model(tmp_path)
    manifest = doubler_manifest("python", entrypoint="doubler:Missing")
    with pytest.raises(InvalidArtifactError, match=r"unloadable: .*'Missing'"):
        validate_model(manifest, path)


def test_missing_entrypoint_module_rejected(tmp_path: Path) -> None:
    path, _ = make_python_model(tmp_path)
    manifest = doubler_manifest("python", entrypoint="nowhere:Doubler")
    with pytest.raises(InvalidArtifactError, match="unloadable: ModuleNotFoundError"):
        validate_model(manifest, path)


def test_zip_slip_rejected(tmp_path: Path) -> None:
    path = write_python_zip(tmp_path / "evil.zip", {"../evil.py": "X = 1\n"})
    manifest = doubler_manifest("python", entrypoint="evil:X")
    with pytest.raises(InvalidArtifactError, match="escapes the archive"):
        validate_model(manifest, path)


def test_predict_failure_rejected(tmp_path: Path) -> None:
    source = "class Broken:\n    def predict(self, inputs):\n        raise RuntimeError('boom')\n"
    path = write_python_zip(tmp_path / "broken.zip", {"broken.py": source})
    manifest = doubler_manifest("python", entrypoint="broken:Broken")
    with pytest.raises(InvalidArtifactError, match=r"unloadable: predict failed.*boom"):
        validate_model(manifest, path)


def test_same_module_name_in_two_models_does_not_clash(tmp_path: Path) -> None:
    def model_source(factor: float) -> str:
        # The comment makes the two zips (and so their digests) differ in more than helpers.
        return (
            "import numpy as np\n"
            "from .helpers import FACTOR\n"
            "class M:\n"
            "    def predict(self, inputs):\n"
            "        return {'y': (inputs['x'] * FACTOR).astype(np.float32)}\n"
            f"# factor {factor}\n"
        )

    models = []
    for factor in (2.0, 3.0):
        path = write_python_zip(
            tmp_path / f"m{factor}.zip",
            {
                "model/__init__.py": model_source(factor),
                "model/helpers.py": f"FACTOR = {factor}\n",
            },
        )
        manifest = doubler_manifest("python", entrypoint="model:M")
        validate_model(manifest, path)
        models.append(load_model(manifest, path))
    x = np.ones((1, 2), dtype=np.float32)
    assert models[0].predict({"x": x})["y"].tolist() == [[2.0, 2.0]]
    assert models[1].predict({"x": x})["y"].tolist() == [[3.0, 3.0]]
