"""Byte-for-byte reproducible zips for the built-in ``python``-format artifacts."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = ["npz_bytes", "write_zip"]

_DATE: Final = (1980, 1, 1, 0, 0, 0)


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def write_zip(path: str | os.PathLike[str], files: Mapping[str, bytes]) -> Path:
    """Write a zip with fixed timestamps and permissions, members in name order.

    Args:
        path: The zip file to write.
        files: Archive name → content.

    Returns:
        The path written.
    """
    target = Path(path)
    with zipfile.ZipFile(target, "w") as archive:
        for name in sorted(files):
            _add(archive, name, files[name])
    return target


def npz_bytes(arrays: Mapping[str, npt.NDArray[Any]]) -> bytes:
    """Serialise arrays as an ``.npz`` (readable by ``np.load``) without timestamps.

    ``np.savez`` stamps the current time into its zip entries; this writes the same format
    with the fixed date of :func:`write_zip`.

    Args:
        arrays: Name → array (stored as ``<name>.npy``).

    Returns:
        The ``.npz`` file's bytes.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.save(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            _add(archive, f"{name}.npy", member.getvalue())
    return buffer.getvalue()
