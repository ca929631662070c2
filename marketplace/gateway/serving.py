"""Step 5 of the request path: decode the call, check it against the signature, run it.

:class:`ServingState` is what the gateway knows about models in the runtimes: which model
versions are registered (on the runtime their manifest names, through
:class:`~model_store.runtimes.registry.Runtimes`) and how many calls to each unbatched model
are in flight (the runtime bounds batched queues itself). :func:`run` is the step itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from marketplace.errors import BadRequestError
from marketplace.gateway.constants import INFERENCE_HEADER_CONTENT_LENGTH
from marketplace.gateway.metrics import GatewayMetrics
from marketplace.gateway.resolve import ResolvedModel
from model_store import BlobStore, QueueFullError, Runtime
from model_store.runtimes.registry import Runtimes
from model_store.v2 import InferRequest, check_inputs, check_requested_outputs, decode_request

__all__ = ["RUNTIME_SETTINGS", "ServingState", "decode", "run"]

Arrays = dict[str, np.ndarray[Any, Any]]

RUNTIME_SETTINGS = {
    "triton": "CITYBRAIN_TRITON__URL and __REPOSITORY_DIR, or CITYBRAIN_TRITON__MANAGED=true",
    "kserve": "CITYBRAIN_KSERVE__KUBECONFIG and __NAMESPACE",
}
"""What configures each optional runtime (named in the 503 when it is not configured)."""


def decode(body: bytes, header_length: str | None) -> InferRequest:
    """Decode a v2 body: JSON, or binary tensors when ``Inference-Header-Content-Length`` is
    given (400 when that header is not a number)."""
    length: int | None = None
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise BadRequestError(
                f"{INFERENCE_HEADER_CONTENT_LENGTH} must be an integer, got {header_length!r}"
            ) from None
    return decode_request(body, length)


class ServingState:
    """The models registered in the runtimes, and the calls in flight to unbatched ones.

    Embedded models are registered (loaded on first call); Triton and KServe models are loaded
    at once (exported and loaded in Triton, or their InferenceService applied and awaited), so
    that their readiness means what it says.

    Args:
        runtime: The deployment's runtimes (a lone runtime is served as the embedded one).
        blobs: The artifact store the versions' digests point into.
        metrics: Where runtime measurements are reported, under each model's label.
    """

    def __init__(self, runtime: Runtime, blobs: BlobStore, metrics: GatewayMetrics) -> None:
        self.runtime = runtime if isinstance(runtime, Runtimes) else Runtimes(runtime)
        self.blobs = blobs
        self.metrics = metrics
        self.registered: dict[str, str] = {}  # runtime key → artifact digest
        self.in_flight: dict[str, int] = {}

    async def ensure_registered(self, model: ResolvedModel) -> str:
        """Register the model's version on its runtime (once per artifact); its runtime key."""
        key = model.runtime_key
        assert model.digest is not None and model.manifest is not None
        if self.registered.get(key) == model.digest:
            return key
        manifest = model.manifest
        backend = self.runtime.get(manifest.runtime)  # 503 naming it when not configured
        path = await asyncio.to_thread(self.blobs.local_path, model.digest)
        try:
            self.runtime.register(key, manifest, path)
        except ValueError:  # the handle was deleted and made again: a new artifact
            await self.runtime.unload(key)
            self.runtime.register(key, manifest, path)
        if backend is not self.runtime.embedded:
            await self.runtime.load(key, manifest, path)
        self.metrics.name_key(key, model.label)
        self.registered[key] = model.digest
        return key


async def run(state: ServingState, model: ResolvedModel, request: InferRequest) -> Arrays:
    """Check the request against the signature and run the model on the runtime."""
    manifest = model.manifest
    assert manifest is not None
    arrays = check_inputs(request, manifest.inputs)
    check_requested_outputs(request, manifest.outputs)
    key = await state.ensure_registered(model)
    if manifest.batched:
        return await state.runtime.infer(key, arrays)
    # Unbatched models run one request at a time: bound how many may wait, like the batcher.
    waiting = state.in_flight.get(key, 0)
    if waiting > manifest.batching.max_queue_size:
        raise QueueFullError(f"model '{model.handle}' has {waiting} requests waiting")
    state.in_flight[key] = waiting + 1
    try:
        return await state.runtime.infer(key, arrays)
    finally:
        state.in_flight[key] -= 1
