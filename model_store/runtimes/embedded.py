"""The embedded runtime: models served by the platform's process, with dynamic batching.

* **Tenant code runs elsewhere.** Models of a format that runs its publisher's code
  (``python``) load into a sandbox worker process (:mod:`model_store.sandbox`) unless the
  operator trusts them; ``predict`` then talks to the worker. A worker that crashes, hangs or
  runs out of memory fails its calls with 503 (``ModelUnavailableError``, the whole batch
  alike) and is replaced on the next call. Such models never run on the event loop (below).

* **Lazy loading.** :meth:`EmbeddedRuntime.register` only records the artifact; the first
  :meth:`~EmbeddedRuntime.infer` loads it in a worker thread, and concurrent first calls share
  that one load.
* **Least-recently-used unloading.** When the loaded models' memory estimate (their artifact
  size) exceeds ``memory_budget_bytes``, or there are more than ``max_loaded_models``, idle
  models are unloaded, least recently used first; they load again on their next request.
* **Dynamic batching** (models with ``batching.max_batch_size > 0``; the batcher lives in
  :mod:`model_store.runtimes.batching`). Concurrent requests
  queue per model; a batch is dispatched when it holds ``max_batch_size`` rows or a preferred
  batch size, or when ``max_queue_delay_ms`` has passed since its first request was queued.
  Only requests whose non-batch dimensions and dtypes match share a batch. The batch's inputs
  are concatenated along dimension 0, ``predict`` runs once in a worker thread and the outputs
  are split back by row counts. At most ``max_queue_size`` requests wait; more get
  :class:`~model_store.errors.QueueFullError`.
* One ``predict`` runs at a time per model (like one Triton model instance); batching is what
  turns concurrency into throughput.
* **Tiny models run on the event loop.** ``predict`` runs in a worker thread, so a slow model
  never stalls the server. For a model whose measured ``predict`` takes less than
  ``inline_below_s`` (default 0.1 ms; a moving average over its recent calls, after at least
  ``_INLINE_AFTER`` calls in threads), the two thread hops would cost more than the model, so
  it runs inline. One slow call lifts the average over the threshold, and the model goes back
  to the worker threads on its next call. Timed in a thread, a call also carries the thread's
  costs (waiting for the interpreter lock, cold caches): a model of 70 µs on the loop measured
  110-170 µs in threads, and would never have left them. So a model timed in threads at under
  ``_PROBE_BELOW`` times the threshold runs one call in ``_PROBE_EVERY`` on the loop, where it
  is timed on its own account, and stays there while that average is under the threshold
  (a slower average than in threads, so that a stray slow call does not send it back; one call
  over ``_SLOW_INLINE`` times the threshold does).
  ``inline_below_s=0`` turns this off.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from model_store.errors import ModelUnavailableError
from model_store.formats import LoadedModel, Loader
from model_store.manifest import ModelManifest
from model_store.runtimes.base import ModelStats, RuntimeObserver, RuntimeStats, TableRuntime
from model_store.runtimes.batching import Arrays, Batcher, Notifier, request_error
from model_store.sandbox import Isolation, SandboxedModel

__all__ = ["EmbeddedRuntime"]

logger = logging.getLogger(__name__)


def _timed_predict(entry: _Loaded, inputs: Arrays) -> Arrays:
    started = time.perf_counter()
    try:
        return entry.model.predict(inputs)
    finally:
        entry.observe(time.perf_counter() - started)


@dataclass(slots=True)
class _Registration:
    manifest: ModelManifest
    artifact_path: Path
    stats: ModelStats
    failed: bool = False


@dataclass(slots=True)
class _Loaded:
    model: LoadedModel
    memory_bytes: int
    # A sandboxed model's predict waits on another process, up to its call timeout: never on
    # the event loop.
    may_block: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    batcher: Batcher | None = None
    in_use: int = 0
    # predict's cost: exponential moving averages of its duration (s) in worker threads, over
    # `timed` calls, and on the event loop, over `inline_timed` calls; calls in threads since
    # the last one on the loop.
    predict_s: float = 0.0
    timed: int = 0
    inline_s: float = 0.0
    inline_timed: int = 0
    since_inline: int = 0

    def observe(self, seconds: float) -> None:
        self.predict_s = seconds if self.timed == 0 else 0.8 * self.predict_s + 0.2 * seconds
        self.timed += 1
        self.since_inline += 1

    def observe_inline(self, seconds: float, limit_s: float) -> None:
        # A slower average: on the loop, a call now and then takes a preemption or a GC pass;
        # one call over _SLOW_INLINE times the limit is taken as the model's new cost at once.
        if self.inline_timed == 0 or seconds > _SLOW_INLINE * limit_s:
            self.inline_s = seconds
        else:
            self.inline_s = 0.9 * self.inline_s + 0.1 * seconds
        self.inline_timed += 1
        self.since_inline = 0

    def runs_inline(self, limit_s: float) -> bool:
        """Whether the next call runs on the event loop (see the module docstring)."""
        if limit_s <= 0 or self.may_block or self.timed < _INLINE_AFTER:
            return False
        if self.since_inline == 0:  # the last call ran on the loop: stay while it is fast there
            return self.inline_s < limit_s
        return self.predict_s < limit_s or (
            self.predict_s < _PROBE_BELOW * limit_s and self.since_inline >= _PROBE_EVERY
        )


_INLINE_AFTER = 16
"""Calls timed in worker threads before a model may run on the event loop."""
_SLOW_INLINE = 10.0
_PROBE_EVERY = 32
_PROBE_BELOW = 4.0
"""A model timed in threads under this many times the inline limit runs one call in
``_PROBE_EVERY`` on the loop, to be timed there (see the module docstring)."""


class EmbeddedRuntime(TableRuntime[_Registration]):
    """Serves models in-process with lazy loading, LRU unloading and dynamic batching.

    Args:
        memory_budget_bytes: Budget for loaded models (each estimated by its artifact size).
        max_loaded_models: The most models kept in memory at once.
        loader: Turns ``(manifest, artifact_path)`` into a loaded model, for every model
            alike (tests pass small fakes). Default: ``isolation``.
        isolation: Loads models by format and trust: tenant code in sandbox workers unless
            trusted (default :class:`~model_store.sandbox.Isolation`: the default limits,
            nothing trusted).
        observer: Optional receiver of batch sizes and queue depths (for metrics).
        max_workers: Threads for loading and predicting (default: CPU count + 4, at most 32).
        inline_below_s: Models whose ``predict`` takes less than this (moving average) run on
            the event loop instead of a worker thread (0: never).

    Example:
        >>> runtime = EmbeddedRuntime(memory_budget_bytes=2 << 30, max_loaded_models=8)
        >>> runtime.register("traffic-police.flow-smoother:1", manifest, path)  # doctest: +SKIP
        >>> key = "traffic-police.flow-smoother:1"
        >>> outputs = await runtime.infer(key, {"flow": flow})  # doctest: +SKIP
    """

    def __init__(
        self,
        memory_budget_bytes: int = 2 << 30,
        max_loaded_models: int = 16,
        *,
        loader: Loader | None = None,
        isolation: Isolation | None = None,
        observer: RuntimeObserver | None = None,
        max_workers: int | None = None,
        inline_below_s: float = 1e-4,
    ) -> None:
        if memory_budget_bytes <= 0 or max_loaded_models <= 0:
            raise ValueError("memory_budget_bytes and max_loaded_models must be positive")
        self._budget = memory_budget_bytes
        self._max_models = max_loaded_models
        self._loader = loader
        self._isolation = isolation or Isolation()
        self._inline_below_s = inline_below_s
        self._notify = Notifier(observer)
        self._executor = ThreadPoolExecutor(
            max_workers=max_workers or min(32, (os.cpu_count() or 1) + 4),
            thread_name_prefix="model-store",
        )
        self._models: dict[str, _Registration] = {}
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ public API

    async def infer(self, key: str, inputs: Arrays) -> Arrays:
        """Run a registered model, loading it first if needed.

        Args:
            key: The runtime key.
            inputs: Every declared input, by name (batched models: dimension 0 is the batch).

        Returns:
            Every output, by name (for batched models, this request's rows only).

        Raises:
            ModelUnavailableError: Unknown key, or the model cannot be loaded.
            QueueFullError: ``max_queue_size`` requests are already waiting.
            InferenceInputError: More rows than ``max_batch_size``, or inputs whose batch
                dimensions disagree.
            InferenceFailedError: The model raised (every request of that batch gets this).
        """
        entry = await self._acquire(key)
        try:
            if entry.batcher is not None:
                outputs = await entry.batcher.submit(inputs)
            else:
                outputs = await self._predict_direct(key, entry, inputs)
        finally:
            entry.in_use -= 1
        registration = self._models.get(key)
        if registration is not None:
            registration.stats.requests += 1
        return outputs

    def is_ready(self, key: str) -> bool:
        """Tell whether ``key`` is registered and its last load attempt did not fail.

        Args:
            key: The runtime key.

        Returns:
            True if the model is loaded or can be loaded on demand.
        """
        registration = self._models.get(key)
        return registration is not None and not registration.failed

    def is_loaded(self, key: str) -> bool:
        """Tell whether ``key`` is in memory now.

        Args:
            key: The runtime key.

        Returns:
            True if loaded.
        """
        return key in self._loaded

    async def unload(self, key: str) -> None:
        """Unload and forget a model; its waiting requests fail with ``ModelUnavailable``.

        Args:
            key: The runtime key (unknown keys are ignored).
        """
        self._models.pop(key, None)
        entry = self._loaded.pop(key, None)
        if entry is not None:
            await self._close_entry(key, entry)

    def stats(self) -> RuntimeStats:
        """Return a snapshot of per-model counters and memory use.

        Returns:
            The snapshot (copies; safe to keep).
        """
        models: dict[str, ModelStats] = {}
        for key, registration in self._models.items():
            s = registration.stats
            entry = self._loaded.get(key)
            models[key] = ModelStats(
                key=key,
                loaded=entry is not None,
                memory_bytes=entry.memory_bytes if entry is not None else 0,
                queue_depth=s.queue_depth,
                requests=s.requests,
                batches=s.batches,
                batch_sizes=dict(s.batch_sizes),
                loads=s.loads,
            )
        return RuntimeStats(
            models=models,
            memory_used_bytes=self._memory_used(),
            memory_budget_bytes=self._budget,
            loaded_models=len(self._loaded),
        )

    async def close(self) -> None:
        """Unload every model and stop the worker threads."""
        for key in list(self._models):
            await self.unload(key)
        for key in list(self._loaded):
            await self._close_entry(key, self._loaded.pop(key))
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ internals

    def _new_entry(self, key: str, manifest: ModelManifest, artifact_path: Path) -> _Registration:
        return _Registration(manifest, artifact_path, ModelStats(key=key))

    async def _load_registered(self, key: str) -> None:
        entry = await self._acquire(key)
        entry.in_use -= 1

    async def _acquire(self, key: str) -> _Loaded:
        """Return the loaded entry of ``key``, pinned (``in_use`` + 1) against eviction."""
        for _ in range(3):
            entry = self._loaded.get(key)
            if entry is None:
                await self._load_once(key)
                entry = self._loaded.get(key)
                if entry is None:
                    continue  # evicted before this caller resumed; load again
            # No await between the lookup and the pin: eviction cannot interleave.
            entry.in_use += 1
            self._loaded.move_to_end(key)
            self._evict(incoming_bytes=0)
            return entry
        raise ModelUnavailableError(f"model '{key}' is being unloaded too often; retry")

    async def _load_once(self, key: str) -> None:
        if key not in self._models:
            raise ModelUnavailableError(f"model '{key}' is not loaded")
        task = self._loading.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._do_load(key))
            self._loading[key] = task
            task.add_done_callback(lambda done: self._forget_loading(key, done))
        # shield: a caller going away must not cancel the load others are waiting for.
        await asyncio.shield(task)

    def _forget_loading(self, key: str, task: asyncio.Task[None]) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        if not task.cancelled():
            task.exception()  # retrieved here so an unawaited failure is not reported twice

    async def _do_load(self, key: str) -> None:
        registration = self._models[key]
        loop = asyncio.get_running_loop()
        try:
            stat = await loop.run_in_executor(self._executor, registration.artifact_path.stat)
            size = stat.st_size
        except OSError as e:
            registration.failed = True
            logger.error("model %s: artifact %s is missing", key, registration.artifact_path)
            raise ModelUnavailableError(f"model '{key}' could not be loaded") from e
        if size > self._budget:
            registration.failed = True
            raise ModelUnavailableError(
                f"model '{key}' needs {size} bytes, more than the memory budget of {self._budget}"
            )
        self._evict(incoming_bytes=size, incoming_models=1)
        manifest, path = registration.manifest, registration.artifact_path
        if self._loader is not None:
            load = partial(self._loader, manifest, path)
        else:
            load = partial(self._isolation.load, key, manifest, path)
        try:
            model = await loop.run_in_executor(self._executor, load)
        except Exception as e:
            registration.failed = True
            logger.exception("model %s failed to load from %s", key, registration.artifact_path)
            raise ModelUnavailableError(f"model '{key}' could not be loaded") from e
        if self._models.get(key) is not registration:
            await loop.run_in_executor(self._executor, model.close)
            raise ModelUnavailableError(f"model '{key}' was unloaded")
        registration.failed = False
        registration.stats.loads += 1
        entry = _Loaded(model=model, memory_bytes=size, may_block=isinstance(model, SandboxedModel))
        if registration.manifest.batched:
            entry.batcher = Batcher(
                key,
                registration.manifest.batching,
                lambda arrays: self._predict_locked(entry, arrays),
                registration.stats,
                self._notify,
            )
        self._loaded[key] = entry
        logger.info("model %s loaded (%d bytes)", key, size)

    async def _predict_locked(self, entry: _Loaded, inputs: Arrays) -> Arrays:
        async with entry.lock:
            if entry.runs_inline(self._inline_below_s):
                started = time.perf_counter()
                try:
                    return entry.model.predict(inputs)
                finally:
                    entry.observe_inline(time.perf_counter() - started, self._inline_below_s)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, _timed_predict, entry, inputs)

    async def _predict_direct(self, key: str, entry: _Loaded, inputs: Arrays) -> Arrays:
        try:
            return await self._predict_locked(entry, inputs)
        except Exception as e:
            raise request_error(key, e) from e

    def _memory_used(self) -> int:
        return sum(entry.memory_bytes for entry in self._loaded.values())

    def _evict(self, *, incoming_bytes: int, incoming_models: int = 0) -> None:
        while (
            len(self._loaded) + incoming_models > self._max_models
            or self._memory_used() + incoming_bytes > self._budget
        ):
            victim = next((k for k, e in self._loaded.items() if e.in_use == 0), None)
            if victim is None:
                logger.warning(
                    "embedded runtime over budget (%d models, %d bytes) but every model is busy",
                    len(self._loaded),
                    self._memory_used(),
                )
                return
            entry = self._loaded.pop(victim)
            logger.info("unloading least recently used model %s", victim)
            task = asyncio.get_running_loop().create_task(self._close_entry(victim, entry))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _close_entry(self, key: str, entry: _Loaded) -> None:
        if entry.batcher is not None:
            await entry.batcher.close()
        async with entry.lock:  # waits for an in-flight predict
            try:
                await asyncio.get_running_loop().run_in_executor(self._executor, entry.model.close)
            except Exception:
                logger.warning("closing model %s failed", key, exc_info=True)
