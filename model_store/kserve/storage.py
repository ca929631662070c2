"""What lies at an InferenceService's ``storageUri``: written by the platform, read by predictors.

The platform exports a model version there before it applies the InferenceService; KServe's
storage initializer copies it into the predictor pod's ``/mnt/models``. Two layouts, one per
predictor (:func:`~model_store.kserve.render.uses_triton` decides):

* **Triton** (``kserve-tritonserver``): a Triton model repository holding the one model that
  :func:`~model_store.triton.repository.export_model` writes;
* **the platform's predictor** (:mod:`model_store.kserve.predictor`): a *bundle*::

      <uri>/artifact.pt | artifact.zip   the artifact, as the blob store holds it
      <uri>/manifest.json                its ModelManifest
      <uri>/export.json                  {"key", "artifact", "sha256", "size"}, written last

  ``export.json`` is the commit mark: a predictor refuses a folder without it, and checks the
  artifact against its digest, so a half-written or stale export never serves. An export whose
  ``export.json`` already names the same key and digest is not written again.

Any fsspec URL works (``s3://`` through s3fs, with the usual ``AWS_*`` variables, including
``AWS_ENDPOINT_URL`` for an S3-compatible store), as does a local folder. ``pvc://`` and other
URLs that only KServe understands cannot be written from here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import fsspec
from fsspec.implementations.local import LocalFileSystem

from model_store.errors import InvalidArtifactError, ModelUnavailableError
from model_store.manifest import ARTIFACT_FILES, ModelManifest
from model_store.triton.repository import export_model

__all__ = [
    "EXPORT_FILE",
    "MANIFEST_FILE",
    "Bundle",
    "ExportError",
    "export_version",
    "fetch_bundle",
    "locate_bundle",
    "read_bundle",
]

logger = logging.getLogger(__name__)

EXPORT_FILE: Final = "export.json"
MANIFEST_FILE: Final = "manifest.json"
_CHUNK: Final = 1 << 20


class ExportError(ModelUnavailableError):
    """503 "ModelUnavailable": a model version could not be written to its storage URI."""


@dataclass(frozen=True, slots=True)
class Bundle:
    """A model version as the platform's predictor serves it, checked and on local disk.

    Attributes:
        key: The runtime key it was exported under.
        manifest: Its manifest.
        artifact_path: The artifact file.
    """

    key: str
    manifest: ModelManifest
    artifact_path: Path


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _open(uri: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    try:
        fs, root = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
    except (ValueError, ImportError) as e:  # an unknown protocol, e.g. pvc://
        logger.warning("cannot export to %s: %s", uri, e)
        scheme = uri.partition("://")[0]
        raise ExportError(f"the platform cannot write {scheme}:// model storage") from e
    return fs, str(root).rstrip("/")


def export_version(
    uri: str,
    key: str,
    manifest: ModelManifest,
    artifact_path: Path,
    *,
    triton: bool,
    storage_options: Mapping[str, Any] | None = None,
) -> bool:
    """Write a model version to a storage URI in the layout its predictor reads.

    Args:
        uri: The InferenceService's ``storageUri`` (any fsspec URL or a local folder).
        key: The runtime key, e.g. ``"traffic-police.flow-smoother:1"``.
        manifest: The artifact's manifest.
        artifact_path: A local file holding the artifact.
        triton: Write a Triton model repository rather than a bundle.
        storage_options: Extra fsspec options (default: the environment's).

    Returns:
        True if it was written, False if the same bundle was already there.

    Raises:
        ExportError: The URI cannot be written (unknown protocol, refused, unreachable).
    """
    fs, root = _open(uri, storage_options)
    try:
        if triton:
            _export_triton(fs, root, key, manifest, artifact_path)
            return True
        return _export_bundle(fs, root, key, manifest, artifact_path)
    except Exception as e:  # the edge of a remote store: any failure means "not exported"
        # The store's own words (URLs, bucket names) go to the log, not to API callers.
        logger.warning("could not export model %s to %s: %s", key, uri, e)
        raise ExportError(
            f"model '{key}' could not be exported for serving; retry shortly",
            headers={"Retry-After": "1"},
        ) from e


def _export_bundle(
    fs: Any, root: str, key: str, manifest: ModelManifest, artifact_path: Path
) -> bool:
    artifact = Path(artifact_path)
    name = ARTIFACT_FILES[manifest.format]
    mark = {
        "key": key,
        "artifact": name,
        "sha256": _sha256(artifact),
        "size": artifact.stat().st_size,
    }
    if fs.exists(f"{root}/{EXPORT_FILE}"):
        try:
            current = json.loads(fs.cat_file(f"{root}/{EXPORT_FILE}"))
        except ValueError:
            current = None
        if current == mark and fs.exists(f"{root}/{name}"):
            return False
        fs.rm_file(f"{root}/{EXPORT_FILE}")  # the old mark must not vouch for new files
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(root, exist_ok=True)
    fs.put_file(str(artifact), f"{root}/{name}")
    fs.pipe_file(f"{root}/{MANIFEST_FILE}", manifest.model_dump_json().encode())
    fs.pipe_file(f"{root}/{EXPORT_FILE}", json.dumps(mark).encode())
    return True


def _export_triton(
    fs: Any, root: str, key: str, manifest: ModelManifest, artifact_path: Path
) -> None:
    with tempfile.TemporaryDirectory(prefix="citybrain-triton-export-") as tmp:
        # The serving image has model_store installed: this host's paths mean nothing there.
        exported = export_model(Path(tmp), key, manifest, artifact_path, python_paths=[])
        files = sorted(p for p in exported.directory.rglob("*") if p.is_file())
        # config.pbtxt last: a repository poller never sees a model without its files.
        files.sort(key=lambda p: p.name == "config.pbtxt")
        if isinstance(fs, LocalFileSystem):
            fs.makedirs(root, exist_ok=True)
        for path in files:
            target = f"{root}/{path.relative_to(tmp).as_posix()}"
            if isinstance(fs, LocalFileSystem):
                fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(path), target)


def _read_mark(
    read: Callable[[], str | bytes], where: str, mark_at: str, fields: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Parse an export's mark (``where``: its folder or URI; ``mark_at``: the mark's own).

    Returns:
        The mark and its ``fields`` as strings; ``artifact`` is checked to be a plain file name.

    Raises:
        InvalidArtifactError: No mark, a malformed one, or an unsafe artifact name.
    """
    try:
        mark = json.loads(read())
        values = {field: str(mark[field]) for field in fields}
    except FileNotFoundError:
        raise InvalidArtifactError(f"{where} holds no {EXPORT_FILE}: not a model export") from None
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidArtifactError(f"{mark_at} is malformed: {e}") from None
    name = values.get("artifact", "")
    if "/" in name or name.startswith("."):
        raise InvalidArtifactError(f"{mark_at} names an unsafe artifact {name!r}")
    return mark, values


def read_bundle(folder: Path) -> Bundle:
    """Read and check a bundle on local disk (``/mnt/models`` or a fetched copy).

    Args:
        folder: The folder holding ``export.json``, ``manifest.json`` and the artifact.

    Returns:
        The checked bundle.

    Raises:
        InvalidArtifactError: ``export.json`` is missing or malformed, or the artifact is
            missing or does not match its digest (a half-written or tampered export).
    """
    folder = Path(folder)
    mark_path = folder / EXPORT_FILE
    _, fields = _read_mark(
        lambda: mark_path.read_text(encoding="utf-8"),
        str(folder),
        str(mark_path),
        ("key", "artifact", "sha256"),
    )
    key, name, digest = fields["key"], fields["artifact"], fields["sha256"]
    artifact = folder / name
    if not artifact.is_file() or _sha256(artifact) != digest:
        raise InvalidArtifactError(f"{artifact} is missing or does not match its sha256")
    try:
        manifest = ModelManifest.model_validate_json(
            (folder / MANIFEST_FILE).read_text(encoding="utf-8")
        )
    except (OSError, ValueError) as e:
        raise InvalidArtifactError(f"{folder / MANIFEST_FILE} is unreadable: {e}") from None
    return Bundle(key=key, manifest=manifest, artifact_path=artifact)


def fetch_bundle(
    uri: str, dest: Path, *, storage_options: Mapping[str, Any] | None = None
) -> Bundle:
    """Copy a bundle from a storage URI to local disk and check it.

    What KServe's storage initializer does for a pod, for a predictor that runs without one.

    Args:
        uri: Where the bundle lies (any fsspec URL or a local folder).
        dest: An empty local folder to copy it into.
        storage_options: Extra fsspec options (default: the environment's).

    Returns:
        The checked bundle, under ``dest``.

    Raises:
        InvalidArtifactError: No export there, or a copy that does not match its digest.
        OSError: The store could not be read.
    """
    fs, root = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
    root = str(root).rstrip("/")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    mark, fields = _read_mark(
        lambda: fs.cat_file(f"{root}/{EXPORT_FILE}"), uri, f"{uri}/{EXPORT_FILE}", ("artifact",)
    )
    name = fields["artifact"]
    # The mark first, then the files it vouches for: read_bundle checks them against it.
    (dest / EXPORT_FILE).write_text(json.dumps(mark), encoding="utf-8")
    for filename in (MANIFEST_FILE, name):
        staging = dest / f".{filename}.part"
        fs.get_file(f"{root}/{filename}", str(staging))
        os.replace(staging, dest / filename)
    return read_bundle(dest)


def locate_bundle(
    model_dir: str,
    storage_uri: str | None,
    scratch: Path,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> Bundle:
    """Find the bundle a predictor serves: in ``model_dir``, or else at ``storage_uri``.

    In a cluster KServe's storage initializer has copied ``STORAGE_URI`` into ``model_dir``
    (``/mnt/models``). Without one (a local run, or a pod without the initializer) the
    predictor reads the store itself.

    Args:
        model_dir: A local folder, or a URL to read from when ``storage_uri`` is unset.
        storage_uri: The ``STORAGE_URI`` of the container, if set (a URL or a local folder).
        scratch: An empty local folder for a copy read from a store.
        storage_options: Extra fsspec options (default: the environment's).

    Returns:
        The checked bundle.

    Raises:
        InvalidArtifactError: Neither place holds a complete, matching export.
        OSError: The store could not be read.
    """
    if "://" not in model_dir and (Path(model_dir) / EXPORT_FILE).is_file():
        return read_bundle(Path(model_dir))
    source = storage_uri or (model_dir if "://" in model_dir else None)
    if not source:
        raise InvalidArtifactError(f"{model_dir} holds no model export and STORAGE_URI is not set")
    if "://" not in source and (Path(source) / EXPORT_FILE).is_file():
        return read_bundle(Path(source))
    return fetch_bundle(source, scratch, storage_options=storage_options)
