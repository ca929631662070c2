"""Dynamic batching for the embedded runtime: one model's queue, batches and dispatch.

:class:`Batcher` collects a model's concurrent requests, groups those whose non-batch
dimensions and dtypes match, dispatches a batch when it is full (``max_batch_size`` rows or a
preferred size) or when ``max_queue_delay_ms`` has passed, concatenates the inputs along
dimension 0, runs the model once and splits the outputs back by row counts. A batch that fails
is retried request by request, so only the request at fault gets the error. :class:`Notifier`
forwards batch sizes and queue depths to a :class:`~model_store.runtimes.base.RuntimeObserver`
without letting it break serving. :class:`~model_store.runtimes.embedded.EmbeddedRuntime`
owns the batchers (see its module docstring for the whole serving model).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_store.errors import (
    InferenceFailedError,
    InferenceInputError,
    ModelUnavailableError,
    QueueFullError,
)
from model_store.manifest import BatchingConfig
from model_store.runtimes.base import ModelStats, RuntimeObserver

__all__ = ["Arrays", "Batcher", "Notifier", "request_error"]

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray[Any, Any]]
_GroupKey = tuple[tuple[str, str, tuple[int, ...]], ...]


@dataclass(slots=True)
class _Pending:
    inputs: Arrays
    rows: int
    group: _GroupKey
    future: asyncio.Future[Arrays]
    enqueued: float


class Batcher:
    """Collects one model's concurrent requests into batches and runs them one at a time."""

    def __init__(
        self,
        key: str,
        config: BatchingConfig,
        run: Callable[[Arrays], Awaitable[Arrays]],
        stats: ModelStats,
        notify: Notifier,
    ) -> None:
        self._key = key
        self._max_rows = config.max_batch_size
        self._delay = config.max_queue_delay_ms / 1000.0
        self._preferred = frozenset(config.preferred_batch_sizes)
        self._max_queue = config.max_queue_size
        self._last_batch = 0  # requests in the last batch (1 or less: no concurrency)
        self._last_rows = 0  # rows in the last batch
        self._arrivals = 0  # requests queued so far
        self._run = run
        self._stats = stats
        self._notify = notify
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, inputs: Arrays) -> Arrays:
        if self._closed:
            raise ModelUnavailableError(f"model '{self._key}' was unloaded")
        rows, group = _describe(inputs)
        if rows > self._max_rows:
            raise InferenceInputError(
                f"input '{group[0][0]}': batch of {rows} rows is over the model's "
                f"max_batch_size {self._max_rows}"
            )
        if len(self._queue) >= self._max_queue:
            raise QueueFullError(
                f"model '{self._key}' has {len(self._queue)} requests waiting; retry shortly"
            )
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._worker = loop.create_task(self._work(), name=f"batcher:{self._key}")
        future: asyncio.Future[Arrays] = loop.create_future()
        self._arrivals += 1
        self._queue.append(_Pending(inputs, rows, group, future, loop.time()))
        self._set_depth()
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        """Fail queued requests, let an in-flight batch finish, stop the worker."""
        self._closed = True
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(
                    ModelUnavailableError(f"model '{self._key}' was unloaded")
                )
        self._set_depth()
        self._wakeup.set()
        if self._worker is not None:
            await asyncio.shield(self._worker)

    def _set_depth(self) -> None:
        self._stats.queue_depth = len(self._queue)
        self._notify.queue_depth(self._key, len(self._queue))

    def _ready_rows(self, group: _GroupKey) -> int:
        rows = 0
        for pending in self._queue:
            if pending.group != group or pending.future.done():
                continue
            if rows + pending.rows > self._max_rows:
                break
            rows += pending.rows
        return rows

    def _take(self, group: _GroupKey) -> list[_Pending]:
        batch: list[_Pending] = []
        kept: deque[_Pending] = deque()
        rows = 0
        for pending in self._queue:
            if pending.future.done():
                continue  # the caller went away (cancelled)
            if pending.group == group and rows + pending.rows <= self._max_rows:
                batch.append(pending)
                rows += pending.rows
            else:
                kept.append(pending)
        self._queue = kept
        self._set_depth()
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            head = self._queue[0]
            if head.future.done():
                self._queue.popleft()
                self._set_depth()
                continue
            # Adaptive: a lone request after a lone batch (no concurrency) goes at once; the
            # queue delay only applies while requests arrive together, when waiting fills batches.
            # A batch as large as the last one goes once a turn of the loop brings nothing new:
            # the callers served last time are back, and waiting out the delay for callers that
            # do not exist would only hold them (8 clients and a batch of 32, say).
            alone = len(self._queue) == 1 and self._last_batch <= 1
            deadline = head.enqueued + (0.0 if alone else self._delay)
            while not self._closed:
                rows = self._ready_rows(head.group)
                if rows >= self._max_rows or rows in self._preferred:
                    break
                if 1 < self._last_rows <= rows:
                    arrivals = self._arrivals
                    await asyncio.sleep(0)
                    if self._arrivals == arrivals or loop.time() >= deadline:
                        break
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    async with asyncio.timeout(remaining):
                        await self._wakeup.wait()
                except TimeoutError:
                    break
            batch = self._take(head.group)
            if batch:
                self._last_batch = len(batch)
                self._last_rows = sum(p.rows for p in batch)
                await self._dispatch(batch)

    async def _run_alone(self, pending: _Pending) -> None:
        try:
            outputs = await self._run(pending.inputs)
        except asyncio.CancelledError:
            if not pending.future.done():
                pending.future.set_exception(
                    ModelUnavailableError(f"model '{self._key}' was unloaded")
                )
            raise
        except Exception as e:
            if not pending.future.done():
                pending.future.set_exception(request_error(self._key, e))
            return
        if not pending.future.done():
            pending.future.set_result(outputs)

    async def _dispatch(self, batch: list[_Pending]) -> None:
        total = sum(p.rows for p in batch)
        self._stats.batches += 1
        self._stats.batch_sizes[total] = self._stats.batch_sizes.get(total, 0) + 1
        self._notify.batch(self._key, total)
        try:
            if len(batch) == 1:
                merged = batch[0].inputs
            else:
                merged = {
                    name: np.concatenate([p.inputs[name] for p in batch], axis=0)
                    for name in batch[0].inputs
                }
            outputs = await self._run(merged)
            parts = _split(outputs, [p.rows for p in batch], total)
        except asyncio.CancelledError:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(
                        ModelUnavailableError(f"model '{self._key}' was unloaded")
                    )
            raise
        except Exception as e:
            if len(batch) > 1 and not isinstance(e, ModelUnavailableError):
                # One bad request must not fail its neighbours: run each alone, so only the
                # request at fault gets the error.
                for pending in batch:
                    await self._run_alone(pending)
                return
            error = request_error(self._key, e)
            for pending in batch:  # one, or a batch whose model (worker) is gone: all fail
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        for pending, part in zip(batch, parts, strict=True):
            if not pending.future.done():
                pending.future.set_result(part)


