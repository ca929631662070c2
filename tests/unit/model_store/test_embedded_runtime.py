"""Tests of the embedded runtime: lazy loading, LRU unloading and dynamic batching."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_store.errors import (
    InferenceFailedError,
    InferenceInputError,
    ModelUnavailableError,
    QueueFullError,
)
from model_store.manifest import BatchingConfig, ModelManifest, TensorSpec
from model_store.runtimes.embedded import EmbeddedRuntime
from tests.unit.model_store.factories import make_python_model, make_torchscript_model

Arrays = dict[str, np.ndarray[Any, Any]]


class FakeModel:
    """Doubles ``x`` into ``y``; records every predict call; can block or fail on demand."""

    def __init__(self, *, fail: bool = False, gate: threading.Event | None = None) -> None:
        self.calls: list[int] = []
        self.closed = False
        self.fail = fail
        self.gate = gate
        self.started = threading.Event()

    def predict(self, inputs: Arrays) -> Arrays:
        self.calls.append(int(inputs["x"].shape[0]) if inputs["x"].ndim else 1)
        self.started.set()
        if self.gate is not None:
            self.gate.wait(timeout=30)
        if self.fail:
            raise RuntimeError("model exploded")
        if (inputs["x"] < 0).any():
            raise InferenceInputError("input 'x': negative values are not allowed")
        return {"y": inputs["x"] * 2}

    def close(self) -> None:
        self.closed = True


class FakeLoader:
    """Hands out FakeModels per artifact path and counts loads."""

    def __init__(self, **model_kwargs: Any) -> None:
        self.model_kwargs = model_kwargs
        self.loads: dict[str, int] = {}
        self.models: dict[str, FakeModel] = {}
        self.gate: threading.Event | None = None

    def __call__(self, manifest: ModelManifest, artifact_path: Path) -> FakeModel:
        if self.gate is not None:
            self.gate.wait(timeout=30)
        key = artifact_path.name
        self.loads[key] = self.loads.get(key, 0) + 1
        self.models[key] = FakeModel(**self.model_kwargs)
        return self.models[key]


class RecordingObserver:
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.depths: list[int] = []

    def on_batch(self, model_key: str, size: int) -> None:
        self.batches.append(size)

    def on_queue_depth(self, model_key: str, depth: int) -> None:
        self.depths.append(depth)


def _manifest(
    max_batch_size: int = 8, delay_ms: float = 10_000.0, queue: int = 256
) -> ModelManifest:
    spec = [-1, -1] if max_batch_size else [-1]
    return ModelManifest(
        format="python",
        entrypoint="fake:Fake",
        inputs=[TensorSpec(name="x", datatype="FP32", shape=spec)],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=spec)],
        batching=BatchingConfig(
            max_batch_size=max_batch_size, max_queue_delay_ms=delay_ms, max_queue_size=queue
        ),
    )


def _artifact(tmp_path: Path, name: str, size: int = 10) -> Path:
    path = tmp_path / name
    path.write_bytes(b"\0" * size)
    return path


def _rows(n: int, start: float = 0.0, cols: int = 2) -> np.ndarray[Any, Any]:
    return (np.arange(n * cols, dtype=np.float32) + start).reshape(n, cols)


def test_concurrent_requests_coalesce_into_one_predict(tmp_path: Path) -> None:
    loader = FakeLoader()
    observer = RecordingObserver()

    async def scenario() -> list[Arrays]:
        runtime = EmbeddedRuntime(1 << 20, 4, loader=loader, observer=observer)
        # Long delay: the batch can only be dispatched because it reaches max_batch_size (6).
        await runtime.load("m", _manifest(max_batch_size=6), _artifact(tmp_path, "a"))
        inputs = [_rows(1, 0), _rows(2, 100), _rows(3, 200)]
        results = await asyncio.gather(*(runtime.infer("m", {"x": x}) for x in inputs))
        stats = runtime.stats().models["m"]
        assert stats.batches == 1 and stats.batch_sizes == {6: 1} and stats.requests == 3
        await runtime.close()
        return results

    results = asyncio.run(scenario())
    assert loader.models["a"].calls == [6]
    for rows, start, result in zip((1, 2, 3), (0, 100, 200), results, strict=True):
        np.testing.assert_array_equal(result["y"], _rows(rows, start) * 2)
    assert observer.batches == [6]
    assert max(observer.depths) == 3 and observer.depths[-1] == 0


def test_delay_dispatches_a_partial_batch(tmp_path: Path) -> None:
    loader = FakeLoader()

    async def scenario() -> Arrays:
        runtime = EmbeddedRuntime(1 << 20, 4, loader=loader)
        runtime.register("m", _manifest(max_batch_size=8, delay_ms=1.0), _artifact(tmp_path, "a"))
        result = await runtime.infer("m", {"x": _rows(2)})
        await runtime.close()
        return result

    np.testing.assert_array_equal(asyncio.run(scenario())["y"], _rows(2) * 2)
    assert loader.models["a"].calls == [2]


def test_only_matching_shapes_share_a_batch(tmp_path: Path) -> None:
    loader = FakeLoader()

    async def scenario() -> list[Arrays]:
        runtime = EmbeddedRuntime(1 << 20, 4, loader=loader)
        runtime.register("m", _manifest(max_batch_size=4, delay_ms=20.0), _artifact(tmp_path, "a"))
        inputs = [_rows(1, cols=2), _rows(1, cols=3), _rows(1, 5, cols=2)]
        results = await asyncio.gather(*(runtime.infer("m", {"x": x}) for x in inputs))
        await runtime.close()
        return results

    results = asyncio.run(scenario())
    assert sorted(loader.models["a"].calls) == [1, 2]
    np.testing.assert_array_equal(results[1]["y"], _rows(1, cols=3) * 2)
    np.testing.assert_array_equal(results[2]["y"], _rows(1, 5, cols=2) * 2)


def test_queue_full(tmp_path: Path) -> None:
    gate = threading.Event()
    loader = FakeLoader(gate=gate)

    async def scenario() -> None:
        runtime = EmbeddedRuntime(1 << 20, 4, loader=loader)
        await runtime.load("m", _manifest(max_batch_size=1, queue=2), _artifact(tmp_path, "a"))
        first = asyncio.create_task(runtime.infer("m", {"x": _rows(1)}))
        # Wait (without a time limit) until the first batch is running inside predict.
        await asyncio.get_running_loop().run_in_executor(None, loader.models["a"].started.wait)
        waiting = [asyncio.create_task(runtime.infer("m", {"x": _rows(1)})) for _ in range(2)]
        await asyncio.sleep(0)
        assert runtime.stats().models["m"].queue_depth == 2
        with pytest.raises(QueueFullError) as caught:
            await runtime.infer("m", {"x": _rows(1)})
        assert caught.value.headers == {"Retry-After": "1"}
        assert caught.value.status == 503
        gate.set()
        await asyncio.gather(first, *waiting)
        await runtime.close()

    asyncio.run(scenario())
    assert loader.models["a"].calls == [1, 1, 1]


def test_model_error_fails_every_request_of_the_batch(tmp_path: Path) -> None:
    loader = FakeLoader(fail=True)

    async def scenario() -> list[BaseException | Arrays]:
        runtime = EmbeddedRuntime(1 << 20, 4, loader=loader)
        runtime.register("m", _manifest(max_batch_size=3), _artifact(tmp_path, "a"))
        results = await asyncio.gather(
            *(runtime.infer("m", {"x": _rows(1)}) for _ in range(3)), return_exceptions=True
        )
        await runtime.close()
        return results

    results = asyncio.run(scenario())
    # The batch fails, then each request is retried alone to find the one at fault.
    assert loader.models["a"].calls == [3, 1, 1, 1]
    assert all(isinstance(r, InferenceFailedError) for r in results)
    assert all("exploded" not in str(r) for r in results)  # nothing internal leaks


def test_a_bad_request_fails_alone_with_the_models_own_400(tmp_path: Path) -> None:
    loader = FakeLoader()

    async def scenario() -> list[BaseException | Arrays]:
        runtime = EmbeddedRuntime(1 << 20, 4, loader=loader)
        runtime.register("m", _manifest(max_batch_size=3), _artifact(tmp_path, "a"))
        bad = {"x": -_rows(1) - 1}
        results = await asyncio.gather(
            runtime.infer("m", {"x": _rows(1)}),
            runtime.infer("m", bad),
            runtime.infer("m", {"x": _rows(1)}),
            return_exceptions=True,
        )
        await runtime.close()
        return results

    good1, bad, good2 = asyncio.run(scenario())
    assert isinstance(bad, InferenceInputError) and bad.status == 400
    assert "negative" in bad.message
    assert isinstance(good1, dict) and isinstance(good2, dict)
    assert good1["y"].tolist() == (_rows(1) * 2).tolist()


def test_unbatched_model_calls_predict_directly(tmp_path: Path) -> None:
    loader = FakeLoader()

    async def scenario() -> Arrays:
        runtime = EmbeddedRuntime(1 << 20, 4, loader=loader)
        runtime.register("m", _manifest(max_batch_size=0), _artifact(tmp_path, "a"))
        result = await runtime.infer("m", {"x": np.array([1.0, 2.0], np.float32)})
        await runtime.close()
        return result

    assert asyncio.run(scenario())["y"].tolist() == [2.0, 4.0]


def test_unbatched_model_error_is_inference_failed(tmp_path: Path) -> None:
    loader = FakeLoader(fail=True)

    async def scenario() -> None:
        runtime = EmbeddedRuntime(1 << 20, 4, loader=loader)
        runtime.register("m", _manifest(max_batch_size=0), _artifact(tmp_path, "a"))
        with pytest.raises(InferenceFailedError):
            await runtime.infer("m", {"x": np.array([1.0], np.float32)})
        await runtime.close()

    asyncio.run(scenario())


def test_batch_over_max_batch_size_is_bad_request(tmp_path: Path) -> None:
    async def scenario() -> None:
        runtime = EmbeddedRuntime(1 << 20, 4, loader=FakeLoader())
        runtime.register("m", _manifest(max_batch_size=2), _artifact(tmp_path, "a"))
        with pytest.raises(InferenceInputError, match="input 'x': batch of 3 rows"):
            await runtime.infer("m", {"x": _rows(3)})
        await runtime.close()

    asyncio.run(scenario())


def test_lazy_load_happens_once_under_concurrency(tmp_path: Path) -> None:
    loader = FakeLoader()
    loader.gate = threading.Event()

    async def scenario() -> None:
        runtime = EmbeddedRuntime(1 << 20, 4, loader=loader)
        runtime.register("m", _manifest(max_batch_size=0), _artifact(tmp_path, "a"))
        assert not runtime.is_loaded("m") and runtime.is_ready("m")
        tasks = [
            asyncio.create_task(runtime.infer("m", {"x": np.array([1.0], np.float32)}))
            for _ in range(10)
        ]
        await asyncio.sleep(0)
        assert loader.gate is not None
        loader.gate.set()
        await asyncio.gather(*tasks)
        assert runtime.is_loaded("m")
        await runtime.close()

    asyncio.run(scenario())
    assert loader.loads == {"a": 1}
    assert len(loader.models["a"].calls) == 10


async def _wait_closed(model: FakeModel) -> None:
    for _ in range(1000):
        if model.closed:
            return
        await asyncio.sleep(0.001)


def test_least_recently_used_model_unloaded_over_budget(tmp_path: Path) -> None:
    loader = FakeLoader()
    x = {"x": np.array([1.0], np.float32)}

    async def scenario() -> None:
        runtime = EmbeddedRuntime(250, 10, loader=loader)
        for name in ("a", "b", "c"):
            runtime.register(name, _manifest(max_batch_size=0), _artifact(tmp_path, name, 100))
        await runtime.infer("a", x)
        await runtime.infer("b", x)
        await runtime.infer("a", x)  # b is now the least recently used
        await runtime.infer("c", x)
        assert runtime.is_loaded("a") and runtime.is_loaded("c")
        assert not runtime.is_loaded("b")
        await _wait_closed(loader.models["b"])
        assert loader.models["b"].closed and not loader.models["a"].closed
        assert runtime.stats().memory_used_bytes == 200
        await runtime.infer("b", x)  # loads again on demand
        assert loader.loads["b"] == 2
        assert not runtime.is_loaded("a")
        await runtime.close()

    asyncio.run(scenario())


def test_model_count_limit_unloads(tmp_path: Path) -> None:
    loader = FakeLoader()
    x = {"x": np.array([1.0], np.float32)}

    async def scenario() -> None:
        runtime = EmbeddedRuntime(1 << 20, 1, loader=loader)
        for name in ("a", "b"):
            runtime.register(name, _manifest(max_batch_size=0), _artifact(tmp_path, name))
        await runtime.infer("a", x)
        await runtime.infer("b", x)
        assert runtime.stats().loaded_models == 1 and runtime.is_loaded("b")
        await runtime.close()

    asyncio.run(scenario())


def test_unknown_and_unloadable_models_unavailable(tmp_path: Path) -> None:
    def broken_loader(manifest: ModelManifest, artifact_path: Path) -> FakeModel:
        raise OSError("disk on fire")

    async def scenario() -> None:
        runtime = EmbeddedRuntime(1 << 20, 4, loader=broken_loader)
        with pytest.raises(ModelUnavailableError):
            await runtime.infer("nope", {"x": _rows(1)})
        runtime.register("m", _manifest(), _artifact(tmp_path, "a"))
        with pytest.raises(ModelUnavailableError) as caught:
            await runtime.infer("m", {"x": _rows(1)})
        assert "fire" not in caught.value.message
        assert not runtime.is_ready("m")
        await runtime.unload("m")
        assert not runtime.is_ready("m")
        await runtime.close()

    asyncio.run(scenario())


def test_model_bigger_than_budget_unavailable(tmp_path: Path) -> None:
    async def scenario() -> None:
        runtime = EmbeddedRuntime(50, 4, loader=FakeLoader())
        runtime.register("m", _manifest(), _artifact(tmp_path, "a", 100))
        with pytest.raises(ModelUnavailableError, match="memory budget"):
            await runtime.infer("m", {"x": _rows(1)})
        await runtime.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("factory", [make_torchscript_model, make_python_model])
def test_real_formats_batched(tmp_path: Path, factory: Any) -> None:
    path, manifest = factory(tmp_path)

    async def scenario() -> list[Arrays]:
        runtime = EmbeddedRuntime(1 << 30, 4)
        await runtime.load("doubler:1", manifest, path)
        inputs = [_rows(i + 1, 10 * i) for i in range(4)]
        results = await asyncio.gather(*(runtime.infer("doubler:1", {"x": x}) for x in inputs))
        await runtime.close()
        return results

    for i, result in enumerate(asyncio.run(scenario())):
        np.testing.assert_allclose(result["y"], _rows(i + 1, 10 * i) * 2)


def test_a_batch_as_large_as_the_last_goes_without_waiting_out_the_delay(
    tmp_path: Path,
) -> None:
    """Eight callers and a batch of 32: once the eight served last time are back, the batch
    goes. The delay here is 30 s; were it waited out, the guard of 10 s would fail the test."""
    loader = FakeLoader()

    async def scenario() -> list[int]:
        runtime = EmbeddedRuntime(1 << 20, 4, loader=loader)
        runtime.register(
            "m", _manifest(max_batch_size=32, delay_ms=30_000), _artifact(tmp_path, "a")
        )
        await asyncio.wait_for(runtime.infer("m", {"x": _rows(8)}), timeout=10)  # alone: at once
        for _ in range(2):
            await asyncio.wait_for(
                asyncio.gather(*(runtime.infer("m", {"x": _rows(1)}) for _ in range(8))),
                timeout=10,
            )
        # More callers than last time: they are all taken, in one batch.
        await asyncio.wait_for(
            asyncio.gather(*(runtime.infer("m", {"x": _rows(1)}) for _ in range(12))), timeout=10
        )
        await runtime.close()
        return loader.models["a"].calls

    assert asyncio.run(scenario()) == [8, 8, 8, 12]


def test_a_lone_request_does_not_wait_for_the_queue_delay(tmp_path: Path) -> None:
    """Adaptive batching: with no concurrency there is nothing to wait for. The delay here is
    3 s; were it applied, the lone calls would not finish inside the 2 s guard."""
    loader = FakeLoader()

    async def scenario() -> list[int]:
        runtime = EmbeddedRuntime(1 << 20, 4, loader=loader)
        runtime.register("m", _manifest(max_batch_size=8, delay_ms=3_000), _artifact(tmp_path, "a"))
        # One request at a time: each goes at once.
        for _ in range(3):
            await asyncio.wait_for(runtime.infer("m", {"x": _rows(1)}), timeout=2)
        # Requests that arrive together still coalesce into one call.
        await asyncio.gather(*(runtime.infer("m", {"x": _rows(1)}) for _ in range(3)))
        await runtime.close()
        return loader.models["a"].calls

    assert asyncio.run(scenario()) == [1, 1, 1, 3]


class ThreadRecordingModel:
    """Records which thread ran each predict; sleeps ``delay_s`` in each."""

    def __init__(self) -> None:
        self.threads: list[int] = []
        self.delay_s = 0.0

    def predict(self, inputs: Arrays) -> Arrays:
        self.threads.append(threading.get_ident())
        if self.delay_s:
            time.sleep(self.delay_s)
        return {"y": inputs["x"] * 2}

    def close(self) -> None:
        pass


@pytest.mark.parametrize("batched", [False, True])
def test_tiny_models_run_on_the_loop_and_slow_ones_in_threads(
    tmp_path: Path, batched: bool
) -> None:
    model = ThreadRecordingModel()

    async def scenario() -> tuple[int, list[int]]:
        runtime = EmbeddedRuntime(1 << 20, 4, loader=lambda m, p: model, inline_below_s=0.005)
        runtime.register(
            "m", _manifest(max_batch_size=8 if batched else 0, delay_ms=0), _artifact(tmp_path, "a")
        )
        x = _rows(1) if batched else np.array([1.0, 2.0], np.float32)
        for _ in range(20):  # measured in threads first, then inline
            assert (await runtime.infer("m", {"x": x}))["y"].tolist() == (x * 2).tolist()
        model.delay_s = 0.05  # one slow call lifts the average over the threshold...
        for _ in range(3):
            await runtime.infer("m", {"x": x})
        await runtime.close()
        return threading.get_ident(), model.threads

    loop_thread, threads = asyncio.run(scenario())
    assert all(t != loop_thread for t in threads[:16])  # timed in worker threads first
    assert all(t == loop_thread for t in threads[17:21])  # fast: on the loop
    assert threads[20] == loop_thread  # the first slow call is caught inline...
    assert threads[21] != loop_thread and threads[22] != loop_thread  # ...then back to threads


class SlowInThreadsModel(ThreadRecordingModel):
    """Takes ``thread_delay_s`` in a worker thread and ``loop_delay_s`` on the loop thread."""

    def __init__(self, loop_thread: int, thread_delay_s: float, loop_delay_s: float) -> None:
        super().__init__()
        self.loop_thread = loop_thread
        self.thread_delay_s = thread_delay_s
        self.loop_delay_s = loop_delay_s

    def predict(self, inputs: Arrays) -> Arrays:
        on_loop = threading.get_ident() == self.loop_thread
        self.delay_s = self.loop_delay_s if on_loop else self.thread_delay_s
        return super().predict(inputs)


def _run_probed(tmp_path: Path, thread_delay_s: float, loop_delay_s: float) -> list[bool]:
    """100 calls with a 2 ms inline limit; whether each ran on the loop."""

    async def scenario() -> list[bool]:
        loop_thread = threading.get_ident()
        model = SlowInThreadsModel(loop_thread, thread_delay_s, loop_delay_s)
        runtime = EmbeddedRuntime(1 << 20, 4, loader=lambda m, p: model, inline_below_s=0.002)
        runtime.register("m", _manifest(max_batch_size=0), _artifact(tmp_path, "a"))
        for _ in range(100):
            await runtime.infer("m", {"x": np.array([1.0], np.float32)})
        await runtime.close()
        return [t == loop_thread for t in model.threads]

    return asyncio.run(scenario())


def test_a_model_timed_slow_in_threads_but_fast_on_the_loop_moves_to_the_loop(
    tmp_path: Path,
) -> None:
    # 3 ms in a thread (over the 2 ms limit, under 4x it), nothing on the loop.
    on_loop = _run_probed(tmp_path, thread_delay_s=0.003, loop_delay_s=0.0)
    first = on_loop.index(True)
    assert first >= 32  # timed in 32 calls in threads, then probed once on the loop
    assert all(on_loop[first:])  # measured fast there: it stays


def test_a_model_slow_everywhere_is_probed_on_the_loop_only_now_and_then(tmp_path: Path) -> None:
    # 3 ms in threads and on the loop: each probe finds it slow and sends it back.
    on_loop = _run_probed(tmp_path, thread_delay_s=0.003, loop_delay_s=0.003)
    probes = [i for i, inline in enumerate(on_loop) if inline]
    assert probes  # it was given the chance
    assert all(b - a > 32 for a, b in itertools.pairwise(probes))  # one call in 33 at most
    assert len(probes) <= 3


def test_inline_prediction_can_be_turned_off(tmp_path: Path) -> None:
    model = ThreadRecordingModel()

    async def scenario() -> int:
        runtime = EmbeddedRuntime(1 << 20, 4, loader=lambda m, p: model, inline_below_s=0)
        runtime.register("m", _manifest(max_batch_size=0), _artifact(tmp_path, "a"))
        for _ in range(40):
            await runtime.infer("m", {"x": np.array([1.0], np.float32)})
        await runtime.close()
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert len(model.threads) == 40 and loop_thread not in model.threads
