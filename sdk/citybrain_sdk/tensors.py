"""numpy arrays to and from the Open Inference Protocol (v2), with the binary tensor extension.

A binary request is a JSON header of ``Inference-Header-Content-Length`` bytes followed by each
input's raw bytes (little-endian, row-major; ``BYTES`` elements each prefixed with their length
as a 4-byte little-endian unsigned integer), and the same holds for a binary response. This is
what ``tritonclient.http`` sends; the SDK writes it itself so that it depends on numpy alone.
numpy is imported when a tensor is first encoded, so the rest of the SDK works without it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["DATATYPES", "HEADER_CONTENT_LENGTH", "InferResult", "decode_response", "encode_request"]

HEADER_CONTENT_LENGTH = "Inference-Header-Content-Length"
_LEN = struct.Struct("<I")

DATATYPES = {
    "BOOL": "|b1",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
"""v2 datatype → numpy dtype string (little-endian, the wire order); ``BYTES`` is ``object``."""


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "tensors need numpy: pip install 'citybrain-sdk[numpy]' (or pip install numpy)"
        ) from e
    return numpy


def datatype_of(array: npt.NDArray[Any]) -> str:
    """The v2 datatype of a numpy array (``object``, ``bytes_`` and ``str_`` are ``BYTES``).

    Args:
        array: Any numpy array.

    Returns:
        A v2 datatype name such as ``"FP32"``.

    Raises:
        TypeError: The dtype has no v2 equivalent (complex numbers, datetimes…).

    Example:
        >>> datatype_of(np.ones(3, np.float32))
        'FP32'
    """
    kind, size = array.dtype.kind, array.dtype.itemsize
    if kind in "OSU":
        return "BYTES"
    for name, dt in DATATYPES.items():
        if dt[1] == kind and int(dt[2:]) == size:
            return name
    raise TypeError(f"numpy dtype {array.dtype} has no Open Inference Protocol datatype")


def _element_bytes(element: Any) -> bytes:
    if isinstance(element, bytes):
        return element
    if isinstance(element, str):
        return element.encode("utf-8")
    return str(element).encode("utf-8")


def _raw(array: npt.NDArray[Any], datatype: str) -> bytes:
    np = _numpy()
    if datatype == "BYTES":
        parts: list[bytes] = []
        for element in array.ravel(order="C"):
            data = _element_bytes(element)
            parts.append(_LEN.pack(len(data)))
            parts.append(data)
        return b"".join(parts)
    raw: bytes = np.ascontiguousarray(array, dtype=np.dtype(DATATYPES[datatype])).tobytes()
    return raw


def _json_data(array: npt.NDArray[Any], datatype: str) -> list[Any]:
    if datatype == "BYTES":
        out: list[Any] = []
        for element in array.ravel(order="C"):
            out.append(element.decode("utf-8") if isinstance(element, bytes) else str(element))
        return out
    flat: list[Any] = array.ravel(order="C").tolist()
    return flat


def encode_request(
    inputs: Mapping[str, Any],
    *,
    outputs: Sequence[str] | None = None,
    binary: bool = True,
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Encode named inputs as a v2 inference request body.

    Args:
        inputs: Input name → array (anything ``numpy.asarray`` takes; strings become ``BYTES``).
        outputs: The outputs to return (None: all of them).
        binary: Send tensors and ask for outputs in the binary extension (False: JSON lists).
        parameters: Request-level v2 ``parameters``.

    Returns:
        The body and the headers to send with it.

    Example:
        >>> body, headers = encode_request({"flow": np.ones((2, 16), np.float32)})
        >>> headers["Inference-Header-Content-Length"]
        '104'
    """
    np = _numpy()
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, value in inputs.items():
        array = np.asarray(value)
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            raw = _raw(array, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = _json_data(array, datatype)
        entries.append(entry)
    params = dict(parameters or {})
    doc: dict[str, Any] = {"inputs": entries}
    if outputs is not None:
        doc["outputs"] = [{"name": o, "parameters": {"binary_data": binary}} for o in outputs]
    elif binary:
        params["binary_data_output"] = True
    if params:
        doc["parameters"] = params
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not binary:
        return header, {"Content-Type": "application/json"}
    headers = {
        "Content-Type": "application/octet-stream",
        HEADER_CONTENT_LENGTH: str(len(header)),
    }
    return b"".join([header, *blobs]), headers


@dataclass(frozen=True)
class InferResult(Mapping[str, "npt.NDArray[Any]"]):
    """A model's outputs by name (a read-only mapping of numpy arrays).

    Attributes:
        model_name: The model the server ran.
        model_version: The version it served, when the server says.
        outputs: Output name → array (writable copies).
        replayed: True when the platform answered an earlier call with the same
            ``Idempotency-Key`` (a retry: billed once, not twice).
        request_id: The request id of the call.
        idempotency_key: The ``Idempotency-Key`` the call was sent with.

    Example:
        >>> out = cb.models.infer("traffic-police.flow-smoother", {"flow": flow})
        >>> out["smoothed"].shape, out.model_version
    """

    model_name: str
    model_version: str | None
    outputs: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    replayed: bool = False
    request_id: str | None = None
    idempotency_key: str | None = None

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        return self.outputs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.outputs)

    def __len__(self) -> int:
        return len(self.outputs)


