"""Tests of the built-in congestion forecaster (TorchScript, trained on a synthetic city)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from model_store.builtin.congestion_forecaster import (
    HELD_OUT_WEEKS,
    LEVELS,
    N_HISTORY,
    NAME,
    PRODUCT,
    SLOTS_PER_DAY,
    SLOTS_PER_WEEK,
    WEEKS,
    build,
    samples,
    synthetic_city,
    time_features,
)
from model_store.formats import LoadedModel
from model_store.manifest import ModelManifest
from model_store.validation import validate_model


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelManifest]:
    return build(tmp_path_factory.mktemp("forecaster"))


def test_manifest_declares_the_signature_and_validates(built: tuple[Path, ModelManifest]) -> None:
    path, manifest = built
    validate_model(manifest, path)
    assert manifest.format == "torchscript" and manifest.batched
    assert [(s.name, s.datatype, s.shape) for s in manifest.inputs] == [
        ("history", "FP32", [-1, N_HISTORY]),
        ("time_features", "FP32", [-1, 2]),
    ]
    assert [(s.name, s.datatype, s.shape) for s in manifest.outputs] == [
        ("flow_next", "FP32", [-1, 1]),
        ("congestion_level", "INT64", [-1, 1]),
        ("congestion_probs", "FP32", [-1, len(LEVELS)]),
    ]
    assert f"{PRODUCT['owner']}.{PRODUCT['name']}" == NAME
    card = manifest.model_card
    assert NAME in card and "seasonal naive" in card and "synthetic" in card
    assert f"**{manifest.metrics['mae']:.3f}**" in card
    assert f"{manifest.metrics['mae_seasonal_naive']:.3f}" in card


def test_card_metrics_beat_the_seasonal_naive_baseline(built: tuple[Path, ModelManifest]) -> None:
    metrics = built[1].metrics
    assert metrics["mae"] < metrics["mae_seasonal_naive"]
    assert metrics["mae"] < metrics["mae_persistence"]
    assert metrics["skill_vs_seasonal_naive"] > 0
    assert metrics["level_macro_f1"] > metrics["level_macro_f1_seasonal_naive"]


def test_held_out_mae_through_the_artifact_beats_seasonal_naive(
    built: tuple[Path, ModelManifest], model: LoadedModel
) -> None:
    # Recompute independently of the builder: a fresh simulation with the same seed, the last
    # HELD_OUT_WEEKS weeks, the artifact as the runtime loads it, in batches of 200.
    city = synthetic_city()
    split = (WEEKS - HELD_OUT_WEEKS) * SLOTS_PER_WEEK
    test = samples(city, split, city.flow.shape[1])
    forecasts = []
    for start in range(0, len(test.flow_next), 200):
        out = model.predict(
            {
                "history": test.history[start : start + 200],
                "time_features": test.time_features[start : start + 200],
            }
        )
        forecasts.append(out["flow_next"][:, 0])
    forecast = np.concatenate(forecasts)
    truth = city.flow[:, split:].reshape(-1)
    np.testing.assert_array_equal(test.flow_next, truth)
    naive = city.flow[:, split - SLOTS_PER_WEEK : -SLOTS_PER_WEEK].reshape(-1)
    mae = float(np.mean(np.abs(forecast - truth)))
    mae_naive = float(np.mean(np.abs(naive - truth)))
    assert mae < mae_naive
    assert mae == pytest.approx(built[1].metrics["mae"], abs=1e-2)


def test_outputs_have_declared_shapes_dtypes_and_ranges(model: LoadedModel) -> None:
    rng = np.random.default_rng(3)
    history = rng.uniform(0, 250, size=(5, N_HISTORY)).astype(np.float32)
    times = np.array([[0, 0], [8.25, 1], [17.75, 4], [23.75, 5], [12, 6]], dtype=np.float32)
    out = model.predict({"history": history, "time_features": times})
    assert set(out) == {"flow_next", "congestion_level", "congestion_probs"}
    assert out["flow_next"].dtype == np.float32 and out["flow_next"].shape == (5, 1)
    assert out["congestion_level"].dtype == np.int64 and out["congestion_level"].shape == (5, 1)
    probs = out["congestion_probs"]
    assert probs.dtype == np.float32 and probs.shape == (5, len(LEVELS))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out["congestion_level"][:, 0], probs.argmax(axis=1))
    assert (out["flow_next"] >= 0).all()


def test_forecasts_follow_the_rush_hour_and_saturation(model: LoadedModel) -> None:
    city = synthetic_city()
    # A Tuesday of the held-out period at one intersection: free at 03:00, busier at 08:00.
    tuesday = (WEEKS - 1) * SLOTS_PER_WEEK + SLOTS_PER_DAY
    night, rush = tuesday + 3 * 4, tuesday + 8 * 4
    rows = np.stack([city.flow[0, t - N_HISTORY : t] for t in (night, rush)])
    times = np.stack([[city.hour[t], city.day[t]] for t in (night, rush)]).astype(np.float32)
    out = model.predict({"history": rows, "time_features": times})
    assert out["flow_next"][1, 0] > out["flow_next"][0, 0]
    assert out["congestion_level"][0, 0] == 0
    # Flat readings at saturation (about capacity) forecast a congested or slow level.
    saturated = np.full((1, N_HISTORY), 235.0, dtype=np.float32)
    out = model.predict(
        {"history": saturated, "time_features": np.array([[8.0, 1.0]], dtype=np.float32)}
    )
    assert out["congestion_level"][0, 0] >= 1


def test_time_features_helper() -> None:
    features = time_features([datetime(2024, 5, 13, 17, 15), datetime(2024, 5, 19, 0, 0)])
    assert features.dtype == np.float32
    np.testing.assert_array_equal(features, [[17.25, 0.0], [0.0, 6.0]])


def test_synthetic_city_is_seeded_and_has_every_level() -> None:
    a, b = (
        synthetic_city(seed=5, intersections=2, weeks=2),
        synthetic_city(seed=5, intersections=2, weeks=2),
    )
    np.testing.assert_array_equal(a.flow, b.flow)
    assert a.flow.shape == (2, 2 * SLOTS_PER_WEEK)
    full = synthetic_city()
    assert set(np.unique(full.level)) == set(range(len(LEVELS)))
    assert full.incident.any()
    # Incidents depress flow relative to the same slot a week earlier.
    i, t = np.nonzero(full.incident[:, SLOTS_PER_WEEK:])
    t = t + SLOTS_PER_WEEK
    assert np.mean(full.flow[i, t]) < np.mean(full.flow[i, t - SLOTS_PER_WEEK])
    with pytest.raises(ValueError, match="one week of history"):
        samples(full, 10, 20)
