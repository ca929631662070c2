"""The server side of the v2 codec: requests in, responses out.

No HTTP framework here: the service hands over the request body and the value of the
``Inference-Header-Content-Length`` header, and gets back a response body and the headers to
set. Inputs may be JSON or binary (see :mod:`model_store.v2.tensors`); an output is returned
binary when its requested output says ``parameters.binary_data``, or else when the request's
``parameters.binary_data_output`` is true. Decoded inputs are checked against the model's
signature before it runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model_store.datatypes import from_numpy_dtype
from model_store.errors import InferenceInputError
from model_store.manifest import TensorSpec
from model_store.v2.tensors import (
    HEADER_CONTENT_LENGTH,
    UNSUPPORTED_PARAMS,
    InferInputTensor,
    decode_tensors,
    encode_json,
    split_body,
    tensor_metadata,
    to_binary,
    to_json,
)

__all__ = [
    "InferRequest",
    "RequestedOutput",
    "check_inputs",
    "check_requested_outputs",
    "decode_request",
    "encode_response",
    "model_metadata",
]


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An output the client asked for.

    Attributes:
        name: The output's name.
        binary_data: True/False to force binary/JSON; None to follow the request's default.
    """

    name: str
    binary_data: bool | None = None


@dataclass(slots=True)
class InferRequest:
    """A decoded inference request.

    Attributes:
        inputs: The input tensors, in request order.
        outputs: The requested outputs, or None for "all outputs".
        id: The request id to echo back, if the client sent one.
        binary_data_output: The request-level default for returning outputs as binary.
        parameters: The request-level ``parameters`` object, as sent.
    """

    inputs: list[InferInputTensor]
    outputs: list[RequestedOutput] | None = None
    id: str | None = None
    binary_data_output: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- decoding


def decode_request(body: bytes, header_length: int | None) -> InferRequest:
    """Decode a v2 inference request body.

    Args:
        body: The whole HTTP request body.
        header_length: The ``Inference-Header-Content-Length`` header as an int, or None when
            the body is plain JSON.

    Returns:
        The decoded request (input arrays may be read-only views of ``body``).

    Raises:
        InferenceInputError: Malformed JSON, a malformed tensor, a data length that does not
            fit the shape, or truncated or trailing binary data; the message names the input.
    """
    doc, binary = split_body(body, header_length, "request")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InferenceInputError("request has no 'inputs' list")
    inputs = decode_tensors("input", raw_inputs, binary, header_length is not None)

    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise InferenceInputError("request 'parameters' must be an object")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InferenceInputError("request 'id' must be a string")
    return InferRequest(
        inputs=inputs,
        outputs=_decode_outputs(doc.get("outputs")),
        id=request_id,
        binary_data_output=bool(params.get("binary_data_output", False)),
        parameters=params,
    )


def _decode_outputs(raw: object) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InferenceInputError("request 'outputs' must be a list")
    outputs: list[RequestedOutput] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InferenceInputError(f"requested output #{index} has no name")
        name = item["name"]
        params = item.get("parameters") or {}
        if not isinstance(params, dict):
            raise InferenceInputError(f"output '{name}': 'parameters' must be an object")
        if params.get("classification"):
            raise InferenceInputError(f"output '{name}': classification is not supported")
        for unsupported in UNSUPPORTED_PARAMS:
            if unsupported in params:
                raise InferenceInputError(f"output '{name}': shared memory is not supported")
        binary = params.get("binary_data")
        outputs.append(RequestedOutput(name, None if binary is None else bool(binary)))
    return outputs


# --------------------------------------------------------------------------- checking


