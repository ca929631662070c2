"""A data version from an upload, all or nothing.

1. the caller must own the dataset (404/403/409 before anything is stored);
2. the format (415) and the schema (422) are checked;
3. the file streams, chunk by chunk, into a staging folder of its own (413 past
   ``DataSettings.max_upload_bytes``);
4. DuckDB converts it into a typed Parquet snapshot and runs the quality rules
   (``marketplace.data.ingest``; 422 naming what does not fit);
5. the snapshot enters the content-addressed blob store (its sha256 is its name: the same
   data uploaded twice is stored once) and the version row is written in one transaction.

Whatever fails, the staging folder is removed, and a snapshot no version references is removed
from the blob store: nothing is left half-written.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import uuid
from collections.abc import AsyncIterable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from marketplace.config import DataSettings
from marketplace.context import Principal
from marketplace.data.ingest import IngestResult, format_of, ingest, version_fields
from marketplace.data.schema import parse_schema
from marketplace.data.service import check_dataset_owner, create_data_version, delete_if_orphan
from marketplace.db import transaction
from marketplace.errors import PayloadTooLargeError
from marketplace.tables import ProductVersion
from model_store import BlobInfo, BlobStore

__all__ = ["check_upload_target", "upload_data_version"]

# One upload at a time stores and records (per process): a failed upload's cleanup can never
# remove the bytes another upload of the same data is about to reference.
_STORE_LOCK = threading.Lock()


def check_upload_target(factory: sessionmaker[Session], caller: Principal, handle: str) -> None:
    """Step 1, in a short transaction of its own."""
    with transaction(factory) as session:
        check_dataset_owner(session, caller, handle)


def _write(path: Path, chunk: bytes, size: int, limit: int) -> None:
    if size > limit:
        raise PayloadTooLargeError(f"the file is over the upload limit of {limit} bytes")
    with path.open("ab") as f:
        f.write(chunk)


def _record(
    factory: sessionmaker[Session],
    caller: Principal,
    handle: str,
    result: IngestResult,
    info: BlobInfo,
    fmt: str,
    filename: str | None,
    notes: str,
) -> ProductVersion:
    data = version_fields(result, info)
    meta = {"format": fmt, "source": (filename or "")[:200], "rows": result.rows}
    with transaction(factory) as session:
        return create_data_version(session, caller, handle, data=data, notes=notes, meta=meta)


def _store(
    factory: sessionmaker[Session],
    blobs: BlobStore,
    caller: Principal,
    handle: str,
    result: IngestResult,
    fmt: str,
    filename: str | None,
    notes: str,
) -> ProductVersion:
    with _STORE_LOCK:
        info = blobs.put_file(result.path)
        try:
            return _record(factory, caller, handle, result, info, fmt, filename, notes)
        except BaseException:
            delete_if_orphan(factory, blobs, info.digest)
            raise


async def upload_data_version(
    *,
    factory: sessionmaker[Session],
    blobs: BlobStore,
    settings: DataSettings,
    caller: Principal,
    handle: str,
    chunks: AsyncIterable[bytes],
    filename: str | None,
    declared_format: str | None,
    schema_text: str | None,
    notes: str = "",
) -> ProductVersion:
    """Store one data version (see the module docstring); all or nothing.

    Raises:
        NotFoundError, ForbiddenError, ConflictError: Not the caller's dataset (or deprecated).
        UnsupportedFormatError: Not CSV, Parquet or JSON Lines (415).
        PayloadTooLargeError: Over the size limit (413).
        InvalidInputError, InvalidDataError: A bad schema, or data that does not fit it (422).
    """
    await asyncio.to_thread(check_upload_target, factory, caller, handle)
    fmt = format_of(filename, declared_format)
    schema = parse_schema(schema_text)
    assert settings.staging_dir is not None
    folder = Path(settings.staging_dir) / uuid.uuid4().hex
    await asyncio.to_thread(folder.mkdir, parents=True)
    try:
        upload = folder / f"upload.{fmt}"
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            await asyncio.to_thread(_write, upload, chunk, size, settings.max_upload_bytes)
        if size == 0:
            upload.touch()
        result = await asyncio.to_thread(
            ingest,
            upload,
            fmt,
            schema,
            now=datetime.now(UTC),
            memory_limit=settings.memory_limit,
            threads=settings.threads,
        )
        return await asyncio.to_thread(
            _store, factory, blobs, caller, handle, result, fmt, filename, notes
        )
    finally:
        await asyncio.shield(asyncio.to_thread(shutil.rmtree, folder, True))