def _split_bytes(chunk: bytes) -> list[bytes]:
    elements: list[bytes] = []
    pos = 0
    while pos < len(chunk):
        (length,) = _LEN.unpack_from(chunk, pos)
        pos += 4
        elements.append(chunk[pos : pos + length])
        pos += length
    return elements


def _decode_output(entry: Mapping[str, Any], blob: bytes | None) -> np.ndarray[Any, Any]:
    np = _numpy()
    datatype = str(entry["datatype"])
    shape = tuple(int(d) for d in entry.get("shape", ()))
    if datatype == "BYTES":
        if blob is not None:
            elements: list[Any] = _split_bytes(blob)
        else:
            elements = [str(v).encode("utf-8") for v in entry.get("data", ())]
        array = np.empty(len(elements), dtype=object)
        array[:] = elements
        return array.reshape(shape)  # type: ignore[no-any-return]
    dtype = np.dtype(DATATYPES[datatype])
    if blob is not None:
        return np.frombuffer(blob, dtype=dtype).reshape(shape).copy()  # type: ignore[no-any-return]
    return np.asarray(entry.get("data", ()), dtype=dtype).reshape(shape)  # type: ignore[no-any-return]


def decode_response(
    body: bytes,
    headers: Mapping[str, str],
    *,
    request_id: str | None = None,
    idempotency_key: str | None = None,
) -> InferResult:
    """Decode a v2 inference response (JSON or with binary outputs).

    Args:
        body: The response body.
        headers: The response headers (``Inference-Header-Content-Length``,
            ``Idempotent-Replayed``).
        request_id: The call's request id, kept on the result.
        idempotency_key: The call's idempotency key, kept on the result.

    Returns:
        The outputs by name.

    Raises:
        ValueError: The body is not a v2 response.

    Example:
        >>> result = decode_response(response.content, response.headers)
        >>> result["smoothed"]
    """
    length_header = headers.get(HEADER_CONTENT_LENGTH) or headers.get(HEADER_CONTENT_LENGTH.lower())
    length = int(length_header) if length_header is not None else len(body)
    try:
        doc = json.loads(body[:length])
    except ValueError as e:
        raise ValueError(f"not an Open Inference Protocol response: {e}") from None
    binary = body[length:]
    offset = 0
    outputs: dict[str, Any] = {}
    for entry in doc.get("outputs", ()):
        size = (entry.get("parameters") or {}).get("binary_data_size")
        blob = None
        if size is not None:
            blob = binary[offset : offset + int(size)]
            offset += int(size)
        outputs[str(entry["name"])] = _decode_output(entry, blob)
    replayed = (headers.get("Idempotent-Replayed") or headers.get("idempotent-replayed")) == "true"
    return InferResult(
        model_name=str(doc.get("model_name", "")),
        model_version=doc.get("model_version"),
        outputs=outputs,
        replayed=replayed,
        request_id=request_id,
        idempotency_key=idempotency_key,
    )
