"""The tensor half of the v2 codec, shared by the server and the client side.

One tensor of a request or a response (``inputs`` or ``outputs``, named by ``kind``) is decoded
from JSON data or from its slice of the binary data that follows the JSON document, and encoded
back to either. The rules are those of the binary tensor data extension, as
``tritonclient.http`` writes and reads it:

* a binary body is a JSON document of ``Inference-Header-Content-Length`` bytes followed by the
  raw bytes of each tensor that has ``parameters.binary_data_size``, in tensor order;
* fixed-size tensors are little-endian, row-major; ``BYTES`` elements are each prefixed with
  their length as a 4-byte little-endian unsigned integer.

This is the hot path: binary tensors are decoded with ``np.frombuffer`` (zero copy, so the
arrays are read-only views of the body) and JSON data with one ``np.asarray`` call; only
``BYTES`` elements are handled one by one.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_store.datatypes import BYTES, DATATYPES, element_count, to_numpy_dtype
from model_store.errors import InferenceInputError
from model_store.manifest import TensorSpec

__all__ = [
    "HEADER_CONTENT_LENGTH",
    "UNSUPPORTED_PARAMS",
    "InferInputTensor",
    "decode_tensors",
    "encode_json",
    "split_body",
    "tensor_metadata",
    "to_binary",
    "to_json",
]

HEADER_CONTENT_LENGTH = "Inference-Header-Content-Length"
"""The header that gives the length of the JSON part of a binary request or response."""

UNSUPPORTED_PARAMS = ("shared_memory_region", "shared_memory_byte_size")
"""Tensor parameters of the shared-memory extension, which the platform does not serve."""

_LEN = struct.Struct("<I")

# Built once: json.dumps with any non-default argument builds a new encoder on every call.
encode_json = json.JSONEncoder(separators=(",", ":"), allow_nan=True).encode


@dataclass(slots=True)
class InferInputTensor:
    """One decoded input tensor (or output tensor, on the client side).

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


