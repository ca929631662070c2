"""Streaming files up and down with progress, shared by models and datasets.

Uploads are read chunk by chunk (never whole into memory) by a body that is made afresh for
each attempt, so a refused upload (429/503) can be sent again. Downloads are written to a
temporary file beside the destination and renamed into place only when complete (and, when the
server announced a digest, only when the bytes hash to it): an interrupted or corrupted download
leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

import httpx

from citybrain_sdk.errors import DigestMismatch
from citybrain_sdk.types import Progress

CHUNK = 1 << 20

_FILENAME = re.compile(r'filename="?([^";]+)"?')


def sha256_file(path: Path) -> str:
    """``sha256:<hex>`` of a file, read in chunks.

    Example:
        >>> sha256_file(Path("model.pt"))
        'sha256:9f86d0…'
    """
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


class _Tally:
    """Bytes moved so far, told to a progress callback: ``(0, total)`` at the start, then after
    each chunk."""

    def __init__(self, total: int | None, progress: Progress | None) -> None:
        self.total = total
        self.done = 0
        self._progress = progress
        if progress is not None:
            progress(0, total)

    def add(self, chunk: bytes) -> bytes:
        self.done += len(chunk)
        if self._progress is not None:
            self._progress(self.done, self.total)
        return chunk


def iter_file(path: Path, progress: Progress | None) -> Iterator[bytes]:
    """A file's bytes in chunks, reporting progress after each."""
    reader = ProgressReader(path, progress)
    try:
        while chunk := reader.read(CHUNK):
            yield chunk
    finally:
        reader.close()


async def aiter_file(path: Path, progress: Progress | None) -> AsyncIterator[bytes]:
    """:func:`iter_file` for an async client (reads in a worker thread)."""
    reader = ProgressReader(path, progress)
    try:
        while chunk := await asyncio.to_thread(reader.read, CHUNK):
            yield chunk
    finally:
        reader.close()


class ProgressReader:
    """A binary file that reports how much has been read (multipart uploads read it), and
    closes itself once read to the end."""

    def __init__(self, path: Path, progress: Progress | None) -> None:
        self._file: IO[bytes] = path.open("rb")
        self._tally = _Tally(path.stat().st_size, progress)
        self.name = path.name

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        if not chunk:
            # The multipart encoder reads to the end and never closes what it was given.
            self._file.close()
            return chunk
        return self._tally.add(chunk)

    def fileno(self) -> int:
        # httpx sizes a multipart body from the file's descriptor (a Content-Length, not chunks).
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()


def filename_from(response: httpx.Response, fallback: str) -> str:
    """The name in ``Content-Disposition``, reduced to its last path component."""
    match = _FILENAME.search(response.headers.get("content-disposition", ""))
    name = os.path.basename(match.group(1)) if match else ""
    return name or fallback


def target_path(dest: str | os.PathLike[str], response: httpx.Response, fallback: str) -> Path:
    """``dest`` itself, or a file in it named by the response when ``dest`` is a folder."""
    path = Path(dest)
    if path.is_dir():
        return path / filename_from(response, fallback)
    return path


class _Sink:
    """A temporary file beside the target that hashes what it is given and reports progress;
    left by an error, it removes itself."""

    def __init__(self, target: Path, response: httpx.Response, progress: Progress | None) -> None:
        length = response.headers.get("content-length")
        self._tally = _Tally(int(length) if length and length.isdigit() else None, progress)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        self.file = os.fdopen(fd, "wb")
        self.tmp = Path(name)
        self.target = target
        self.digest = hashlib.sha256()

    def __enter__(self) -> _Sink:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is not None:
            self.abort()

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.digest.update(chunk)
        self._tally.add(chunk)

    def commit(self, expected: str | None) -> Path:
        self.file.close()
        got = f"sha256:{self.digest.hexdigest()}"
        if expected and expected.startswith("sha256:") and expected != got:
            self.tmp.unlink(missing_ok=True)
            raise DigestMismatch(f"downloaded bytes hash to {got}, the server announced {expected}")
        os.replace(self.tmp, self.target)
        return self.target

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def save(
    response: httpx.Response, target: Path, expected: str | None, progress: Progress | None
) -> Path:
    """Write a streamed response to ``target`` (atomically; digest-checked when announced)."""
    with _Sink(target, response, progress) as sink:
        for chunk in response.iter_bytes(CHUNK):
            sink.write(chunk)
    return sink.commit(expected)


async def asave(
    response: httpx.Response, target: Path, expected: str | None, progress: Progress | None
) -> Path:
    """:func:`save` for an async client (writes in a worker thread)."""
    with _Sink(target, response, progress) as sink:
        async for chunk in response.aiter_bytes(CHUNK):
            await asyncio.to_thread(sink.write, chunk)
    return sink.commit(expected)


def json_or_path(value: Any) -> Any:
    """A JSON document given as a mapping, or read from a path."""
    import json

    if isinstance(value, (str, os.PathLike)):
        return json.loads(Path(value).read_text(encoding="utf-8"))
    return value
