"""Tests of the built-in 12345 complaint router (MiniLM embeddings + a trained linear head)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_store.builtin.complaint_router import (
    DEPARTMENTS,
    NAME,
    PRODUCT,
    TEST_FILE,
    TRAIN_FILE,
    build,
    load_examples,
)
from model_store.formats import LoadedModel
from model_store.manifest import ModelManifest
from model_store.validation import validate_model


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelManifest]:
    return build(tmp_path_factory.mktemp("router"))


def _texts(*texts: str | bytes) -> np.ndarray[Any, Any]:
    array = np.empty(len(texts), dtype=np.object_)
    for i, text in enumerate(texts):
        array[i] = text.encode("utf-8") if isinstance(text, str) else text
    return array


def _route(model: LoadedModel, *texts: str | bytes) -> tuple[list[str], np.ndarray[Any, Any]]:
    out = model.predict({"text": _texts(*texts)})
    assert set(out) == {"department", "confidence"}
    departments = out["department"]
    assert departments.dtype == np.object_ and departments.shape == (len(texts),)
    confidence = out["confidence"]
    assert confidence.dtype == np.float32 and confidence.shape == (len(texts),)
    return [bytes(d).decode("utf-8") for d in departments], confidence


def test_datasets_are_big_enough_and_disjoint() -> None:
    train, test = load_examples(TRAIN_FILE), load_examples(TEST_FILE)
    for department in DEPARTMENTS:
        assert sum(e.department == department for e in train) >= 40
        assert sum(e.department == department for e in test) >= 15
    normal = {e.text.strip().lower() for e in train}
    assert len(normal) == len(train)
    assert not normal & {e.text.strip().lower() for e in test}


def test_manifest_card_and_validation(built: tuple[Path, ModelManifest]) -> None:
    path, manifest = built
    validate_model(manifest, path)
    assert manifest.format == "python" and manifest.batching.max_batch_size == 32
    assert [(s.name, s.datatype, s.shape) for s in manifest.inputs] == [("text", "BYTES", [-1])]
    assert [(s.name, s.datatype, s.shape) for s in manifest.outputs] == [
        ("department", "BYTES", [-1]),
        ("confidence", "FP32", [-1]),
    ]
    assert f"{PRODUCT['owner']}.{PRODUCT['name']}" == NAME
    metrics = manifest.metrics
    assert metrics["accuracy"] >= 0.85
    assert metrics["test_examples"] == len(load_examples(TEST_FILE))
    assert metrics["train_examples"] == len(load_examples(TRAIN_FILE))
    assert f"accuracy **{metrics['accuracy']:.4f}**" in manifest.model_card
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
    assert names == [
        "complaint_router/__init__.py",
        "complaint_router/head.npz",
        "complaint_router/labels.json",
        "complaint_router/predictor.py",
    ]
    assert path.stat().st_size < 256 * 1024  # the encoder is not in the artifact


def test_held_out_accuracy_through_the_loaded_artifact(model: LoadedModel) -> None:
    test = load_examples(TEST_FILE)
    predicted: list[str] = []
    for start in range(0, len(test), 32):
        chunk = test[start : start + 32]
        departments, confidence = _route(model, *(e.text for e in chunk))
        assert ((confidence > 0) & (confidence <= 1)).all()
        predicted.extend(departments)
    accuracy = np.mean([p == e.department for p, e in zip(predicted, test, strict=True)])
    assert accuracy >= 0.85
    assert set(predicted) <= set(DEPARTMENTS)


def test_obvious_complaints(model: LoadedModel) -> None:
    cases = {
        "The traffic lights at the main crossing are broken and cars are jammed.": "traffic",
        "Rubbish has piled up in our street because nobody collects it.": "city-management",
        "The factory is pouring toxic waste water into the river.": "environment",
        "I got sick after eating spoiled food at a restaurant.": "health",
        "Our tour guide made us pay for extra shopping stops at the scenic area.": "tourism",
        "A thief stole my handbag on the bus.": "public-safety",
    }
    departments, confidence = _route(model, *cases)
    assert departments == list(cases.values())
    assert (confidence > 1 / len(DEPARTMENTS)).all()


def test_blank_and_invalid_utf8_texts(model: LoadedModel) -> None:
    departments, confidence = _route(model, "", "   ", b"\xff\xfe broken street lamp \xff")
    assert departments[:2] == ["", ""] and confidence[:2].tolist() == [0.0, 0.0]
    assert departments[2] == "city-management" and confidence[2] > 0


def test_batch_rows_are_independent(model: LoadedModel) -> None:
    text = "The river smells of chemicals near the paper mill."
    alone, p_alone = _route(model, text)
    batched, p_batched = _route(model, "A thief stole my phone.", text, "")
    assert batched[1] == alone[0]
    assert p_batched[1] == pytest.approx(p_alone[0], abs=1e-4)


def test_build_is_reproducible(built: tuple[Path, ModelManifest], tmp_path: Path) -> None:
    path, manifest = build(tmp_path)
    assert path.read_bytes() == built[0].read_bytes()
    assert manifest == built[1]
