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


def iter_file(path: Path, progress: Progress | None) -> Iterator[bytes]:
    """A file's bytes in chunks, reporting progress after each."""
    total = path.stat().st_size
    done = 0
    if progress is not None:
        progress(0, total)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            done += len(chunk)
            yield chunk
            if progress is not None:
                progress(done, total)


async def aiter_file(path: Path, progress: Progress | None) -> AsyncIterator[bytes]:
    """:func:`iter_file` for an async client (reads in a worker thread)."""
    total = path.stat().st_size
    done = 0
    if progress is not None:
        progress(0, total)
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            done += len(chunk)
            yield chunk
            if progress is not None:
                progress(done, total)


class ProgressReader:
    """A binary file that reports how much has been read (multipart uploads read it)."""

    def __init__(self, path: Path, progress: Progress | None) -> None:
        self._file: IO[bytes] = path.open("rb")
        self._total = path.stat().st_size
        self._done = 0
        self._progress = progress
        self.name = path.name
        if progress is not None:
            progress(0, self._total)

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        if not chunk:
            # The multipart encoder reads to the end and never closes what it was given.
            self._file.close()
            return chunk
        self._done += len(chunk)
        if self._progress is not None:
            self._progress(self._done, self._total)
        return chunk

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
    """A temporary file beside the target that hashes what it is given."""

    def __init__(self, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        self.file = os.fdopen(fd, "wb")
        self.tmp = Path(name)
        self.target = target
        self.digest = hashlib.sha256()
        self.done = 0

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.digest.update(chunk)
        self.done += len(chunk)

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


def _total(response: httpx.Response) -> int | None:
    length = response.headers.get("content-length")
    return int(length) if length and length.isdigit() else None


def save(
    response: httpx.Response, target: Path, expected: str | None, progress: Progress | None
) -> Path:
    """Write a streamed response to ``target`` (atomically; digest-checked when announced)."""
    total = _total(response)
    sink = _Sink(target)
    try:
        if progress is not None:
            progress(0, total)
        for chunk in response.iter_bytes(CHUNK):
            sink.write(chunk)
            if progress is not None:
                progress(sink.done, total)
    except BaseException:
        sink.abort()
        raise
    return sink.commit(expected)


async def asave(
    response: httpx.Response, target: Path, expected: str | None, progress: Progress | None
) -> Path:
    """:func:`save` for an async client."""
    total = _total(response)
    sink = _Sink(target)
    try:
        if progress is not None:
            progress(0, total)
        async for chunk in response.aiter_bytes(CHUNK):
            await asyncio.to_thread(sink.write, chunk)
            if progress is not None:
                progress(sink.done, total)
    except BaseException:
        sink.abort()
        raise
    return sink.commit(expected)


def json_or_path(value: Any) -> Any:
    """A JSON document given as a mapping, or read from a path."""
    import json

    if isinstance(value, (str, os.PathLike)):
        return json.loads(Path(value).read_text(encoding="utf-8"))
    return value
