"""Export model versions to a Triton model repository (Python backend).

Each model version becomes one Triton model named by :func:`triton_model_name`::

    <repository>/<triton name>/config.pbtxt
    <repository>/<triton name>/1/model.py        # model_store/triton/_model.py
    <repository>/<triton name>/1/artifact.pt     # artifact.onnx (onnx), artifact.zip (python)
    <repository>/<triton name>/1/manifest.json

``model.py`` loads the artifact with :func:`model_store.formats.load_model`, the loader the
embedded runtime uses, so both runtimes return the same outputs. The manifest's signature uses
full shapes (batch dimension first when batched); ``config.pbtxt`` declares ``dims`` without
the batch dimension when ``max_batch_size > 0``, as Triton expects.

Example:
    >>> exported = export_model(Path("var/triton/models"), "traffic-police.flow-smoother:1",
    ...                         manifest, artifact)  # doctest: +SKIP
    >>> exported.name
    'traffic-police--flow-smoother--1'
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import site
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import model_store
from model_store.manifest import ARTIFACT_FILES, ModelManifest, TensorSpec

__all__ = [
    "MODEL_VERSION",
    "TRITON_DATATYPES",
    "ExportedModel",
    "default_python_paths",
    "export_model",
    "remove_model",
    "render_config",
    "triton_model_name",
]

MODEL_VERSION: Final = "1"
"""The Triton version folder of every exported model (a platform version is its own model)."""

TRITON_DATATYPES: Final[dict[str, str]] = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
}
"""v2 datatype → Triton model-config ``data_type``."""

_MODEL_TEMPLATE: Final = Path(__file__).with_name("_model.py")
_MANIFEST_FILE: Final = "manifest.json"
_SAFE_RE: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")
_KEY_CHARS_RE: Final = re.compile(r"^[A-Za-z0-9_\-.:]+$")
_MAX_NAME: Final = 120


@dataclass(frozen=True, slots=True)
class ExportedModel:
    """A model version written to a Triton repository.

    Attributes:
        key: The runtime key it was exported from.
        name: The Triton model name (the folder under the repository).
        directory: ``<repository>/<name>``.
    """

    key: str
    name: str
    directory: Path

    @property
    def config_path(self) -> Path:
        """The model's ``config.pbtxt``."""
        return self.directory / "config.pbtxt"


def triton_model_name(key: str) -> str:
    """Map a runtime key to a Triton model name (no dots; letters, digits, ``_`` and ``-``).

    For keys shaped ``<handle>:<version>`` the dots and the colon become ``--``. Any other key
    (no single colon, a dot in the version, ``--`` already in it, characters outside
    ``[A-Za-z0-9_.:-]``), or a name that would be too long, gets a short digest of the key
    appended, so two keys never share a name.

    Args:
        key: A runtime key such as ``"traffic-police.flow-smoother:1"``.

    Returns:
        The Triton model name, e.g. ``"traffic-police--flow-smoother--1"``.

    Example:
        >>> triton_model_name("traffic-police.flow-smoother:1")
        'traffic-police--flow-smoother--1'
    """
    if not key:
        raise ValueError("the model key is empty")
    simple = (
        key.count(":") == 1
        and "." not in key.partition(":")[2]
        and "--" not in key
        and _KEY_CHARS_RE.match(key) is not None
    )
    name = re.sub(r"[.:]", "--", key) if simple else re.sub(r"[^A-Za-z0-9_\-]+", "-", key)
    if not simple or len(name) > _MAX_NAME or not _SAFE_RE.match(name):
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:10]
        name = f"{name.strip('-')[: _MAX_NAME - 13] or 'model'}--h{digest}"
    return name


def default_python_paths() -> list[Path]:
    """Return the folders Triton's Python stub needs to import ``model_store`` and its deps.

    Returns:
        The folder holding the ``model_store`` package, then this interpreter's site-packages.
    """
    root = Path(model_store.__file__).resolve().parent.parent
    paths = [root]
    for entry in site.getsitepackages():
        path = Path(entry)
        if path.is_dir() and path not in paths:
            paths.append(path)
    return paths


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _tensor_block(spec: TensorSpec, batched: bool) -> str:
    dims = spec.shape[1:] if batched else list(spec.shape)
    lines = [
        "  {",
        f"    name: {_quote(spec.name)}",
        f"    data_type: {TRITON_DATATYPES[spec.datatype]}",
    ]
    if dims:
        lines.append(f"    dims: [ {', '.join(str(d) for d in dims)} ]")
    else:
        # Triton needs at least one dimension; a scalar travels as [1] reshaped to [].
        lines.append("    dims: [ 1 ]")
        lines.append("    reshape: { shape: [ ] }")
    lines.append("  }")
    return "\n".join(lines)


