"""Content-addressed blob store for model artifacts, over any fsspec filesystem.

Blobs live at ``<root>/sha256/<first two hex digits>/<remaining hex digits>``. Uploads stream
into a temporary object under ``<root>/tmp/`` while being hashed, and are published with an
atomic rename (``os.replace`` on a local disk). A rejected upload (too large, digest mismatch)
leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, overload

import fsspec
from fsspec.implementations.local import LocalFileSystem

from model_store.errors import ArtifactNotFoundError, ArtifactTooLargeError, InvalidArtifactError

__all__ = ["BlobInfo", "BlobStore", "normalize_digest"]

logger = logging.getLogger(__name__)

_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A stored blob.

    Attributes:
        digest: ``"sha256:<64 hex digits>"``.
        size: Size in bytes.
    """

    digest: str
    size: int


def normalize_digest(digest: str) -> str:
    """Return a digest in the canonical ``"sha256:<hex>"`` form.

    Args:
        digest: ``"sha256:<hex>"`` or a bare 64-digit hex string (any case).

    Returns:
        The canonical digest.

    Raises:
        InvalidArtifactError: If the string is not a sha256 digest.
    """
    value = digest.strip().lower()
    hexpart = value.removeprefix("sha256:")
    if not _HEX_RE.match(hexpart):
        raise InvalidArtifactError(f"malformed digest {digest!r}: expected 'sha256:<64 hex>'")
    return f"sha256:{hexpart}"


class _Writer:
    """Streams one upload into a temporary object, hashing and counting as it goes."""

    def __init__(self, store: BlobStore, max_bytes: int | None) -> None:
        self._store = store
        self._max_bytes = max_bytes
        self._hash = hashlib.sha256()
        self._size = 0
        self._tmp = store._join("tmp", uuid.uuid4().hex)
        store._fs.makedirs(store._join("tmp"), exist_ok=True)
        self._file: IO[bytes] = store._fs.open(self._tmp, "wb")

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._size += len(chunk)
        if self._max_bytes is not None and self._size > self._max_bytes:
            raise ArtifactTooLargeError(
                f"artifact is larger than the limit of {self._max_bytes} bytes"
            )
        self._hash.update(chunk)
        self._file.write(chunk)

    def commit(self, expected_digest: str | None) -> BlobInfo:
        self._file.close()
        digest = f"sha256:{self._hash.hexdigest()}"
        if expected_digest is not None and normalize_digest(expected_digest) != digest:
            raise InvalidArtifactError(
                f"digest mismatch: expected {normalize_digest(expected_digest)}, got {digest}"
            )
        self._store._publish(self._tmp, digest)
        return BlobInfo(digest=digest, size=self._size)

    def abort(self) -> None:
        try:
            self._file.close()
        finally:
            self._store._remove_quietly(self._tmp)


