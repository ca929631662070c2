"""The ``python`` format: a zip of a module or package holding a model class.

The manifest's ``entrypoint`` is ``"module:Class"`` (``module`` may be dotted, e.g.
``"pkg.model:Smoother"``). The zip is extracted once into a cache directory keyed by its
sha256, and the module is imported under a unique name (``_citybrain_model_<digest>_<name>``),
so two models shipping a module called ``model`` do not clash in ``sys.modules``. Imports
between modules of the artifact must therefore be relative (``from . import util``).

The class is instantiated without arguments; its ``load()`` is called if it has one; then
``predict(dict[str, np.ndarray]) -> dict[str, np.ndarray]`` serves requests and ``close()``
(if present) is called on unload.

Security note: this runs the publisher's code in the calling process. The platform calls it
only inside a sandbox worker (:mod:`model_store.sandbox`) or, for a government tenant's model
the operator has trusted, in process; upload validation always uses a worker.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import tempfile
import threading
import zipfile
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import numpy as np

from model_store.formats.base import Arrays
from model_store.manifest import ModelManifest

__all__ = ["PythonModel", "default_cache_dir", "load_python"]

_IMPORT_LOCK = threading.Lock()


def default_cache_dir() -> Path:
    """Return where python-format artifacts are extracted unless told otherwise.

    Returns:
        ``$CITYBRAIN_MODEL_CACHE`` if set, else ``citybrain-python-models`` in the temp dir.
    """
    env = os.environ.get("CITYBRAIN_MODEL_CACHE")
    return Path(env) if env else Path(tempfile.gettempdir()) / "citybrain-python-models"


class PythonModel:
    """Adapter from a publisher's class to :class:`~model_store.formats.base.LoadedModel`.

    Args:
        instance: The publisher's model object (has ``predict``).
        output_names: The declared outputs, used to check what ``predict`` returns.
    """

    def __init__(self, instance: Any, output_names: list[str]) -> None:
        self._instance = instance
        self._outputs = output_names

    def predict(self, inputs: Arrays) -> Arrays:
        """Call the publisher's ``predict`` and coerce its values to numpy arrays.

        Args:
            inputs: Every declared input, by name (arrays may be read-only).

        Returns:
            The outputs, by name.

        Raises:
            TypeError: If ``predict`` does not return a dict.
        """
        result = self._instance.predict(inputs)
        if not isinstance(result, dict):
            raise TypeError(f"predict returned {type(result).__name__}, not a dict")
        return {str(name): np.asarray(value) for name, value in result.items()}

    def close(self) -> None:
        """Call the publisher's ``close()`` if it has one."""
        close = getattr(self._instance, "close", None)
        if callable(close):
            close()


def _file_digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def _extract(artifact_path: Path, cache_dir: Path) -> tuple[Path, str]:
    digest = _file_digest(artifact_path)
    target = cache_dir / digest
    if target.is_dir():
        return target, digest
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{digest[:12]}-"))
    try:
        with zipfile.ZipFile(artifact_path) as archive:
            for member in archive.namelist():
                parts = PurePosixPath(member).parts
                if member.startswith(("/", "\\")) or ".." in parts or ":" in member:
                    raise ValueError(f"zip member {member!r} escapes the archive")
            archive.extractall(staging)
        try:
            os.replace(staging, target)
        except OSError:
            # Another loader published the same digest first; use theirs.
            if not target.is_dir():
                raise
    finally:
        if staging.exists():
            _rmtree(staging)
    return target, digest


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _import(root: Path, module_path: str, digest: str) -> ModuleType:
    top, _, rest = module_path.partition(".")
    unique = f"_citybrain_model_{digest[:16]}_{top}"
    with _IMPORT_LOCK:
        module = sys.modules.get(unique)
        if module is None:
            package_dir = root / top
            if (package_dir / "__init__.py").is_file():
                spec = importlib.util.spec_from_file_location(
                    unique,
                    package_dir / "__init__.py",
                    submodule_search_locations=[str(package_dir)],
                )
            elif (root / f"{top}.py").is_file():
                spec = importlib.util.spec_from_file_location(unique, root / f"{top}.py")
            else:
                raise ModuleNotFoundError(f"module {top!r} is not in the artifact")
            if spec is None or spec.loader is None:
                raise ModuleNotFoundError(f"cannot import {top!r} from the artifact")
            module = importlib.util.module_from_spec(spec)
            sys.modules[unique] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[unique]
                raise
        if rest:
            module = importlib.import_module(f"{unique}.{rest}")
    return module


def load_python(
    manifest: ModelManifest, artifact_path: Path, *, cache_dir: Path | None = None
) -> PythonModel:
    """Extract, import and instantiate a python-format model.

    Args:
        manifest: The artifact's manifest (format ``python``, with ``entrypoint``).
        artifact_path: The zip file.
        cache_dir: Where to extract (default: :func:`default_cache_dir`).

    Returns:
        The loaded model.

    Raises:
        ValueError: No entrypoint, or an unsafe zip.
        ModuleNotFoundError: The entrypoint's module is not in the zip.
        AttributeError: The class is not in the module.
        TypeError: The class has no ``predict``.
    """
    if not manifest.entrypoint:
        raise ValueError("the python format needs an entrypoint 'module:Class'")
    module_path, _, class_name = manifest.entrypoint.partition(":")
    root, digest = _extract(artifact_path, cache_dir or default_cache_dir())
    module = _import(root, module_path, digest)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise AttributeError(f"entrypoint class {class_name!r} is not in module {module_path!r}")
    instance = cls()
    if not callable(getattr(instance, "predict", None)):
        raise TypeError(f"entrypoint class {class_name!r} has no predict method")
    load = getattr(instance, "load", None)
    if callable(load):
        load()
    return PythonModel(instance, [spec.name for spec in manifest.outputs])
