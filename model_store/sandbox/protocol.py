"""The wire between the gateway and a sandbox worker: framed messages carrying v2 tensors.

One message is a fixed prefix, a JSON header and the tensors' raw bytes::

    b"CBW1" | header length (u32 LE) | payload length (u64 LE) | header (UTF-8 JSON) | payload

The header is ``{"op": ..., <fields>, "tensors": [{"name", "datatype", "shape", "nbytes"}]}``;
the payload is each tensor's bytes in that order: fixed-size datatypes little-endian and
C-ordered (what ``np.frombuffer`` reads back without a copy), ``BYTES`` as a 4-byte
little-endian length before each element (the v2 binary extension's layout).

Nothing is pickled. The gateway reads whatever a worker sends as hostile: lengths are bounded
before anything is allocated, the header must be JSON of the expected shape, datatypes come
from the v2 list, and each tensor's byte count must match its shape exactly, so a worker can
make the gateway do no more than read a bounded number of bytes and build numpy arrays of them.
"""

from __future__ import annotations

import json
import math
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model_store.datatypes import BYTES, DATATYPES, from_numpy_dtype, to_numpy_dtype

__all__ = ["MAX_HEADER_BYTES", "Message", "ProtocolError", "encode_tensors", "recv", "send"]

MAGIC = b"CBW1"
_PREFIX = struct.Struct("<4sIQ")
_LEN = struct.Struct("<I")
MAX_HEADER_BYTES = 1 << 20
"""The largest JSON header either side accepts (names, shapes, an error message)."""
_MAX_RANK = 32
_MAX_NAME = 256


class ProtocolError(Exception):
    """The peer sent something that is not a well-formed message (or closed mid-message)."""


@dataclass(slots=True)
class Message:
    """One decoded message.

    Attributes:
        op: What the message is (``"predict"``, ``"result"``, ``"error"``...).
        header: The whole JSON header.
        tensors: The tensors it carried, by name (fixed-size ones are views of one buffer).
    """

    op: str
    header: dict[str, Any]
    tensors: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)


def _bytes_payload(array: np.ndarray[Any, Any]) -> bytes:
    parts: list[bytes] = []
    for element in array.ravel(order="C"):
        if isinstance(element, bytes):
            data = element
        elif isinstance(element, str):
            data = element.encode("utf-8")
        else:
            data = str(element).encode("utf-8")
        parts.append(_LEN.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def encode_tensors(
    tensors: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], list[bytes | memoryview]]:
    """Describe and serialise tensors for :func:`send`.

    Args:
        tensors: Arrays (or anything ``np.asarray`` takes) by name.

    Returns:
        The header entries and the buffers, in the same order.

    Raises:
        ValueError: A value whose dtype has no v2 datatype (complex numbers, say).
    """
    entries: list[dict[str, Any]] = []
    buffers: list[bytes | memoryview] = []
    for name, value in tensors.items():
        array = np.asarray(value)
        try:
            datatype = from_numpy_dtype(array.dtype)
        except ValueError:
            raise ValueError(
                f"output '{name}' has dtype {array.dtype}, which no v2 datatype holds"
            ) from None
        buffer: bytes | memoryview
        if datatype == BYTES:
            buffer = _bytes_payload(array)
        else:
            flat = np.ascontiguousarray(array, dtype=to_numpy_dtype(datatype)).reshape(-1)
            buffer = flat.view(np.uint8).data
        entry = {"name": str(name), "datatype": datatype, "shape": [*array.shape]}
        entries.append({**entry, "nbytes": len(buffer)})
        buffers.append(buffer)
    return entries, buffers


def send(
    sock: socket.socket,
    op: str,
    fields: Mapping[str, Any] | None = None,
    tensors: Mapping[str, Any] | None = None,
) -> None:
    """Send one message (blocking until the peer has taken all of it).

    Args:
        sock: A connected stream socket.
        op: The message's kind.
        fields: More JSON header fields.
        tensors: Arrays to carry, by name.

    Raises:
        ValueError: A tensor has no v2 datatype, or the header is too large.
        OSError: The peer is gone.
    """
    entries, buffers = encode_tensors(tensors or {})
    header = json.dumps({**(fields or {}), "op": op, "tensors": entries}).encode("utf-8")
    if len(header) > MAX_HEADER_BYTES:
        raise ValueError(f"message header of {len(header)} bytes is over {MAX_HEADER_BYTES}")
    payload = sum(len(b) for b in buffers)
    sock.sendall(_PREFIX.pack(MAGIC, len(header), payload) + header)
    for buffer in buffers:
        if len(buffer):
            sock.sendall(buffer)


def _read_into(sock: socket.socket, view: memoryview, deadline: float | None) -> None:
    got = 0
    while got < len(view):
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the worker did not answer in time")
            sock.settimeout(remaining)
        try:
            n = sock.recv_into(view[got:])
        except TimeoutError:
            raise TimeoutError("the worker did not answer in time") from None
        if n == 0:
            if got == 0 and len(view) == _PREFIX.size:
                raise EOFError("the peer closed the connection")
            raise ProtocolError("the peer closed the connection in the middle of a message")
        got += n