def request_error(key: str, error: Exception) -> Exception:
    """What the caller sees when the model raised: its own input errors (400) and a lost
    sandbox worker (503) pass through; anything else is logged and becomes a generic
    InferenceFailedError (500)."""
    if isinstance(error, InferenceInputError | ModelUnavailableError):
        return error
    logger.error("model %s failed on a request", key, exc_info=error)
    return InferenceFailedError(f"model '{key}' failed to run the request")


def _describe(inputs: Arrays) -> tuple[int, _GroupKey]:
    if not inputs:
        raise InferenceInputError("the request has no inputs")
    group = tuple(
        sorted((name, array.dtype.str, tuple(array.shape[1:])) for name, array in inputs.items())
    )
    rows: int | None = None
    for name, array in inputs.items():
        if array.ndim == 0:
            raise InferenceInputError(f"input '{name}': a batched model needs a batch dimension")
        if rows is None:
            rows = int(array.shape[0])
        elif array.shape[0] != rows:
            raise InferenceInputError(
                f"input '{name}': batch dimension is {array.shape[0]}, other inputs have {rows}"
            )
    assert rows is not None
    return rows, group


def _split(outputs: Arrays, row_counts: list[int], total: int) -> list[Arrays]:
    offsets = np.cumsum(row_counts[:-1]).tolist()
    pieces: dict[str, list[np.ndarray[Any, Any]]] = {}
    for name, value in outputs.items():
        array = np.asarray(value)
        if array.ndim == 0 or array.shape[0] != total:
            raise ValueError(
                f"output {name!r} has shape {list(array.shape)} for a batch of {total} rows"
            )
        pieces[name] = np.split(array, offsets, axis=0)
    return [{name: parts[i] for name, parts in pieces.items()} for i in range(len(row_counts))]


class Notifier:
    """Forwards measurements to the optional observer, never letting it break serving."""

    def __init__(self, observer: RuntimeObserver | None) -> None:
        self._observer = observer

    def batch(self, key: str, size: int) -> None:
        if self._observer is not None:
            try:
                self._observer.on_batch(key, size)
            except Exception:
                logger.warning("observer.on_batch failed", exc_info=True)

    def queue_depth(self, key: str, depth: int) -> None:
        if self._observer is not None:
            try:
                self._observer.on_queue_depth(key, depth)
            except Exception:
                logger.warning("observer.on_queue_depth failed", exc_info=True)