def render_config(
    name: str,
    manifest: ModelManifest,
    *,
    artifact_file: str,
    python_paths: Sequence[Path] = (),
    instance_count: int = 1,
    key: str | None = None,
) -> str:
    """Render a Python-backend ``config.pbtxt`` for a manifest.

    Args:
        name: The Triton model name.
        manifest: The model's manifest.
        artifact_file: The artifact's file name inside the version folder.
        python_paths: Folders the stub puts first on ``sys.path`` (``CITYBRAIN_PYTHONPATH``).
        instance_count: CPU instances of the model (1 runs one request batch at a time,
            like the embedded runtime).
        key: The runtime key, recorded as the ``CITYBRAIN_KEY`` parameter.

    Returns:
        The configuration text.
    """
    batching = manifest.batching
    batched = manifest.batched
    parts = [
        f"name: {_quote(name)}",
        'backend: "python"',
        f"max_batch_size: {batching.max_batch_size if batched else 0}",
        "input [\n" + ",\n".join(_tensor_block(s, batched) for s in manifest.inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor_block(s, batched) for s in manifest.outputs) + "\n]",
    ]
    if batched:
        block = [
            "dynamic_batching {",
            f"  max_queue_delay_microseconds: {round(batching.max_queue_delay_ms * 1000)}",
        ]
        if batching.preferred_batch_sizes:
            sizes = ", ".join(str(s) for s in batching.preferred_batch_sizes)
            block.append(f"  preferred_batch_size: [ {sizes} ]")
        block.append(f"  default_queue_policy {{ max_queue_size: {batching.max_queue_size} }}")
        block.append("}")
        parts.append("\n".join(block))
    parts.append(f"instance_group [ {{ count: {instance_count} kind: KIND_CPU }} ]")
    parameters = {
        "CITYBRAIN_ARTIFACT": artifact_file,
        "CITYBRAIN_MANIFEST": _MANIFEST_FILE,
        "CITYBRAIN_PYTHONPATH": os.pathsep.join(str(p) for p in python_paths),
    }
    if key is not None:
        parameters["CITYBRAIN_KEY"] = key
    for param, value in parameters.items():
        parts.append(
            f"parameters {{ key: {_quote(param)} value {{ string_value: {_quote(value)} }} }}"
        )
    return "\n".join(parts) + "\n"


def _place(source: Path, target: Path) -> None:
    # Artifacts are content-addressed and never modified in place: a hard link is a safe copy.
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def export_model(
    repository: Path,
    key: str,
    manifest: ModelManifest,
    artifact_path: Path,
    *,
    python_paths: Sequence[Path] | None = None,
    instance_count: int = 1,
) -> ExportedModel:
    """Write one model version into a Triton model repository, replacing any earlier export.

    The model folder is built under a hidden staging name and then moved into place, so Triton
    never reads a half-written model.

    Args:
        repository: The repository folder (created if needed).
        key: The runtime key, e.g. ``"traffic-police.flow-smoother:1"``.
        manifest: The artifact's manifest.
        artifact_path: A local file holding the artifact.
        python_paths: Folders for the stub's ``sys.path`` (default:
            :func:`default_python_paths`).
        instance_count: CPU instances of the model.

    Returns:
        Where the model was written and its Triton name.

    Raises:
        FileNotFoundError: The artifact does not exist.
    """
    artifact = Path(artifact_path)
    if not artifact.is_file():
        raise FileNotFoundError(f"artifact {artifact} does not exist")
    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    name = triton_model_name(key)
    artifact_file = ARTIFACT_FILES[manifest.format]
    paths = default_python_paths() if python_paths is None else list(python_paths)

    staging = repository / f".staging-{name}-{secrets.token_hex(4)}"
    version_dir = staging / MODEL_VERSION
    try:
        version_dir.mkdir(parents=True)
        (staging / "config.pbtxt").write_text(
            render_config(
                name,
                manifest,
                artifact_file=artifact_file,
                python_paths=paths,
                instance_count=instance_count,
                key=key,
            ),
            encoding="utf-8",
        )
        shutil.copyfile(_MODEL_TEMPLATE, version_dir / "model.py")
        (version_dir / _MANIFEST_FILE).write_text(manifest.model_dump_json(), encoding="utf-8")
        _place(artifact, version_dir / artifact_file)
        target = repository / name
        retired: Path | None = None
        if target.exists():
            retired = repository / f".retired-{name}-{secrets.token_hex(4)}"
            os.replace(target, retired)
        os.replace(staging, target)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return ExportedModel(key=key, name=name, directory=target)


def remove_model(repository: Path, key: str) -> None:
    """Delete a model version's folder from the repository (missing folders are ignored).

    Args:
        repository: The repository folder.
        key: The runtime key the model was exported under.
    """
    target = Path(repository) / triton_model_name(key)
    if target.exists():
        shutil.rmtree(target, ignore_errors=True)
