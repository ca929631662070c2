"""Models through the SDK: numpy in and out over the binary tensor extension (and JSON),
metadata, push and pull with progress, and a restricted model behind an access grant."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from citybrain_sdk import BadRequest, Client, Forbidden, NotFound

from tests.sdk.conftest import client_for, publish_model
from tests.sdk.server import Platform

SMOOTHER = "traffic-police.flow-smoother"


def test_binary_and_json_tensors_give_the_same_outputs(cb: Client) -> None:
    flow = np.random.default_rng(7).poisson(30, size=(3, 20)).astype(np.float32)
    binary = cb.models.infer(SMOOTHER, {"flow": flow})
    as_json = cb.models.infer(SMOOTHER, {"flow": flow}, binary=False)
    assert binary["smoothed"].dtype == np.float32 and binary["smoothed"].shape == (3, 20)
    np.testing.assert_array_equal(binary["smoothed"], as_json["smoothed"])
    assert binary.model_name == SMOOTHER and binary.model_version == "1"
    assert list(binary) == ["smoothed"] and binary.request_id
    binary["smoothed"][0, 0] = -1  # outputs are the caller's own, writable arrays
    assert binary.idempotency_key != as_json.idempotency_key  # one key per logical call


def test_versions_outputs_and_input_errors(cb: Client) -> None:
    flow = np.ones((1, 6), np.float32)
    pinned = cb.models.infer(SMOOTHER, {"flow": flow}, version=1, outputs=["smoothed"])
    np.testing.assert_array_equal(pinned["smoothed"], flow)
    with pytest.raises(BadRequest) as wrong_name:
        cb.models.infer(SMOOTHER, {"volume": flow})
    assert "volume" in wrong_name.value.server_message
    with pytest.raises(BadRequest) as wrong_type:
        cb.models.infer(SMOOTHER, {"flow": flow.astype(np.float64)})
    assert "FP32" in wrong_type.value.server_message
    with pytest.raises(NotFound):
        cb.models.infer(SMOOTHER, {"flow": flow}, version=99)


def test_metadata_and_readiness(cb: Client) -> None:
    meta = cb.models.metadata(SMOOTHER)
    assert meta["inputs"] == [{"name": "flow", "datatype": "FP32", "shape": [-1, -1]}]
    assert meta["platform"] == "pytorch_torchscript"
    assert cb.models.ready(SMOOTHER) is True


def test_push_then_pull_with_progress(
    platform: Platform, smoother_artifact: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    path, manifest = smoother_artifact
    size = path.stat().st_size
    sent: list[tuple[int, int | None]] = []
    received: list[tuple[int, int | None]] = []
    with client_for(platform, "tourism") as cb:
        product = cb.catalog.create("crowd-smoother", kind="model", title="Crowd", domain="tourism")
        version = cb.models.push(
            product.handle,
            path,
            manifest,
            notes="first",
            progress=lambda done, total: sent.append((done, total)),
        )
        digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        assert version.version == 1 and version.artifact_digest == digest
        assert version.manifest is not None and version.manifest["format"] == "torchscript"
        assert sent[0] == (0, size) and sent[-1] == (size, size)

        # The owner may run and fetch its own draft.
        out = cb.models.infer(product.handle, {"flow": np.ones((1, 5), np.float32)}, version=1)
        assert out["smoothed"].shape == (1, 5)
        pulled = cb.models.pull(
            product.handle, tmp_path, progress=lambda done, total: received.append((done, total))
        )
    assert pulled.parent == tmp_path and pulled.read_bytes() == path.read_bytes()
    assert received[-1] == (size, size)
    assert [p.name for p in tmp_path.iterdir()] == [pulled.name]  # no temporary file left


def test_pushing_a_broken_artifact_leaves_no_version(
    platform: Platform, smoother_artifact: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    from citybrain_sdk import ValidationError

    _, manifest = smoother_artifact
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torchscript archive")
    with client_for(platform, "tourism") as cb:
        product = cb.catalog.create("broken", kind="model", title="Broken", domain="tourism")
        with pytest.raises(ValidationError) as invalid:
            cb.models.push(product.handle, junk, manifest)
        assert invalid.value.request_id
        assert cb.catalog.versions(product.handle) == []


def test_a_restricted_model_needs_a_grant(
    platform: Platform, smoother_artifact: tuple[Path, dict[str, Any]]
) -> None:
    handle = publish_model(
        platform, "traffic-police", "restricted-smoother", smoother_artifact, tier="restricted"
    )
    flow = np.ones((1, 5), np.float32)
    with client_for(platform, "parkeasy") as dev, client_for(platform, "traffic-police") as owner:
        with pytest.raises(Forbidden) as denied:
            dev.models.infer(handle, {"flow": flow})
        assert "grant" in denied.value.server_message
        asked = dev.access.request(handle, "signal optimisation study")
        assert asked.scopes == ("infer",)  # chosen from the product's kind
        owner.access.approve(asked.id, "approved for the study")
        assert dev.models.infer(handle, {"flow": flow})["smoothed"].shape == (1, 5)