def recv(sock: socket.socket, *, max_payload: int, deadline: float | None = None) -> Message:
    """Receive one message, checking everything about it before trusting any of it.

    Args:
        sock: A connected stream socket.
        max_payload: The most tensor bytes accepted in one message.
        deadline: A ``time.monotonic()`` instant to give up at (None: wait forever).

    Returns:
        The message.

    Raises:
        EOFError: The peer closed the connection between messages.
        TimeoutError: The deadline passed.
        ProtocolError: Anything malformed or over the limits.
        OSError: The connection failed.
    """
    prefix = bytearray(_PREFIX.size)
    _read_into(sock, memoryview(prefix), deadline)
    magic, header_len, payload_len = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise ProtocolError("the peer does not speak this protocol")
    if header_len > MAX_HEADER_BYTES:
        raise ProtocolError(f"a message header of {header_len} bytes is over {MAX_HEADER_BYTES}")
    if payload_len > max_payload:
        raise ProtocolError(f"a message of {payload_len} bytes is over the limit of {max_payload}")
    raw = bytearray(header_len)
    _read_into(sock, memoryview(raw), deadline)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("a message header is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("op"), str):
        raise ProtocolError("a message header has no op")
    specs = _check_specs(header.get("tensors", []), payload_len)
    payload = bytearray(payload_len)
    if payload_len:
        _read_into(sock, memoryview(payload), deadline)
    return Message(op=header["op"], header=header, tensors=_decode(specs, payload))


@dataclass(frozen=True, slots=True)
class _Spec:
    name: str
    datatype: str
    shape: tuple[int, ...]
    nbytes: int


def _check_specs(raw: object, payload_len: int) -> list[_Spec]:
    if not isinstance(raw, list):
        raise ProtocolError("'tensors' is not a list")
    specs: list[_Spec] = []
    names: set[str] = set()
    total = 0
    for entry in raw:
        if not isinstance(entry, dict):
            raise ProtocolError("a tensor entry is not an object")
        name, datatype = entry.get("name"), entry.get("datatype")
        shape, nbytes = entry.get("shape"), entry.get("nbytes")
        if not isinstance(name, str) or not name or len(name) > _MAX_NAME or name in names:
            raise ProtocolError("a tensor has no name, a long one or a repeated one")
        if datatype not in DATATYPES:
            raise ProtocolError(f"tensor '{name}' has an unknown datatype")
        if (
            not isinstance(shape, list)
            or len(shape) > _MAX_RANK
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise ProtocolError(f"tensor '{name}' has an invalid shape")
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise ProtocolError(f"tensor '{name}' has an invalid size")
        count = math.prod(shape)
        if datatype == BYTES:
            if count * _LEN.size > nbytes:
                raise ProtocolError(f"tensor '{name}' is shorter than its shape")
        elif count * to_numpy_dtype(datatype).itemsize != nbytes:
            raise ProtocolError(f"tensor '{name}' has {nbytes} bytes, not what its shape needs")
        names.add(name)
        total += nbytes
        specs.append(_Spec(name, datatype, tuple(shape), nbytes))
    if total != payload_len:
        raise ProtocolError("the tensors' sizes do not add up to the payload")
    return specs


def _decode(specs: list[_Spec], payload: bytearray) -> dict[str, np.ndarray[Any, Any]]:
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    offset = 0
    view = memoryview(payload)
    for spec in specs:
        chunk = view[offset : offset + spec.nbytes]
        offset += spec.nbytes
        if spec.datatype == BYTES:
            tensors[spec.name] = _split_bytes(spec, chunk)
        else:
            dtype = to_numpy_dtype(spec.datatype)
            array = np.frombuffer(chunk, dtype=dtype, count=math.prod(spec.shape))
            tensors[spec.name] = array.reshape(spec.shape)
    return tensors


def _split_bytes(spec: _Spec, chunk: memoryview) -> np.ndarray[Any, Any]:
    count = math.prod(spec.shape)
    elements: list[bytes] = []
    pos = 0
    for _ in range(count):
        if pos + _LEN.size > len(chunk):
            raise ProtocolError(f"tensor '{spec.name}' is truncated")
        (length,) = _LEN.unpack_from(chunk, pos)
        pos += _LEN.size
        if pos + length > len(chunk):
            raise ProtocolError(f"tensor '{spec.name}' is truncated")
        elements.append(bytes(chunk[pos : pos + length]))
        pos += length
    if pos != len(chunk):
        raise ProtocolError(f"tensor '{spec.name}' has bytes past its last element")
    array = np.empty(count, dtype=np.object_)
    array[:] = elements
    return array.reshape(spec.shape)
