"""The Open Inference Protocol (v2) codec: bytes in, numpy arrays out, and back.

No HTTP framework here: the service hands over the request body and the value of the
``Inference-Header-Content-Length`` header, and gets back a response body and the headers to
set. Both JSON tensors and the binary tensor data extension are supported, exactly as
``tritonclient.http`` writes and reads them:

* a binary request is a JSON header of ``header_length`` bytes followed by the raw bytes of
  each input that has ``parameters.binary_data_size``, in input order;
* fixed-size tensors are little-endian, row-major; ``BYTES`` elements are each prefixed with
  their length as a 4-byte little-endian unsigned integer;
* an output is returned binary when its requested output says ``parameters.binary_data``, or
  else when the request's ``parameters.binary_data_output`` is true.

This is the hot path: binary tensors are decoded with ``np.frombuffer`` (zero copy, so the
arrays are read-only views of the body) and JSON data with one ``np.asarray`` call; only
``BYTES`` elements are handled one by one.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model_store.datatypes import BYTES, DATATYPES, element_count, from_numpy_dtype, to_numpy_dtype
from model_store.errors import InferenceInputError
from model_store.manifest import TensorSpec

__all__ = [
    "HEADER_CONTENT_LENGTH",
    "InferInputTensor",
    "InferRequest",
    "RequestedOutput",
    "check_inputs",
    "check_requested_outputs",
    "decode_request",
    "encode_response",
    "model_metadata",
]

HEADER_CONTENT_LENGTH = "Inference-Header-Content-Length"
"""The header that gives the length of the JSON part of a binary request or response."""

_LEN = struct.Struct("<I")
_UNSUPPORTED_INPUT_PARAMS = ("shared_memory_region", "shared_memory_byte_size")

# Built once: json.dumps with any non-default argument builds a new encoder on every call.
_encode_json = json.JSONEncoder(separators=(",", ":"), allow_nan=True).encode


@dataclass(slots=True)
class InferInputTensor:
    """One decoded input tensor.

    Attributes:
        name: The input's name.
        datatype: The v2 datatype the client declared.
        shape: The shape the client declared.
        array: The data, shaped (``object`` array of ``bytes`` for ``BYTES``).
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray[Any, Any]


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
    if header_length is None:
        header: bytes | memoryview = body
        binary = memoryview(b"")
    else:
        if header_length < 0 or header_length > len(body):
            raise InferenceInputError(
                f"{HEADER_CONTENT_LENGTH} is {header_length} but the body has {len(body)} bytes"
            )
        view = memoryview(body)
        header = view[:header_length]
        binary = view[header_length:]
    try:
        doc = json.loads(bytes(header))
    except (ValueError, UnicodeDecodeError) as e:
        raise InferenceInputError(f"malformed JSON request: {e}") from None
    if not isinstance(doc, dict):
        raise InferenceInputError("malformed JSON request: expected an object")

    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InferenceInputError("request has no 'inputs' list")
    inputs: list[InferInputTensor] = []
    offset = 0
    for index, item in enumerate(raw_inputs):
        tensor, used = _decode_input(index, item, binary, offset, header_length is not None)
        offset += used
        inputs.append(tensor)
    if offset != len(binary):
        raise InferenceInputError(
            f"{len(binary) - offset} bytes of binary data follow the last input"
        )

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


