"""Model versions from what developers already have: BentoML ``.bentomodel`` archives.

The archive streams to a private temporary folder (bounded by the upload limit), is read by
bentoml in a worker process (:mod:`model_store.bentoml_import`), mapped onto a manifest and a
card, and the framework file inside it then goes through the ordinary upload path
(:func:`~marketplace.gateway.artifacts.upload_model_version`): stored, validated, registered,
all or nothing. The folder is removed whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from marketplace.context import Principal
from marketplace.db import transaction
from marketplace.errors import InvalidInputError
from marketplace.gateway.artifacts import check_model_product, upload_model_version
from marketplace.tables import ProductVersion
from model_store import ArtifactTooLargeError, BlobStore
from model_store.bentoml_import import build_manifest, read_bentomodel
from model_store.sandbox import SandboxConfig

__all__ = ["import_bentomodel", "parse_overrides"]

_CHUNK = 1 << 20


def parse_overrides(text: str | None) -> dict[str, Any]:
    """Manifest fields sent with an import (JSON object), or none."""
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise InvalidInputError(f"the manifest is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise InvalidInputError("the manifest must be a JSON object")
    return raw


async def _spool(chunks: AsyncIterable[bytes], target: Path, max_bytes: int) -> None:
    size = 0
    with target.open("wb") as f:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise ArtifactTooLargeError(f"the archive is over {max_bytes} bytes")
            await asyncio.to_thread(f.write, chunk)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, _CHUNK):
            yield chunk


async def import_bentomodel(
    *,
    factory: sessionmaker[Session],
    blobs: BlobStore,
    caller: Principal,
    handle: str,
    chunks: AsyncIterable[bytes],
    max_bytes: int,
    overrides: dict[str, Any] | None = None,
    notes: str = "",
    sandbox: SandboxConfig | None = None,
) -> ProductVersion:
    """Import a ``.bentomodel`` as a new version of ``handle``; all or nothing.

    Raises:
        NotFoundError, ForbiddenError, ConflictError: Not the caller's model product.
        ArtifactTooLargeError: The archive is over ``max_bytes`` (413).
        InvalidArtifactError: Unreadable archive, unsupported framework (named), no usable
            signature, or the model fails validation (422).
    """

    def check() -> None:
        with transaction(factory) as session:
            check_model_product(session, caller, handle)

    await asyncio.to_thread(check)
    workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="citybrain-bento-"))
    try:
        archive = workdir / "upload.bentomodel"
        await _spool(chunks, archive, max_bytes)
        info = await asyncio.to_thread(read_bentomodel, archive, workdir, max_bytes=max_bytes)
        manifest, card = build_manifest(info, overrides)
        extra = {
            "source": {
                "kind": "bentoml",
                "tag": info.tag,
                "module": info.module,
                "labels": info.labels,
            },
            "card": card.fields,
        }
        return await upload_model_version(
            factory=factory,
            blobs=blobs,
            caller=caller,
            handle=handle,
            manifest=manifest,
            chunks=_file_chunks(info.artifact),
            max_bytes=max_bytes,
            notes=notes,
            sandbox=sandbox,
            extra_meta=extra,
        )
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)
