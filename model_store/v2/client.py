"""The client side of the v2 codec: a runtime that forwards calls to another v2 server.

The mirror image of :mod:`model_store.v2.server`, on the same tensor code: requests go out as
JSON (what every v2 server accepts), responses come back as JSON or binary outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from model_store.datatypes import BYTES, to_numpy_dtype
from model_store.errors import InferenceFailedError, InferenceInputError
from model_store.manifest import TensorSpec
from model_store.v2.tensors import decode_tensors, encode_json, split_body, to_json

__all__ = ["decode_response", "encode_request"]


def encode_request(
    inputs: Mapping[str, np.ndarray[Any, Any]],
    signature: Sequence[TensorSpec],
    outputs: Sequence[str] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Encode a v2 inference request as JSON, to call another v2 server with it.

    Args:
        inputs: Every input of ``signature``, by name (cast to its declared datatype).
        signature: The model's inputs, in the order they are sent.
        outputs: The outputs to ask for, or None for all of them.

    Returns:
        The request body and its ``Content-Type`` header.

    Raises:
        InferenceInputError: An input is missing, or a ``BYTES`` input holds bytes that are
            not UTF-8 (JSON cannot carry them).
    """
    entries: list[dict[str, Any]] = []
    for spec in signature:
        if spec.name not in inputs:
            raise InferenceInputError(f"missing input '{spec.name}'")
        array = np.asarray(inputs[spec.name])
        if spec.datatype != BYTES:
            array = array.astype(to_numpy_dtype(spec.datatype), copy=False)
        data = to_json(
            f"input '{spec.name}'", array, spec.datatype, "a JSON request cannot carry them"
        )
        entries.append(
            {"name": spec.name, "datatype": spec.datatype, "shape": list(array.shape), "data": data}
        )
    doc: dict[str, Any] = {"inputs": entries}
    if outputs is not None:
        doc["outputs"] = [{"name": name} for name in outputs]
    return encode_json(doc).encode(), {"Content-Type": "application/json"}


def decode_response(body: bytes, header_length: int | None) -> dict[str, np.ndarray[Any, Any]]:
    """Decode a v2 inference response from another v2 server, JSON or binary outputs alike.

    Args:
        body: The whole HTTP response body.
        header_length: Its ``Inference-Header-Content-Length`` header as an int, or None when
            the body is plain JSON.

    Returns:
        The outputs by name (binary ones may be read-only views of ``body``).

    Raises:
        InferenceFailedError: The body is not a well-formed v2 response; the message names
            the output at fault.
    """
    try:
        doc, binary = split_body(body, header_length, "response")
        raw_outputs = doc.get("outputs")
        if not isinstance(raw_outputs, list):
            raise InferenceInputError("response has no 'outputs' list")
        tensors = decode_tensors("output", raw_outputs, binary, header_length is not None)
    except InferenceInputError as e:
        raise InferenceFailedError(f"unreadable v2 response: {e}") from None
    return {tensor.name: tensor.array for tensor in tensors}
