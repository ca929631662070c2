"""Tests of manifest validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from model_store.manifest import BatchingConfig, ModelManifest, TensorSpec


def _spec(shape: list[int]) -> TensorSpec:
    return TensorSpec(name="x", datatype="FP32", shape=shape)


def test_batched_shapes_start_with_variable_batch_dim() -> None:
    with pytest.raises(ValidationError, match="batch dimension"):
        ModelManifest(
            format="torchscript",
            inputs=[_spec([4])],
            outputs=[_spec([-1, 4])],
            batching=BatchingConfig(max_batch_size=8),
        )


def test_python_format_needs_entrypoint() -> None:
    with pytest.raises(ValidationError, match="entrypoint"):
        ModelManifest(format="python", inputs=[_spec([-1])], outputs=[_spec([-1])])


def test_unknown_datatype_rejected() -> None:
    with pytest.raises(ValidationError, match="unsupported datatype"):
        TensorSpec(name="x", datatype="FLOAT", shape=[1])


def test_preferred_batch_size_within_max() -> None:
    with pytest.raises(ValidationError, match="preferred batch size"):
        BatchingConfig(max_batch_size=4, preferred_batch_sizes=[8])


def test_round_trips_through_json() -> None:
    manifest = ModelManifest(
        format="python",
        inputs=[_spec([-1, 3])],
        outputs=[_spec([-1, 3])],
        batching=BatchingConfig(max_batch_size=4, preferred_batch_sizes=[2, 4]),
        metrics={"mae": 0.5},
        entrypoint="pkg.model:Model",
    )
    assert ModelManifest.model_validate_json(manifest.model_dump_json()) == manifest
    assert manifest.batched
