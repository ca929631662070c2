"""Exporting model versions to a Triton model repository (no server needed here).

The exported model is served by a real tritonserver in ``tests/integration/triton``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from model_store.builtin import flow_smoother
from model_store.manifest import BatchingConfig, ModelManifest, TensorSpec
from model_store.triton.repository import (
    TRITON_DATATYPES,
    export_model,
    remove_model,
    render_config,
    triton_model_name,
)
from tests.unit.model_store.factories import make_python_model, make_torchscript_model

_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")


def test_model_name_maps_handle_and_version_without_dots() -> None:
    assert triton_model_name("traffic-police.flow-smoother:1") == "traffic-police--flow-smoother--1"
    assert triton_model_name("health.er_triage:12") == "health--er_triage--12"


@pytest.mark.parametrize(
    "keys",
    [
        ("a.b:1", "a--b:1"),  # "--" in a key must not collide with a mapped dot
        ("a.b:1", "a.b.1"),  # no version colon
        ("a.b:1", "a:b.1"),  # a dot in the version
        ("x.y:1", "x.y:1/../../etc"),  # unsafe characters
    ],
)
def test_model_names_never_collide_and_are_safe(keys: tuple[str, str]) -> None:
    names = [triton_model_name(k) for k in keys]
    assert names[0] != names[1]
    assert all(_SAFE.match(n) and "." not in n for n in names)


def test_long_keys_get_bounded_names() -> None:
    name = triton_model_name("city-management." + "x" * 300 + ":1")
    assert len(name) <= 120 and _SAFE.match(name)


def test_config_of_a_batched_model_drops_the_batch_dimension(tmp_path: Path) -> None:
    manifest = ModelManifest(
        format="torchscript",
        inputs=[
            TensorSpec(name="flow", datatype="FP32", shape=[-1, 60]),
            TensorSpec(name="ids", datatype="INT64", shape=[-1, -1, 3]),
        ],
        outputs=[TensorSpec(name="label", datatype="BYTES", shape=[-1, 1])],
        batching=BatchingConfig(
            max_batch_size=32, max_queue_delay_ms=1.5, preferred_batch_sizes=[8, 16]
        ),
    )
    text = render_config("m--x--1", manifest, artifact_file="artifact.pt", key="m.x:1")

    assert 'backend: "python"' in text
    assert "max_batch_size: 32" in text
    assert re.search(r'name: "flow"\s+data_type: TYPE_FP32\s+dims: \[ 60 \]', text)
    assert re.search(r'name: "ids"\s+data_type: TYPE_INT64\s+dims: \[ -1, 3 \]', text)
    assert re.search(r'name: "label"\s+data_type: TYPE_STRING\s+dims: \[ 1 \]', text)
    assert "max_queue_delay_microseconds: 1500" in text
    assert "preferred_batch_size: [ 8, 16 ]" in text
    assert "default_queue_policy { max_queue_size: 256 }" in text
    assert "kind: KIND_CPU" in text
    assert 'key: "CITYBRAIN_KEY" value { string_value: "m.x:1" }' in text


def test_config_of_an_unbatched_model_keeps_full_shapes_and_reshapes_scalars() -> None:
    manifest = ModelManifest(
        format="python",
        entrypoint="m:M",
        inputs=[TensorSpec(name="audio", datatype="FP32", shape=[-1])],
        outputs=[TensorSpec(name="score", datatype="FP64", shape=[])],
    )
    text = render_config("m--y--1", manifest, artifact_file="artifact.zip")

    assert "max_batch_size: 0" in text
    assert "dynamic_batching" not in text
    assert re.search(r'name: "audio"\s+data_type: TYPE_FP32\s+dims: \[ -1 \]', text)
    assert re.search(r'name: "score"\s+data_type: TYPE_FP64\s+dims: \[ 1 \]\s+reshape', text)


def test_every_v2_datatype_has_a_triton_type() -> None:
    from model_store.datatypes import DATATYPES

    assert set(TRITON_DATATYPES) == set(DATATYPES)
    assert TRITON_DATATYPES["BYTES"] == "TYPE_STRING"
    assert TRITON_DATATYPES["FP16"] == "TYPE_FP16"


@pytest.mark.parametrize("factory", [make_torchscript_model, make_python_model])
def test_export_writes_the_model_folder(tmp_path: Path, factory) -> None:  # type: ignore[no-untyped-def]
    artifact, manifest = factory(tmp_path)
    repo = tmp_path / "repo"
    paths = [Path("/opt/citybrain"), Path("/opt/venv/lib/python3.11/site-packages")]

    exported = export_model(repo, "acme.doubler:3", manifest, artifact, python_paths=paths)

    assert exported.name == "acme--doubler--3"
    assert exported.directory == repo / "acme--doubler--3"
    version = exported.directory / "1"
    artifact_file = "artifact.pt" if manifest.format == "torchscript" else "artifact.zip"
    assert (version / artifact_file).read_bytes() == artifact.read_bytes()
    assert ModelManifest.model_validate_json((version / "manifest.json").read_text()) == manifest
    model_py = (version / "model.py").read_text()
    assert "class TritonPythonModel" in model_py and "load_model" in model_py
    config = exported.config_path.read_text()
    assert 'name: "acme--doubler--3"' in config
    assert f'string_value: "{artifact_file}"' in config
    assert "/opt/citybrain:/opt/venv/lib/python3.11/site-packages" in config
    assert sorted(p.name for p in repo.iterdir()) == ["acme--doubler--3"]  # no staging left


def test_export_replaces_an_earlier_export_and_remove_deletes_it(tmp_path: Path) -> None:
    artifact, manifest = make_torchscript_model(tmp_path)
    repo = tmp_path / "repo"
    export_model(repo, "acme.doubler:1", manifest, artifact)
    stale = repo / "acme--doubler--1" / "1" / "stale.txt"
    stale.write_text("left over")

    smoother_path, smoother = flow_smoother.build(tmp_path / "smoother")
    exported = export_model(repo, "acme.doubler:1", smoother, smoother_path)

    assert not stale.exists()
    saved = json.loads((exported.directory / "1" / "manifest.json").read_text())
    assert saved["inputs"][0]["name"] == "flow"
    assert "max_batch_size: 64" in exported.config_path.read_text()

    remove_model(repo, "acme.doubler:1")
    assert list(repo.iterdir()) == []
    remove_model(repo, "acme.doubler:1")  # missing: ignored


def test_export_of_a_missing_artifact_fails_and_writes_nothing(tmp_path: Path) -> None:
    _, manifest = make_torchscript_model(tmp_path)
    repo = tmp_path / "repo"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_model(repo, "acme.doubler:1", manifest, tmp_path / "nope.pt")
    assert not repo.exists() or list(repo.iterdir()) == []