def check_inputs(
    req: InferRequest, signature: Sequence[TensorSpec]
) -> dict[str, np.ndarray[Any, Any]]:
    """Check decoded inputs against a model's input signature.

    Args:
        req: The decoded request.
        signature: The model's inputs (full shapes, ``-1`` for variable dimensions).

    Returns:
        The input arrays by name, ready for the runtime.

    Raises:
        InferenceInputError: An unknown, duplicate or missing input, a datatype other than
            the declared one, or a rank or fixed dimension that does not match.
    """
    specs = {spec.name: spec for spec in signature}
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for tensor in req.inputs:
        spec = specs.get(tensor.name)
        if spec is None:
            raise InferenceInputError(f"unknown input '{tensor.name}'")
        if tensor.name in arrays:
            raise InferenceInputError(f"duplicate input '{tensor.name}'")
        if tensor.datatype != spec.datatype:
            raise InferenceInputError(
                f"input '{tensor.name}': expected {spec.datatype}, got {tensor.datatype}"
            )
        if len(tensor.shape) != len(spec.shape):
            raise InferenceInputError(
                f"input '{tensor.name}': expected shape {spec.shape} (rank {len(spec.shape)}), "
                f"got {list(tensor.shape)}"
            )
        for axis, (want, got) in enumerate(zip(spec.shape, tensor.shape, strict=True)):
            if want != -1 and want != got:
                raise InferenceInputError(
                    f"input '{tensor.name}': dimension {axis} must be {want}, got {got}"
                )
        arrays[tensor.name] = tensor.array
    for spec in signature:
        if spec.name not in arrays:
            raise InferenceInputError(f"missing input '{spec.name}'")
    return arrays


def check_requested_outputs(req: InferRequest, signature: Sequence[TensorSpec]) -> None:
    """Check that every requested output exists, before running the model.

    Args:
        req: The decoded request.
        signature: The model's outputs.

    Raises:
        InferenceInputError: A requested output is not declared.
    """
    if req.outputs is None:
        return
    names = {spec.name for spec in signature}
    for output in req.outputs:
        if output.name not in names:
            raise InferenceInputError(f"unknown output '{output.name}'")


# --------------------------------------------------------------------------- encoding


def encode_response(
    model_name: str,
    model_version: str | None,
    outputs: Mapping[str, np.ndarray[Any, Any]],
    request: InferRequest,
) -> tuple[bytes, dict[str, str]]:
    """Encode a v2 inference response.

    Args:
        model_name: The model's name as the client addressed it.
        model_version: The version served (omitted from the body when None).
        outputs: The model's outputs by name.
        request: The decoded request (which outputs, binary or JSON, the id).

    Returns:
        The response body and the headers to send with it: ``Content-Type`` and, when any
        output is binary, ``Inference-Header-Content-Length``.

    Raises:
        InferenceInputError: A requested output does not exist, or a ``BYTES`` output that is
            not UTF-8 was requested as JSON.
    """
    if request.outputs is None:
        selected: list[tuple[str, bool | None]] = [(name, None) for name in outputs]
    else:
        selected = [(o.name, o.binary_data) for o in request.outputs]
    entries: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
    for name, binary_flag in selected:
        if name not in outputs:
            raise InferenceInputError(f"unknown output '{name}'")
        array = np.asarray(outputs[name])
        datatype = from_numpy_dtype(array.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        binary = request.binary_data_output if binary_flag is None else binary_flag
        if binary:
            raw = to_binary(array, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = to_json(
                f"output '{name}'", array, datatype, "request it with binary_data"
            )
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        doc["model_version"] = model_version
    if request.id:
        doc["id"] = request.id
    doc["outputs"] = entries
    header = encode_json(doc).encode()
    if not blobs:
        return header, {"Content-Type": "application/json"}
    headers = {
        "Content-Type": "application/octet-stream",
        HEADER_CONTENT_LENGTH: str(len(header)),
    }
    return b"".join([header, *blobs]), headers


def model_metadata(
    name: str,
    versions: Sequence[str],
    platform: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
) -> dict[str, Any]:
    """Build the v2 model metadata response (``GET /v2/models/{name}``).

    Args:
        name: The model's name.
        versions: The versions that can be addressed.
        platform: The platform, e.g. ``"pytorch_torchscript"`` or ``"python"``.
        inputs: The input signature.
        outputs: The output signature.

    Returns:
        ``{"name", "versions", "platform", "inputs": [...], "outputs": [...]}``.
    """
    return {
        "name": name,
        "versions": list(versions),
        "platform": platform,
        "inputs": tensor_metadata(inputs),
        "outputs": tensor_metadata(outputs),
    }
