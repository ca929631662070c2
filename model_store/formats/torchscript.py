"""The ``torchscript`` format: a ``torch.jit`` archive run on CPU.

``forward`` receives the inputs as tensors in signature order and returns a tensor, a tuple or
list of tensors (in output signature order) or a dict keyed by output name.

TorchScript is deprecated in recent torch releases (every ``torch.jit`` call warns); this
module silences exactly those deprecation warnings, under a lock, because
``warnings.catch_warnings`` is process-global state.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_store.formats.base import Arrays, OutputMismatchError
from model_store.manifest import ModelManifest

__all__ = ["TorchScriptModel", "configure_torch_threads", "load_torchscript", "save_torchscript"]

_JIT_LOCK = threading.Lock()
_THREADS_LOCK = threading.Lock()
_threads_configured = False


@contextmanager
def _quiet_jit() -> Iterator[None]:
    with _JIT_LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        yield


def configure_torch_threads(num_threads: int | None = None) -> None:
    """Set torch's intra-op thread count once per process.

    The default keeps a share of the cores for the event loop and the request codec:
    ``CITYBRAIN_TORCH_THREADS`` if set, else half the cores (at least 1, at most 8). An
    explicit ``OMP_NUM_THREADS`` is respected. Later calls do nothing.

    Args:
        num_threads: The thread count to use instead of the default.
    """
    global _threads_configured
    with _THREADS_LOCK:
        if _threads_configured:
            return
        _threads_configured = True
        if num_threads is None:
            env = os.environ.get("CITYBRAIN_TORCH_THREADS")
            if env is None and "OMP_NUM_THREADS" in os.environ:
                return
            num_threads = int(env) if env else max(1, min(8, (os.cpu_count() or 2) // 2))
        torch.set_num_threads(num_threads)


def save_torchscript(module: torch.nn.Module, path: str | os.PathLike[str]) -> Path:
    """Script a module with ``torch.jit.script`` and save it as a TorchScript archive.

    Args:
        module: The module; its ``forward`` must be scriptable.
        path: Where to write the archive.

    Returns:
        The path written.
    """
    target = Path(path)
    with _quiet_jit():
        scripted = torch.jit.script(module.eval())
        torch.jit.save(scripted, str(target))
    return target


class TorchScriptModel:
    """A loaded TorchScript module mapped onto a manifest's signature.

    Args:
        module: The loaded ``torch.jit.ScriptModule``.
        manifest: The manifest whose input/output order ``forward`` follows.
    """

    def __init__(self, module: torch.jit.ScriptModule, manifest: ModelManifest) -> None:
        self._module = module
        self._inputs = [spec.name for spec in manifest.inputs]
        self._outputs = [spec.name for spec in manifest.outputs]

    def predict(self, inputs: Arrays) -> Arrays:
        """Run ``forward`` under ``torch.inference_mode`` on CPU.

        Args:
            inputs: Every declared input, by name.

        Returns:
            Every declared output, by name.

        Raises:
            OutputMismatchError: If ``forward`` returns something that does not fit the
                declared outputs.
        """
        tensors = [torch.from_numpy(_writable(inputs[name])) for name in self._inputs]
        with torch.inference_mode():
            result = self._module(*tensors)
        return self._map_outputs(result)

    def _map_outputs(self, result: Any) -> Arrays:
        if isinstance(result, torch.Tensor):
            values: list[Any] = [result]
        elif isinstance(result, tuple | list):
            values = list(result)
        elif isinstance(result, dict):
            missing = [n for n in self._outputs if n not in result]
            if missing:
                raise OutputMismatchError(f"output '{missing[0]}' is missing from forward's dict")
            values = [result[n] for n in self._outputs]
        else:
            raise OutputMismatchError(f"forward returned {type(result).__name__}, not tensors")
        if len(values) != len(self._outputs):
            raise OutputMismatchError(
                f"forward returned {len(values)} tensors for {len(self._outputs)} declared outputs"
            )
        out: Arrays = {}
        for name, value in zip(self._outputs, values, strict=True):
            if not isinstance(value, torch.Tensor):
                raise OutputMismatchError(
                    f"output '{name}' is {type(value).__name__}, not a tensor"
                )
            out[name] = value.detach().cpu().numpy()
        return out

    def close(self) -> None:
        """Drop the module (its memory is freed when the last reference goes)."""
        self._module = None  # type: ignore[assignment]


def _writable(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    # torch.from_numpy warns on read-only arrays (request bodies are read-only views).
    array = np.ascontiguousarray(array)
    return array if array.flags.writeable else array.copy()


def load_torchscript(manifest: ModelManifest, artifact_path: Path) -> TorchScriptModel:
    """Load a TorchScript archive onto the CPU.

    Args:
        manifest: The artifact's manifest (format ``torchscript``).
        artifact_path: The archive.

    Returns:
        The loaded model.
    """
    configure_torch_threads()
    with _quiet_jit():
        module: torch.jit.ScriptModule = torch.jit.load(  # type: ignore[no-untyped-call]
            str(artifact_path), map_location="cpu"
        )
    module.eval()
    return TorchScriptModel(module, manifest)