class BlobStore:
    """A content-addressed store of immutable blobs (model artifacts).

    Args:
        url: A local directory path (the default kind) or any fsspec URL such as
            ``"s3://bucket/artifacts"`` or ``"memory://artifacts"``.
        cache_dir: Where :meth:`local_path` materialises blobs of non-local filesystems;
            defaults to a ``citybrain-blob-cache`` folder in the system temp directory.

    Example:
        >>> store = BlobStore("/var/lib/citybrain/artifacts")  # doctest: +SKIP
        >>> info = store.put_stream([b"abc"], max_bytes=1024)  # doctest: +SKIP
        >>> info.digest  # doctest: +SKIP
        'sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
    """

    def __init__(
        self, url: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None
    ) -> None:
        fs, root = fsspec.core.url_to_fs(os.fspath(url))
        self._fs: fsspec.AbstractFileSystem = fs
        self._root: str = str(root).rstrip("/")
        self._local = isinstance(fs, LocalFileSystem)
        if self._local:
            os.makedirs(self._root, exist_ok=True)
        self._cache_dir = Path(
            cache_dir
            if cache_dir is not None
            else Path(tempfile.gettempdir()) / "citybrain-blob-cache"
        )

    @property
    def is_local(self) -> bool:
        """Whether blobs are on the local filesystem (then :meth:`local_path` copies nothing)."""
        return self._local

    # ----------------------------------------------------------------- writing

    @overload
    def put_stream(
        self, chunks: Iterable[bytes], *, max_bytes: int | None, expected_digest: str | None = None
    ) -> BlobInfo: ...

    @overload
    def put_stream(
        self,
        chunks: AsyncIterable[bytes],
        *,
        max_bytes: int | None,
        expected_digest: str | None = None,
    ) -> Coroutine[Any, Any, BlobInfo]: ...

    def put_stream(
        self,
        chunks: Iterable[bytes] | AsyncIterable[bytes],
        *,
        max_bytes: int | None,
        expected_digest: str | None = None,
    ) -> BlobInfo | Coroutine[Any, Any, BlobInfo]:
        """Store a stream of bytes, hashing it on the way; publish it only if it is acceptable.

        Given a plain iterable this runs synchronously; given an async iterable (e.g. an HTTP
        request body stream) it returns a coroutine to await, and file writes happen in a
        worker thread so the event loop never blocks on disk.

        Args:
            chunks: The content, in chunks of any size.
            max_bytes: Reject the upload once it grows past this many bytes (None: no limit).
            expected_digest: If given, reject the upload unless its sha256 matches.

        Returns:
            The stored blob's digest and size (or a coroutine returning them).

        Raises:
            ArtifactTooLargeError: The stream is longer than ``max_bytes``.
            InvalidArtifactError: The content does not match ``expected_digest`` (or that
                digest is malformed).

        In both error cases no temporary object and no blob is left behind. Storing the same
        bytes twice yields the same digest and a single blob.
        """
        if expected_digest is not None:
            normalize_digest(expected_digest)
        if isinstance(chunks, AsyncIterable):
            return self._put_async(chunks, max_bytes, expected_digest)
        writer = _Writer(self, max_bytes)
        try:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit(expected_digest)
        except BaseException:
            writer.abort()
            raise

    async def _put_async(
        self, chunks: AsyncIterable[bytes], max_bytes: int | None, expected_digest: str | None
    ) -> BlobInfo:
        writer = await asyncio.to_thread(_Writer, self, max_bytes)
        try:
            async for chunk in chunks:
                await asyncio.to_thread(writer.write, chunk)
            return await asyncio.to_thread(writer.commit, expected_digest)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(writer.abort))
            raise

    def put_file(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int | None = None,
        expected_digest: str | None = None,
    ) -> BlobInfo:
        """Store a local file.

        Args:
            path: The file to store (it is read, not moved).
            max_bytes: Reject files larger than this (None: no limit).
            expected_digest: If given, reject the file unless its sha256 matches.

        Returns:
            The stored blob's digest and size.

        Raises:
            ArtifactTooLargeError: The file is larger than ``max_bytes``.
            InvalidArtifactError: The content does not match ``expected_digest``.
        """

        def read() -> Iterable[bytes]:
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    yield chunk

        return self.put_stream(read(), max_bytes=max_bytes, expected_digest=expected_digest)

    def put_bytes(self, data: bytes, *, expected_digest: str | None = None) -> BlobInfo:
        """Store an in-memory byte string.

        Args:
            data: The content.
            expected_digest: If given, reject the content unless its sha256 matches.

        Returns:
            The stored blob's digest and size.
        """
        return self.put_stream([data], max_bytes=None, expected_digest=expected_digest)

    # ----------------------------------------------------------------- reading

    def exists(self, digest: str) -> bool:
        """Tell whether a blob is stored.

        Args:
            digest: ``"sha256:<hex>"`` (or bare hex).

        Returns:
            True if the blob is present.
        """
        return bool(self._fs.exists(self._blob_path(normalize_digest(digest))))

    def info(self, digest: str) -> BlobInfo:
        """Return a stored blob's canonical digest and size.

        Args:
            digest: ``"sha256:<hex>"`` (or bare hex).

        Returns:
            The blob's info.

        Raises:
            ArtifactNotFoundError: No such blob.
        """
        canonical = normalize_digest(digest)
        try:
            size = int(self._fs.size(self._blob_path(canonical)))
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no artifact {canonical}") from None
        return BlobInfo(digest=canonical, size=size)

    def open(self, digest: str) -> IO[bytes]:
        """Open a stored blob for reading (binary). Close it when done.

        Args:
            digest: ``"sha256:<hex>"`` (or bare hex).

        Returns:
            A readable binary file object.

        Raises:
            ArtifactNotFoundError: No such blob.
        """
        canonical = normalize_digest(digest)
        try:
            f: IO[bytes] = self._fs.open(self._blob_path(canonical), "rb")
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no artifact {canonical}") from None
        return f

    def local_path(self, digest: str) -> Path:
        """Return a local file holding the blob, downloading it into the cache if needed.

        For a local store this is the blob itself (do not modify it). For a remote store the
        blob is copied once into ``cache_dir`` (atomically, verified against its digest).

        Args:
            digest: ``"sha256:<hex>"`` (or bare hex).

        Returns:
            The path of a local, read-only copy.

        Raises:
            ArtifactNotFoundError: No such blob.
            InvalidArtifactError: The remote bytes do not match the digest.
        """
        canonical = normalize_digest(digest)
        if self._local:
            path = Path(self._blob_path(canonical))
            if not path.is_file():
                raise ArtifactNotFoundError(f"no artifact {canonical}")
            return path
        hexpart = canonical.removeprefix("sha256:")
        target = self._cache_dir / "sha256" / hexpart[:2] / hexpart[2:]
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".download-")
        try:
            hasher = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, self.open(canonical) as src:
                while chunk := src.read(_CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
            if f"sha256:{hasher.hexdigest()}" != canonical:
                raise InvalidArtifactError(f"digest mismatch: stored blob {canonical} is corrupt")
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return target

    def delete(self, digest: str) -> bool:
        """Delete a blob (and its local cache copy).

        Args:
            digest: ``"sha256:<hex>"`` (or bare hex).

        Returns:
            True if a blob was deleted, False if there was none.
        """
        canonical = normalize_digest(digest)
        hexpart = canonical.removeprefix("sha256:")
        (self._cache_dir / "sha256" / hexpart[:2] / hexpart[2:]).unlink(missing_ok=True)
        path = self._blob_path(canonical)
        try:
            self._fs.rm(path)
        except FileNotFoundError:
            return False
        return True

    def list_digests(self) -> list[str]:
        """Return the digests of all stored blobs, sorted.

        Returns:
            Canonical digests.
        """
        base = self._join("sha256")
        if not self._fs.exists(base):
            return []
        found: list[str] = []
        for path in self._fs.find(base):
            parts = str(path).rstrip("/").split("/")
            candidate = parts[-2] + parts[-1]
            if _HEX_RE.match(candidate):
                found.append(f"sha256:{candidate}")
        return sorted(found)

    # --------------------------------------------------------------- internals

    def _join(self, *parts: str) -> str:
        return "/".join((self._root, *parts)) if self._root else "/".join(parts)

    def _blob_path(self, canonical: str) -> str:
        hexpart = canonical.removeprefix("sha256:")
        return self._join("sha256", hexpart[:2], hexpart[2:])

    def _publish(self, tmp: str, digest: str) -> None:
        final = self._blob_path(digest)
        if self._fs.exists(final):
            # Same bytes already stored: content addressing makes this upload a no-op.
            self._remove_quietly(tmp)
            return
        parent = final.rsplit("/", 1)[0]
        self._fs.makedirs(parent, exist_ok=True)
        if self._local:
            os.replace(tmp, final)
        else:
            self._fs.mv(tmp, final)

    def _remove_quietly(self, path: str) -> None:
        try:
            if self._local:
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    Path(path).unlink(missing_ok=True)
            elif self._fs.exists(path):
                self._fs.rm(path)
        except OSError:
            logger.warning("could not remove temporary blob %s", path, exc_info=True)
