"""BentoML models (``bentoml models export`` archives, ``.bentomodel``) as platform artifacts.

The archive is read by the real ``bentoml`` package, in a worker process of its own
(``python -m model_store.bentoml_import ARCHIVE WORKDIR``) with a private ``BENTOML_HOME``
under the work folder: bentoml keeps process-wide state (its model store, telemetry), and the
server process should neither import it nor share a store between uploads. Before bentoml
sees the archive, its members are checked (no absolute paths, no ``..``, no links or devices,
bounded total size), since a hostile tar could otherwise write outside the work folder.

The worker writes ``info.json`` (the model's tag, framework module, signatures, metadata,
labels and README) and copies the framework's file to ``WORKDIR/artifact``. The server then
maps that onto a :class:`~model_store.manifest.ModelManifest` with :func:`build_manifest`:

* ``bentoml.torchscript`` → format ``torchscript`` (``saved_model.pt``);
* ``bentoml.onnx`` → format ``onnx`` (``saved_model.onnx``), its signature read from the graph;
* anything else (``bentoml.pytorch``'s pickled modules, ``bentoml.picklable_model``,
  ``bentoml.sklearn``…) is refused with a 422 that names the framework.

TorchScript graphs carry no tensor signature, so their inputs and outputs come from the
BentoML model's metadata (``inputs`` / ``outputs``: lists of ``{name, datatype, shape}``) or
from a partial manifest sent with the upload; the latter wins for every key it has.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from model_store.cards import CardError, ModelCard, parse_readme
from model_store.errors import InvalidArtifactError
from model_store.manifest import ModelManifest

__all__ = ["FRAMEWORKS", "BentoModelInfo", "build_manifest", "read_bentomodel"]

FRAMEWORKS: Final[dict[str, tuple[str, str]]] = {
    "bentoml.torchscript": ("torchscript", "saved_model.pt"),
    "bentoml.onnx": ("onnx", "saved_model.onnx"),
}
"""BentoML framework module → (platform format, the file bentoml saves the model in)."""

_WHY_NOT: Final[dict[str, str]] = {
    "bentoml.pytorch": (
        "it is a pickled torch module, and unpickling runs arbitrary code; save it with "
        "bentoml.torchscript.save_model(torch.jit.script(model)) or export it to ONNX"
    ),
    "bentoml.picklable_model": "unpickling runs arbitrary code; publish it as a python model",
}

_DEFAULT_MAX_BATCH: Final = 16
_INFO_FILE: Final = "info.json"
_ARTIFACT_FILE: Final = "artifact"
_TIMEOUT_S: Final = 120.0
_MAX_EXPANSION: Final = 4


@dataclass(frozen=True, slots=True)
class BentoModelInfo:
    """What the worker read from a ``.bentomodel``.

    Attributes:
        tag: ``name:version``.
        module: The framework module, e.g. ``"bentoml.onnx"``.
        signatures: Method name → ``{"batchable": bool, "batch_dim": …}``.
        metadata: The model's metadata (JSON-safe).
        labels: The model's labels.
        readme: ``README.md`` of the model folder, if it has one.
        artifact: The framework file, copied out of the archive.
    """

    tag: str
    module: str
    signatures: dict[str, Any]
    metadata: dict[str, Any]
    labels: dict[str, str]
    readme: str | None
    artifact: Path


def _check_members(archive: Path, max_bytes: int) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            total = 0
            for member in tar:
                name = member.name
                parts = Path(name).parts
                if name.startswith(("/", "\\")) or ".." in parts:
                    raise InvalidArtifactError(f"unsafe path in the archive: {name!r}")
                if not (member.isfile() or member.isdir()):
                    raise InvalidArtifactError(f"the archive holds a link or device: {name!r}")
                total += member.size
                if total > max_bytes:
                    raise InvalidArtifactError("the archive expands past the upload size limit")
    except tarfile.TarError as e:
        raise InvalidArtifactError(f"not a .bentomodel archive (a tar file): {e}") from None


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _worker(archive: Path, workdir: Path) -> int:
    """Run in the worker process: import the archive with bentoml, write ``info.json``."""
    import bentoml

    model = bentoml.models.import_model(str(archive))
    info = model.info
    module = str(info.module)
    readme_path = Path(model.path) / "README.md"
    readme = readme_path.read_text(encoding="utf-8") if readme_path.is_file() else None
    framework = FRAMEWORKS.get(module)
    if framework is not None:
        shutil.copyfile(model.path_of(framework[1]), workdir / _ARTIFACT_FILE)
    signatures = {
        method: {"batchable": bool(sig.batchable), "batch_dim": _json_safe(sig.batch_dim)}
        for method, sig in info.signatures.items()
    }
    out = {
        "tag": str(model.tag),
        "module": module,
        "signatures": signatures,
        "metadata": _json_safe(dict(info.metadata)),
        "labels": {str(k): str(v) for k, v in dict(info.labels).items()},
        "readme": readme,
    }
    (workdir / _INFO_FILE).write_text(json.dumps(out), encoding="utf-8")
    return 0


def read_bentomodel(
    archive: Path, workdir: Path, *, max_bytes: int, timeout_s: float = _TIMEOUT_S
) -> BentoModelInfo:
    """Read a ``.bentomodel`` with bentoml in a worker process.

    Args:
        archive: The uploaded archive.
        workdir: An empty folder for the worker (its BentoML home and outputs); the caller
            removes it.
        max_bytes: The most the archive may expand to.
        timeout_s: How long the worker may take.

    Returns:
        What the archive holds; ``artifact`` exists only for supported frameworks.

    Raises:
        InvalidArtifactError: Not a readable, safe ``.bentomodel``.
    """
    _check_members(archive, max_bytes * _MAX_EXPANSION)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENTOML_")}
    env.update(BENTOML_HOME=str(workdir / "bentoml"), BENTOML_DO_NOT_TRACK="True")
    env["PYTHONWARNINGS"] = "ignore"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "model_store.bentoml_import", str(archive), str(workdir)],
            env=env,
            cwd=workdir,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InvalidArtifactError("reading the .bentomodel took too long") from None
    info_path = workdir / _INFO_FILE
    if done.returncode != 0 or not info_path.is_file():
        last = (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1]
        raise InvalidArtifactError(f"bentoml could not read the archive: {last[:300]}")
    raw = json.loads(info_path.read_text(encoding="utf-8"))
    return BentoModelInfo(
        tag=raw["tag"],
        module=raw["module"],
        signatures=raw["signatures"],
        metadata=raw["metadata"],
        labels=raw["labels"],
        readme=raw["readme"],
        artifact=workdir / _ARTIFACT_FILE,
    )


def _batchable(info: BentoModelInfo) -> bool:
    for sig in info.signatures.values():
        dim = sig.get("batch_dim")
        dims = dim if isinstance(dim, list) else [dim]
        if sig.get("batchable") and all(d == 0 for d in dims):
            return True
    return False


def _signature(info: BentoModelInfo, fmt: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key in ("inputs", "outputs"):
        if isinstance(info.metadata.get(key), list):
            fields[key] = info.metadata[key]
    if fmt == "onnx" and len(fields) < 2:
        from model_store.formats.onnx import onnx_signature

        try:
            inputs, outputs = onnx_signature(info.artifact.read_bytes())
        except Exception as e:
            raise InvalidArtifactError(f"unloadable: the ONNX graph: {e}") from None
        fields.setdefault("inputs", [s.model_dump() for s in inputs])
        fields.setdefault("outputs", [s.model_dump() for s in outputs])
    return fields


def build_manifest(
    info: BentoModelInfo, overrides: dict[str, Any] | None = None
) -> tuple[ModelManifest, ModelCard]:
    """Map a BentoML model onto a platform manifest and card.

    Signature: ``overrides`` first, then metadata ``inputs``/``outputs``, then (ONNX) the
    graph. A batchable BentoML signature along dimension 0 turns on dynamic batching when
    every tensor's first dimension is variable. Numeric metadata values and the README's
    metrics become ``metrics``; the README's text becomes ``model_card``.

    Args:
        info: What :func:`read_bentomodel` read.
        overrides: Manifest fields sent with the upload (``format`` may not change).

    Returns:
        The manifest and the card.

    Raises:
        InvalidArtifactError: An unsupported framework (named), or no usable signature.
    """
    framework = FRAMEWORKS.get(info.module)
    if framework is None:
        why = _WHY_NOT.get(info.module, f"supported: {', '.join(sorted(FRAMEWORKS))}")
        raise InvalidArtifactError(
            f"unsupported BentoML framework {info.module!r} (model {info.tag}): {why}"
        )
    fmt = framework[0]
    overrides = dict(overrides or {})
    if overrides.get("format", fmt) != fmt:
        raise InvalidArtifactError(f"the archive holds a {fmt} model, not {overrides['format']}")
    try:
        card = parse_readme(info.readme) if info.readme else ModelCard()
    except CardError as e:
        raise InvalidArtifactError(f"README.md: {e}") from None
    fields: dict[str, Any] = {"format": fmt, **_signature(info, fmt)}
    if "inputs" not in fields and "inputs" not in overrides:
        raise InvalidArtifactError(
            f"a {info.module} model carries no tensor signature: save it with metadata "
            '{"inputs": [{"name", "datatype", "shape"}…], "outputs": […]} or send them in '
            "the manifest"
        )
    metrics = {
        k: float(v)
        for k, v in info.metadata.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    fields["metrics"] = {**metrics, **card.metrics}
    fields["model_card"] = card.text
    fields.update(overrides)
    specs = [*fields.get("inputs", []), *fields.get("outputs", [])]
    if (
        "batching" not in overrides
        and _batchable(info)
        and all(isinstance(s, dict) and (s.get("shape") or [None])[0] == -1 for s in specs)
    ):
        fields["batching"] = {"max_batch_size": _DEFAULT_MAX_BATCH}
    try:
        return ModelManifest.model_validate(fields), card
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg')}"
            for err in e.errors()[:10]
        )
        raise InvalidArtifactError(
            f"the BentoML model maps to no valid manifest: {problems}"
        ) from None


if __name__ == "__main__":
    sys.exit(_worker(Path(sys.argv[1]), Path(sys.argv[2])))