def _decode_input(
    index: int, item: object, binary: memoryview, offset: int, has_binary: bool
) -> tuple[InferInputTensor, int]:
    if not isinstance(item, dict):
        raise InferenceInputError(f"input #{index} must be an object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InferenceInputError(f"input #{index} has no name")
    datatype = item.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InferenceInputError(f"input '{name}': unsupported datatype {datatype!r}")
    raw_shape = item.get("shape")
    if not isinstance(raw_shape, list) or not all(type(d) is int and d >= 0 for d in raw_shape):
        raise InferenceInputError(
            f"input '{name}': shape must be a list of non-negative integers, got {raw_shape!r}"
        )
    shape = tuple(raw_shape)
    params = item.get("parameters") or {}
    if not isinstance(params, dict):
        raise InferenceInputError(f"input '{name}': 'parameters' must be an object")
    for unsupported in _UNSUPPORTED_INPUT_PARAMS:
        if unsupported in params:
            raise InferenceInputError(f"input '{name}': shared memory is not supported")
    size = params.get("binary_data_size")
    if size is None:
        if "data" not in item:
            raise InferenceInputError(f"input '{name}': no 'data' and no binary_data_size")
        array = _from_json(name, datatype, shape, item["data"])
        return InferInputTensor(name, datatype, shape, array), 0
    if not has_binary:
        raise InferenceInputError(
            f"input '{name}': binary_data_size given without {HEADER_CONTENT_LENGTH}"
        )
    if type(size) is not int or size < 0:
        raise InferenceInputError(f"input '{name}': binary_data_size must be a non-negative int")
    if offset + size > len(binary):
        raise InferenceInputError(f"truncated binary data for input '{name}'")
    array = _from_binary(name, datatype, shape, binary[offset : offset + size])
    return InferInputTensor(name, datatype, shape, array), size


def _shape_error(name: str, shape: Sequence[int], needed: int, got: str) -> InferenceInputError:
    return InferenceInputError(
        f"input '{name}': shape {list(shape)} needs {needed} elements, got {got}"
    )


def _from_binary(
    name: str, datatype: str, shape: tuple[int, ...], chunk: memoryview
) -> np.ndarray[Any, Any]:
    count = element_count(shape)
    if datatype == BYTES:
        elements = _split_bytes(name, chunk)
        if len(elements) != count:
            raise _shape_error(name, shape, count, str(len(elements)))
        array = np.empty(count, dtype=np.object_)
        array[:] = elements
        return array.reshape(shape)
    dtype = to_numpy_dtype(datatype)
    if len(chunk) != count * dtype.itemsize:
        got = f"{len(chunk)} bytes ({len(chunk) / dtype.itemsize:g} {datatype} elements)"
        raise _shape_error(name, shape, count, got)
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


def _split_bytes(name: str, chunk: memoryview) -> list[bytes]:
    elements: list[bytes] = []
    pos, total = 0, len(chunk)
    while pos < total:
        if pos + 4 > total:
            raise InferenceInputError(f"truncated binary data for input '{name}'")
        (length,) = _LEN.unpack_from(chunk, pos)
        pos += 4
        if pos + length > total:
            raise InferenceInputError(f"truncated binary data for input '{name}'")
        elements.append(bytes(chunk[pos : pos + length]))
        pos += length
    return elements


def _flatten(name: str, data: object, out: list[bytes]) -> None:
    if isinstance(data, list):
        for item in data:
            _flatten(name, item, out)
    elif isinstance(data, str):
        out.append(data.encode("utf-8"))
    else:
        raise InferenceInputError(
            f"input '{name}': BYTES data must be strings, got {type(data).__name__}"
        )


def _from_json(
    name: str, datatype: str, shape: tuple[int, ...], data: object
) -> np.ndarray[Any, Any]:
    count = element_count(shape)
    if datatype == BYTES:
        elements: list[bytes] = []
        _flatten(name, data, elements)
        if len(elements) != count:
            raise _shape_error(name, shape, count, str(len(elements)))
        array = np.empty(count, dtype=np.object_)
        array[:] = elements
        return array.reshape(shape)
    try:
        raw = np.asarray(data)
    except ValueError:
        raise InferenceInputError(
            f"input '{name}': data is not a regular nested list of numbers"
        ) from None
    if raw.size != count:
        raise _shape_error(name, shape, count, str(raw.size))
    dtype = to_numpy_dtype(datatype)
    if dtype.kind in "iu" and raw.dtype.kind == "f":
        # numpy turns ints beyond INT64 (valid UINT64 values) mixed with small ones into
        # float64, losing precision; keep them as exact Python ints when that is all they are.
        exact = np.asarray(data, dtype=np.object_)
        if all(type(v) is int for v in exact.ravel()):
            raw = exact
    if raw.size:
        _check_kind(name, datatype, dtype, raw)
    with np.errstate(all="ignore"):
        return raw.astype(dtype, copy=False).reshape(shape)


def _check_kind(name: str, datatype: str, dtype: np.dtype[Any], raw: np.ndarray[Any, Any]) -> None:
    kind = raw.dtype.kind
    if dtype.kind == "b":
        if kind != "b":
            raise InferenceInputError(f"input '{name}': BOOL data must be true/false")
    elif dtype.kind in "iu":
        exact_ints = kind == "O" and all(type(v) is int for v in raw.ravel())
        if kind not in "iu" and not exact_ints:  # exact_ints: see _from_json
            raise InferenceInputError(f"input '{name}': {datatype} data must be integers")
        info = np.iinfo(dtype)
        if int(raw.min()) < info.min or int(raw.max()) > info.max:
            raise InferenceInputError(f"input '{name}': a value is out of range for {datatype}")
    elif kind not in "iuf":
        raise InferenceInputError(f"input '{name}': {datatype} data must be numbers")


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
        for unsupported in _UNSUPPORTED_INPUT_PARAMS:
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
            raw = _to_binary(array, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = _to_json(name, array, datatype)
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        doc["model_version"] = model_version
    if request.id:
        doc["id"] = request.id
    doc["outputs"] = entries
    header = _encode_json(doc).encode()
    if not blobs:
        return header, {"Content-Type": "application/json"}
    headers = {
        "Content-Type": "application/octet-stream",
        HEADER_CONTENT_LENGTH: str(len(header)),
    }
    return b"".join([header, *blobs]), headers


def _to_binary(array: np.ndarray[Any, Any], datatype: str) -> bytes | memoryview:
    if datatype == BYTES:
        parts: list[bytes] = []
        for element in array.ravel(order="C"):
            data = _as_bytes(element)
            parts.append(_LEN.pack(len(data)))
            parts.append(data)
        return b"".join(parts)
    contiguous = np.ascontiguousarray(array, dtype=to_numpy_dtype(datatype))
    return contiguous.data.cast("B")


def _as_bytes(element: object) -> bytes:
    if isinstance(element, bytes):
        return element
    if isinstance(element, str):
        return element.encode("utf-8")
    return str(element).encode("utf-8")


def _to_json(name: str, array: np.ndarray[Any, Any], datatype: str) -> list[Any]:
    if datatype != BYTES:
        flat: list[Any] = array.ravel(order="C").tolist()
        return flat
    out: list[str] = []
    for element in array.ravel(order="C"):
        if isinstance(element, bytes):
            try:
                out.append(element.decode("utf-8"))
            except UnicodeDecodeError:
                raise InferenceInputError(
                    f"output '{name}' holds bytes that are not UTF-8; request it with binary_data"
                ) from None
        else:
            out.append(str(element))
    return out


# --------------------------------------------------------------------------- metadata


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

    def tensors(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
        return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]

    return {
        "name": name,
        "versions": list(versions),
        "platform": platform,
        "inputs": tensors(inputs),
        "outputs": tensors(outputs),
    }