def split_body(
    body: bytes, header_length: int | None, what: str
) -> tuple[dict[str, Any], memoryview]:
    """Split a request or response body into its JSON document and the binary data after it.

    Args:
        body: The whole HTTP body.
        header_length: The ``Inference-Header-Content-Length`` value, or None for plain JSON.
        what: ``"request"`` or ``"response"``, for messages.

    Returns:
        The JSON document and the bytes that follow it (empty for plain JSON).

    Raises:
        InferenceInputError: The length lies past the body, or the JSON is malformed.
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
        raise InferenceInputError(f"malformed JSON {what}: {e}") from None
    if not isinstance(doc, dict):
        raise InferenceInputError(f"malformed JSON {what}: expected an object")
    return doc, binary


def decode_tensors(
    kind: str, items: list[Any], binary: memoryview, has_binary: bool
) -> list[InferInputTensor]:
    """Decode the ``inputs`` of a request or the ``outputs`` of a response.

    Args:
        kind: ``"input"`` or ``"output"``, for messages.
        items: The JSON list of tensors.
        binary: The binary data after the JSON document, consumed in tensor order.
        has_binary: Whether the body had ``Inference-Header-Content-Length``.

    Returns:
        The tensors, in list order.

    Raises:
        InferenceInputError: A malformed tensor, a data length that does not fit its shape,
            or truncated or trailing binary data; the message names the tensor.
    """
    tensors: list[InferInputTensor] = []
    offset = 0
    for index, item in enumerate(items):
        tensor, used = _decode_tensor(kind, index, item, binary, offset, has_binary)
        offset += used
        tensors.append(tensor)
    if offset != len(binary):
        raise InferenceInputError(
            f"{len(binary) - offset} bytes of binary data follow the last {kind}"
        )
    return tensors


def _decode_tensor(
    kind: str, index: int, item: object, binary: memoryview, offset: int, has_binary: bool
) -> tuple[InferInputTensor, int]:
    if not isinstance(item, dict):
        raise InferenceInputError(f"{kind} #{index} must be an object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InferenceInputError(f"{kind} #{index} has no name")
    label = f"{kind} '{name}'"
    datatype = item.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InferenceInputError(f"{label}: unsupported datatype {datatype!r}")
    raw_shape = item.get("shape")
    if not isinstance(raw_shape, list) or not all(type(d) is int and d >= 0 for d in raw_shape):
        raise InferenceInputError(
            f"{label}: shape must be a list of non-negative integers, got {raw_shape!r}"
        )
    shape = tuple(raw_shape)
    params = item.get("parameters") or {}
    if not isinstance(params, dict):
        raise InferenceInputError(f"{label}: 'parameters' must be an object")
    for unsupported in UNSUPPORTED_PARAMS:
        if unsupported in params:
            raise InferenceInputError(f"{label}: shared memory is not supported")
    size = params.get("binary_data_size")
    if size is None:
        if "data" not in item:
            raise InferenceInputError(f"{label}: no 'data' and no binary_data_size")
        array = _from_json(label, datatype, shape, item["data"])
        return InferInputTensor(name, datatype, shape, array), 0
    if not has_binary:
        raise InferenceInputError(
            f"{label}: binary_data_size given without {HEADER_CONTENT_LENGTH}"
        )
    if type(size) is not int or size < 0:
        raise InferenceInputError(f"{label}: binary_data_size must be a non-negative int")
    if offset + size > len(binary):
        raise InferenceInputError(f"truncated binary data for {label}")
    array = _from_binary(label, datatype, shape, binary[offset : offset + size])
    return InferInputTensor(name, datatype, shape, array), size


# The helpers below name the tensor by ``label``, e.g. "input 'x'" or "output 'y'".


def _shape_error(label: str, shape: Sequence[int], needed: int, got: str) -> InferenceInputError:
    return InferenceInputError(f"{label}: shape {list(shape)} needs {needed} elements, got {got}")


def _from_binary(
    label: str, datatype: str, shape: tuple[int, ...], chunk: memoryview
) -> np.ndarray[Any, Any]:
    count = element_count(shape)
    if datatype == BYTES:
        elements = _split_bytes(label, chunk)
        if len(elements) != count:
            raise _shape_error(label, shape, count, str(len(elements)))
        array = np.empty(count, dtype=np.object_)
        array[:] = elements
        return array.reshape(shape)
    dtype = to_numpy_dtype(datatype)
    if len(chunk) != count * dtype.itemsize:
        got = f"{len(chunk)} bytes ({len(chunk) / dtype.itemsize:g} {datatype} elements)"
        raise _shape_error(label, shape, count, got)
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


def _split_bytes(label: str, chunk: memoryview) -> list[bytes]:
    elements: list[bytes] = []
    pos, total = 0, len(chunk)
    while pos < total:
        if pos + 4 > total:
            raise InferenceInputError(f"truncated binary data for {label}")
        (length,) = _LEN.unpack_from(chunk, pos)
        pos += 4
        if pos + length > total:
            raise InferenceInputError(f"truncated binary data for {label}")
        elements.append(bytes(chunk[pos : pos + length]))
        pos += length
    return elements


def _flatten(label: str, data: object, out: list[bytes]) -> None:
    if isinstance(data, list):
        for item in data:
            _flatten(label, item, out)
    elif isinstance(data, str):
        out.append(data.encode("utf-8"))
    else:
        raise InferenceInputError(f"{label}: BYTES data must be strings, got {type(data).__name__}")


def _from_json(
    label: str, datatype: str, shape: tuple[int, ...], data: object
) -> np.ndarray[Any, Any]:
    count = element_count(shape)
    if datatype == BYTES:
        elements: list[bytes] = []
        _flatten(label, data, elements)
        if len(elements) != count:
            raise _shape_error(label, shape, count, str(len(elements)))
        array = np.empty(count, dtype=np.object_)
        array[:] = elements
        return array.reshape(shape)
    try:
        raw = np.asarray(data)
    except ValueError:
        raise InferenceInputError(
            f"{label}: data is not a regular nested list of numbers"
        ) from None
    if raw.size != count:
        raise _shape_error(label, shape, count, str(raw.size))
    dtype = to_numpy_dtype(datatype)
    if dtype.kind in "iu" and raw.dtype.kind == "f":
        # numpy turns ints beyond INT64 (valid UINT64 values) mixed with small ones into
        # float64, losing precision; keep them as exact Python ints when that is all they are.
        exact = np.asarray(data, dtype=np.object_)
        if all(type(v) is int for v in exact.ravel()):
            raw = exact
    if raw.size:
        _check_kind(label, datatype, dtype, raw)
    with np.errstate(all="ignore"):
        return raw.astype(dtype, copy=False).reshape(shape)


def _check_kind(label: str, datatype: str, dtype: np.dtype[Any], raw: np.ndarray[Any, Any]) -> None:
    kind = raw.dtype.kind
    if dtype.kind == "b":
        if kind != "b":
            raise InferenceInputError(f"{label}: BOOL data must be true/false")
    elif dtype.kind in "iu":
        exact_ints = kind == "O" and all(type(v) is int for v in raw.ravel())
        if kind not in "iu" and not exact_ints:  # exact_ints: see _from_json
            raise InferenceInputError(f"{label}: {datatype} data must be integers")
        info = np.iinfo(dtype)
        if int(raw.min()) < info.min or int(raw.max()) > info.max:
            raise InferenceInputError(f"{label}: a value is out of range for {datatype}")
    elif kind not in "iuf":
        raise InferenceInputError(f"{label}: {datatype} data must be numbers")


# --------------------------------------------------------------------------- encoding


def to_binary(array: np.ndarray[Any, Any], datatype: str) -> bytes | memoryview:
    """Encode a tensor's data for the binary extension.

    Args:
        array: The tensor.
        datatype: Its v2 datatype.

    Returns:
        Little-endian row-major bytes, or length-prefixed elements for ``BYTES``.
    """
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


def to_json(label: str, array: np.ndarray[Any, Any], datatype: str, remedy: str) -> list[Any]:
    """Encode a tensor's data as a flat JSON list.

    Args:
        label: Names the tensor in messages, e.g. ``"output 'y'"``.
        array: The tensor.
        datatype: Its v2 datatype.
        remedy: What the message tells the caller to do about bytes that are not UTF-8.

    Returns:
        The elements, row-major (``BYTES`` as strings).

    Raises:
        InferenceInputError: A ``BYTES`` element is not UTF-8.
    """
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
                    f"{label} holds bytes that are not UTF-8; {remedy}"
                ) from None
        else:
            out.append(str(element))
    return out


def tensor_metadata(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
    """Describe tensors as v2 metadata lists them.

    Args:
        specs: A signature (inputs or outputs).

    Returns:
        ``[{"name", "datatype", "shape"}, ...]``, in signature order.
    """
    return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]
