"""Tests of the built-in flow smoother model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_store.builtin.flow_smoother import NAME, WIDTH, build
from model_store.formats import load_model
from model_store.manifest import ModelManifest
from model_store.validation import validate_model


def _numpy_moving_average(flow: np.ndarray[Any, Any], width: int) -> np.ndarray[Any, Any]:
    pad = width // 2
    padded = np.pad(flow, ((0, 0), (pad, pad)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=1)
    mean: np.ndarray[Any, Any] = windows.mean(axis=-1)
    return mean


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelManifest]:
    return build(tmp_path_factory.mktemp("flow"))


def test_manifest_and_card(built: tuple[Path, ModelManifest]) -> None:
    path, manifest = built
    validate_model(manifest, path)
    assert manifest.batching.max_batch_size == 64
    assert NAME in manifest.model_card
    metrics = manifest.metrics
    assert 0.0 < metrics["noise_reduction"] < 1.0
    assert metrics["rmse_smoothed"] < metrics["rmse_raw"]


def test_output_matches_numpy_moving_average_and_reduces_variance(
    built: tuple[Path, ModelManifest],
) -> None:
    path, manifest = built
    model = load_model(manifest, path)
    rng = np.random.default_rng(0)
    flow = rng.poisson(30.0, size=(3, 50)).astype(np.float32)
    smoothed = model.predict({"flow": flow})["smoothed"]
    assert smoothed.shape == flow.shape and smoothed.dtype == np.float32
    np.testing.assert_allclose(smoothed, _numpy_moving_average(flow, WIDTH), rtol=1e-5)
    assert np.diff(smoothed, axis=1).var() < np.diff(flow, axis=1).var()
    model.close()


def test_short_series_keeps_shape(built: tuple[Path, ModelManifest]) -> None:
    path, manifest = built
    model = load_model(manifest, path)
    flow = np.array([[5.0, 7.0]], dtype=np.float32)
    np.testing.assert_allclose(
        model.predict({"flow": flow})["smoothed"], _numpy_moving_average(flow, WIDTH), rtol=1e-5
    )
