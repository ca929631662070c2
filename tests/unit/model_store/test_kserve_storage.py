"""What the platform writes to an InferenceService's storageUri and what its predictor reads.

Local folders and ``file://`` URLs here; the same code on a real S3-protocol server is in
tests/integration/test_kserve_predictor.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_store.errors import InvalidArtifactError, ModelUnavailableError
from model_store.kserve.storage import (
    EXPORT_FILE,
    ExportError,
    export_version,
    fetch_bundle,
    locate_bundle,
    read_bundle,
)
from model_store.manifest import ModelManifest
from tests.unit.model_store.factories import make_python_model, make_torchscript_model

KEY = "acme.doubler:1"


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, ModelManifest]:
    return make_torchscript_model(tmp_path)


def test_a_bundle_is_written_once_and_read_back(
    tmp_path: Path, model: tuple[Path, ModelManifest]
) -> None:
    artifact, manifest = model
    store = tmp_path / "store" / "acme--doubler--1"
    assert export_version(str(store), KEY, manifest, artifact, triton=False) is True
    assert export_version(str(store), KEY, manifest, artifact, triton=False) is False

    bundle = read_bundle(store)
    assert (bundle.key, bundle.manifest) == (KEY, manifest)
    assert bundle.artifact_path == store / "artifact.pt"
    assert bundle.artifact_path.read_bytes() == artifact.read_bytes()
    mark = json.loads((store / EXPORT_FILE).read_text())
    assert mark["size"] == artifact.stat().st_size


def test_another_version_at_the_same_uri_replaces_the_export(
    tmp_path: Path, model: tuple[Path, ModelManifest]
) -> None:
    artifact, manifest = model
    other, other_manifest = make_python_model(tmp_path)
    store = tmp_path / "store"
    export_version(str(store), KEY, manifest, artifact, triton=False)
    assert export_version(str(store), "acme.doubler:2", other_manifest, other, triton=False)

    bundle = read_bundle(store)
    assert bundle.key == "acme.doubler:2"
    assert bundle.manifest.format == "python"
    assert bundle.artifact_path.read_bytes() == other.read_bytes()


def test_a_tampered_or_unmarked_export_is_refused(
    tmp_path: Path, model: tuple[Path, ModelManifest]
) -> None:
    artifact, manifest = model
    store = tmp_path / "store"
    export_version(str(store), KEY, manifest, artifact, triton=False)
    (store / "artifact.pt").write_bytes(b"not the model")
    with pytest.raises(InvalidArtifactError, match="does not match its sha256"):
        read_bundle(store)
    (store / EXPORT_FILE).unlink()
    with pytest.raises(InvalidArtifactError, match="not a model export"):
        read_bundle(store)


def test_a_malformed_mark_or_one_naming_a_path_is_refused_locally_and_from_a_store(
    tmp_path: Path, model: tuple[Path, ModelManifest]
) -> None:
    artifact, manifest = model
    store = tmp_path / "store"
    export_version(str(store), KEY, manifest, artifact, triton=False)
    mark = json.loads((store / EXPORT_FILE).read_text(encoding="utf-8"))
    for bad, reason in (
        ("{not json", "is malformed"),
        (json.dumps({k: v for k, v in mark.items() if k != "artifact"}), "is malformed"),
        (json.dumps({**mark, "artifact": "../secret"}), "names an unsafe artifact"),
        (json.dumps({**mark, "artifact": ".hidden"}), "names an unsafe artifact"),
    ):
        (store / EXPORT_FILE).write_text(bad, encoding="utf-8")
        with pytest.raises(InvalidArtifactError, match=f"{EXPORT_FILE} {reason}"):
            read_bundle(store)
        dest = tmp_path / f"copy-{len(bad)}"
        with pytest.raises(InvalidArtifactError, match=f"{EXPORT_FILE} {reason}"):
            fetch_bundle(store.as_uri(), dest)
        assert not (dest / EXPORT_FILE).exists()


def test_a_uri_nobody_here_can_write_is_a_503(
    tmp_path: Path, model: tuple[Path, ModelManifest]
) -> None:
    artifact, manifest = model
    with pytest.raises(ExportError, match="cannot write pvc:// model storage") as info:
        export_version("pvc://models/x", KEY, manifest, artifact, triton=False)
    assert isinstance(info.value, ModelUnavailableError) and info.value.status == 503


def test_the_predictor_prefers_what_the_storage_initializer_copied(
    tmp_path: Path, model: tuple[Path, ModelManifest]
) -> None:
    artifact, manifest = model
    mounted, remote = tmp_path / "mnt-models", tmp_path / "remote"
    export_version(str(mounted), KEY, manifest, artifact, triton=False)
    export_version(str(remote), "acme.doubler:2", manifest, artifact, triton=False)
    scratch = tmp_path / "scratch"

    assert locate_bundle(str(mounted), remote.as_uri(), scratch).key == KEY
    assert not scratch.exists()  # nothing fetched


def test_without_an_initializer_the_predictor_reads_the_store_itself(
    tmp_path: Path, model: tuple[Path, ModelManifest]
) -> None:
    artifact, manifest = model
    remote = tmp_path / "remote"
    export_version(remote.as_uri(), KEY, manifest, artifact, triton=False)
    scratch = tmp_path / "scratch"

    bundle = locate_bundle(str(tmp_path / "no-such-mount"), remote.as_uri(), scratch)
    assert bundle.key == KEY
    assert bundle.artifact_path.parent == scratch  # a checked copy
    assert bundle.artifact_path.read_bytes() == artifact.read_bytes()
    with pytest.raises(InvalidArtifactError, match="STORAGE_URI is not set"):
        locate_bundle(str(tmp_path / "no-such-mount"), None, tmp_path / "scratch2")
    with pytest.raises(InvalidArtifactError, match="not a model export"):
        fetch_bundle((tmp_path / "empty").as_uri(), tmp_path / "scratch3")
