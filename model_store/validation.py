"""Publish-time validation: the artifact loads and honours its declared signature.

Validation loads the artifact and runs it, so for formats that run their publisher's code it
happens in a sandbox worker (:mod:`model_store.sandbox`), unless the caller passes a loader of
its own (the platform's built-in models are loaded in process).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from model_store.datatypes import BYTES, from_numpy_dtype, to_numpy_dtype
from model_store.errors import InvalidArtifactError, ModelUnavailableError
from model_store.formats import LoadedModel, Loader, OutputMismatchError
from model_store.manifest import ModelManifest, TensorSpec
from model_store.sandbox import ModelCodeError, SandboxConfig, isolated_loader

__all__ = ["dummy_inputs", "validate_model"]

logger = logging.getLogger(__name__)

_DUMMY_BATCH = 2
_DUMMY_DIM = 8


def dummy_inputs(manifest: ModelManifest) -> dict[str, np.ndarray[Any, Any]]:
    """Build zero-filled inputs that fit the manifest's signature.

    Variable dimensions become small sizes (the batch dimension 2 when batching, capped by
    ``max_batch_size``; others 8); ``BYTES`` elements are ``b""``.

    Args:
        manifest: The manifest.

    Returns:
        One array per declared input.
    """
    batch = min(_DUMMY_BATCH, manifest.batching.max_batch_size) if manifest.batched else None
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for spec in manifest.inputs:
        shape = _concrete_shape(spec, batch)
        if spec.datatype == BYTES:
            array = np.empty(shape, dtype=np.object_)
            array.fill(b"")
        else:
            array = np.zeros(shape, dtype=to_numpy_dtype(spec.datatype))
        arrays[spec.name] = array
    return arrays


def _concrete_shape(spec: TensorSpec, batch: int | None) -> tuple[int, ...]:
    dims = [_DUMMY_DIM if d == -1 else d for d in spec.shape]
    if batch is not None:
        dims[0] = batch
    return tuple(dims)


def _describe(error: Exception) -> str:
    if isinstance(error, ModelCodeError):  # raised by the model's code in its worker
        return str(error)
    if isinstance(error, ModelUnavailableError):  # its worker died or hung
        return error.message
    return f"{type(error).__name__}: {error}"


def validate_model(
    manifest: ModelManifest,
    artifact_path: Path,
    *,
    loader: Loader | None = None,
    sandbox: SandboxConfig | None = None,
) -> None:
    """Load an artifact, run it once on dummy inputs and check the outputs.

    Checks that the outputs have exactly the declared names, datatypes and ranks, that fixed
    dimensions match, and (for batched models) that outputs have one row per input row.

    Args:
        manifest: The artifact's manifest.
        artifact_path: A local file holding the artifact.
        loader: How to load it. Default: tenant code (``python``) in a sandbox worker with
            ``sandbox``'s limits, other formats in process.
        sandbox: The sandbox's limits (default :class:`~model_store.sandbox.SandboxConfig`).

    Raises:
        InvalidArtifactError: ``"unloadable: …"`` when loading or running fails,
            ``"signature mismatch: …"`` when the outputs do not fit the manifest.
    """
    load = loader or isolated_loader(sandbox)
    try:
        model: LoadedModel = load(manifest, Path(artifact_path))
    except Exception as e:
        logger.info("artifact %s failed to load", artifact_path, exc_info=True)
        raise InvalidArtifactError(f"unloadable: {_describe(e)}") from e
    try:
        inputs = dummy_inputs(manifest)
        try:
            outputs = model.predict(inputs)
        except OutputMismatchError as e:
            raise InvalidArtifactError(f"signature mismatch: {e}") from e
        except Exception as e:
            logger.info("artifact %s failed on a dummy input", artifact_path, exc_info=True)
            raise InvalidArtifactError(
                f"unloadable: predict failed on a dummy input: {_describe(e)}"
            ) from e
        batch = next(iter(inputs.values())).shape[0] if manifest.batched else None
        _check_outputs(manifest, outputs, batch)
    finally:
        try:
            model.close()
        except Exception:
            logger.warning("closing artifact %s failed", artifact_path, exc_info=True)


def _check_outputs(manifest: ModelManifest, outputs: object, batch: int | None) -> None:
    if not isinstance(outputs, dict):
        raise InvalidArtifactError(
            f"signature mismatch: predict returned {type(outputs).__name__}, not a dict"
        )
    declared = {spec.name for spec in manifest.outputs}
    for name in outputs:
        if name not in declared:
            raise InvalidArtifactError(
                f"signature mismatch: output '{name}' is not declared (declared: "
                f"{sorted(declared)})"
            )
    for spec in manifest.outputs:
        if spec.name not in outputs:
            raise InvalidArtifactError(f"signature mismatch: output '{spec.name}' is missing")
        array = np.asarray(outputs[spec.name])
        try:
            datatype = from_numpy_dtype(array.dtype)
        except ValueError:
            datatype = str(array.dtype)
        if datatype != spec.datatype:
            raise InvalidArtifactError(
                f"signature mismatch: output '{spec.name}' is {datatype}, declared {spec.datatype}"
            )
        if array.ndim != len(spec.shape):
            raise InvalidArtifactError(
                f"signature mismatch: output '{spec.name}' has shape {list(array.shape)}, "
                f"declared {spec.shape}"
            )
        for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
            if want != -1 and want != got:
                raise InvalidArtifactError(
                    f"signature mismatch: output '{spec.name}' dimension {axis} is {got}, "
                    f"declared {want}"
                )
        if batch is not None and array.shape[0] != batch:
            raise InvalidArtifactError(
                f"signature mismatch: output '{spec.name}' has {array.shape[0]} rows for a "
                f"batch of {batch}"
            )
