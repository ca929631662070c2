"""Open Inference Protocol (v2) datatypes and their numpy equivalents.

Fixed-size datatypes map to little-endian numpy dtypes (the wire order of the binary tensor
extension). ``BYTES`` maps to a numpy ``object`` array whose elements are ``bytes``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "BYTES",
    "DATATYPES",
    "element_count",
    "from_numpy_dtype",
    "itemsize",
    "to_numpy_dtype",
]

BYTES: Final = "BYTES"

_TO_NUMPY: Final[dict[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    BYTES: np.dtype(np.object_),
}

_FROM_NUMPY: Final[dict[tuple[str, int], str]] = {
    (dt.kind, dt.itemsize): name for name, dt in _TO_NUMPY.items() if name != BYTES
}

DATATYPES: Final[frozenset[str]] = frozenset(_TO_NUMPY)
"""Every v2 datatype the platform supports."""


def to_numpy_dtype(datatype: str) -> np.dtype[Any]:
    """Return the numpy dtype of a v2 datatype.

    Args:
        datatype: A v2 datatype name such as ``"FP32"``.

    Returns:
        The numpy dtype (``object`` for ``BYTES``).

    Raises:
        ValueError: If the datatype is not supported.

    Example:
        >>> to_numpy_dtype("INT64")
        dtype('int64')
    """
    try:
        return _TO_NUMPY[datatype]
    except KeyError:
        raise ValueError(f"unsupported datatype {datatype!r}") from None


def from_numpy_dtype(dtype: npt.DTypeLike) -> str:
    """Return the v2 datatype of a numpy dtype.

    ``object``, ``bytes_`` and ``str_`` arrays map to ``BYTES``.

    Args:
        dtype: A numpy dtype (or anything ``np.dtype`` accepts).

    Returns:
        The v2 datatype name.

    Raises:
        ValueError: If the dtype has no v2 equivalent (e.g. complex numbers).
    """
    dt = np.dtype(dtype)
    if dt.kind in "OSU":
        return BYTES
    try:
        return _FROM_NUMPY[(dt.kind, dt.itemsize)]
    except KeyError:
        raise ValueError(f"numpy dtype {dt} has no v2 datatype") from None


def itemsize(datatype: str) -> int:
    """Return the size in bytes of one element of a fixed-size datatype.

    Args:
        datatype: A v2 datatype name other than ``BYTES``.

    Returns:
        The element size in bytes.

    Raises:
        ValueError: For ``BYTES`` or an unsupported datatype.
    """
    if datatype == BYTES:
        raise ValueError("BYTES elements have no fixed size")
    return to_numpy_dtype(datatype).itemsize


def element_count(shape: Iterable[int]) -> int:
    """Return the number of elements of a tensor of this (fully known) shape.

    Args:
        shape: The dimensions; all must be non-negative.

    Returns:
        The product of the dimensions (1 for a scalar shape ``[]``).

    Raises:
        ValueError: If a dimension is negative (a variable dimension has no count).
    """
    dims = list(shape)
    if any(d < 0 for d in dims):
        raise ValueError(f"shape {dims} has a negative dimension")
    return math.prod(dims)
