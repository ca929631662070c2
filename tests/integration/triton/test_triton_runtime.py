"""TritonRuntime on a real tritonserver (the one bundled with nvidia-pytriton), on the CPU.

One server is started for the module and always stopped. The failure test kills it with
SIGKILL in the middle of a stream of requests and restarts it; it runs last in the module.
"""

from __future__ import annotations

import asyncio
import os
import signal
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http

from model_store.builtin import flow_smoother
from model_store.errors import InferenceInputError, ModelUnavailableError
from model_store.manifest import ModelManifest
from model_store.runtimes.embedded import EmbeddedRuntime
from model_store.runtimes.triton import TritonRuntime
from model_store.triton.server import ManagedTritonServer, TritonServerError
from tests.unit.model_store.factories import (
    doubler_manifest,
    make_python_model,
    make_torchscript_model,
)

pytestmark = pytest.mark.integration

_DEADLINE_S = 60.0  # generous bound for "eventually"; never asserted as a duration


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedTritonServer]:
    server = ManagedTritonServer(tmp_path_factory.mktemp("triton-data"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _models(tmp_path: Path) -> dict[str, tuple[Path, ModelManifest]]:
    return {
        "acme.ts-doubler:1": make_torchscript_model(tmp_path),
        "acme.py-doubler:1": make_python_model(tmp_path),
        "traffic-police.flow-smoother:1": flow_smoother.build(tmp_path / "smoother"),
    }


def _inputs(manifest: ModelManifest, rows: int, seed: int) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    name = manifest.inputs[0].name
    return {name: (rng.random((rows, 30)) * 50).astype(np.float32)}


async def _eventually(probe: Any) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _DEADLINE_S
    while not await probe():
        assert loop.time() < deadline, "the condition did not hold before the deadline"
        await asyncio.sleep(0.1)


def test_server_is_not_on_the_platform_port_and_serves_explicit_loads(
    triton: ManagedTritonServer, tmp_path: Path
) -> None:
    assert triton.is_ready()
    assert not triton.address.endswith(":8000")
    client = triton_http.InferenceServerClient(triton.address)
    try:
        assert client.get_model_repository_index() == []  # explicit mode: nothing loaded by itself
    finally:
        client.close()


def test_outputs_match_the_embedded_runtime(triton: ManagedTritonServer, tmp_path: Path) -> None:
    models = _models(tmp_path)

    async def scenario() -> list[tuple[dict[str, Any], dict[str, Any]]]:
        remote = TritonRuntime(triton)
        local = EmbeddedRuntime()
        pairs = []
        try:
            for seed, (key, (path, manifest)) in enumerate(models.items()):
                await remote.load(key, manifest, path)
                assert remote.is_ready(key)
                local.register(key, manifest, path)
                for rows in (1, 3):
                    inputs = _inputs(manifest, rows, seed * 10 + rows)
                    pairs.append((await remote.infer(key, inputs), await local.infer(key, inputs)))
        finally:
            await remote.close()
            await local.close()
        return pairs

    for remote_out, local_out in asyncio.run(scenario()):
        assert remote_out.keys() == local_out.keys()
        for name in remote_out:
            assert remote_out[name].dtype == local_out[name].dtype
            np.testing.assert_array_equal(remote_out[name], local_out[name])


def test_concurrent_requests_each_get_their_own_rows(
    triton: ManagedTritonServer, tmp_path: Path
) -> None:
    path, manifest = make_torchscript_model(tmp_path)
    requests = [np.full((1 + i % 3, 4), i, dtype=np.float32) for i in range(24)]

    async def scenario() -> list[dict[str, Any]]:
        runtime = TritonRuntime(triton)
        try:
            await runtime.load("acme.batched:1", manifest, path)
            return await asyncio.gather(
                *(runtime.infer("acme.batched:1", {"x": x}) for x in requests)
            )
        finally:
            await runtime.close()

    for x, out in zip(requests, asyncio.run(scenario()), strict=True):
        np.testing.assert_array_equal(out["y"], x * 2)


def test_errors_are_mapped(triton: ManagedTritonServer, tmp_path: Path) -> None:
    path, manifest = make_torchscript_model(tmp_path)
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("other.py", "x = 1\n")
    broken_manifest = doubler_manifest("python", entrypoint="doubler:Doubler")

    async def scenario() -> None:
        runtime = TritonRuntime(triton)
        try:
            with pytest.raises(ModelUnavailableError, match="not registered"):
                await runtime.infer("nobody.nothing:1", {"x": np.ones((1, 2), np.float32)})
            await runtime.load("acme.limits:1", manifest, path)
            with pytest.raises(InferenceInputError, match="batch-size must be <= 8"):
                await runtime.infer("acme.limits:1", {"x": np.ones((9, 2), np.float32)})
            with pytest.raises(ModelUnavailableError, match="failed to load on Triton"):
                await runtime.load("acme.broken:1", broken_manifest, broken)
            assert not runtime.is_ready("acme.broken:1")
            assert runtime.is_ready("acme.limits:1")
        finally:
            await runtime.close()

    asyncio.run(scenario())


def test_unload_removes_the_model_and_the_server_stays_up(
    triton: ManagedTritonServer, tmp_path: Path
) -> None:
    path, manifest = make_torchscript_model(tmp_path)
    client = triton_http.InferenceServerClient(triton.address)

    async def scenario() -> None:
        runtime = TritonRuntime(triton)
        try:
            await runtime.load("acme.unload-me:1", manifest, path)
            assert client.is_model_ready("acme--unload-me--1")
            await runtime.unload("acme.unload-me:1")
            assert not runtime.is_ready("acme.unload-me:1")
            with pytest.raises(ModelUnavailableError):
                await runtime.infer("acme.unload-me:1", {"x": np.ones((1, 2), np.float32)})
        finally:
            await runtime.close()

    try:
        asyncio.run(scenario())
        assert not client.is_model_ready("acme--unload-me--1")
        assert not (triton.repository / "acme--unload-me--1").exists()
        assert client.is_server_ready()
    finally:
        client.close()


def test_an_owned_server_is_restarted_after_a_crash(tmp_path: Path) -> None:
    path, manifest = make_torchscript_model(tmp_path)
    x = np.ones((2, 3), np.float32)

    async def scenario() -> int:
        runtime = TritonRuntime.managed(tmp_path / "data", probe_interval_s=0.1)
        try:
            await runtime.load("acme.phoenix:1", manifest, path)
            server = runtime.server
            assert server is not None and server.pid is not None
            os.kill(server.pid, signal.SIGKILL)

            async def serves_again() -> bool:
                try:
                    out = await runtime.infer("acme.phoenix:1", {"x": x})
                except ModelUnavailableError:
                    return False
                return bool(np.array_equal(out["y"], x * 2))

            await _eventually(serves_again)
            return server.starts
        finally:
            await runtime.close()
            assert runtime.server is not None and not runtime.server.is_running()

    assert asyncio.run(scenario()) >= 2


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    server = ManagedTritonServer(
        tmp_path,
        extra_args=["--model-repository=/nonexistent/citybrain-models"],
        startup_timeout_s=20,
    )
    with pytest.raises(TritonServerError, match="exited with status") as info:
        server.start()
    assert "/nonexistent/citybrain-models" in info.value.message  # the log tail says why
    assert not server.is_running()


def test_zz_backend_failure_and_recovery(triton: ManagedTritonServer, tmp_path: Path) -> None:
    """Kill tritonserver during a stream of requests, then restart it: 503s, then recovery."""
    path, manifest = flow_smoother.build(tmp_path)
    key = "traffic-police.flow-smoother:7"
    flow = np.random.default_rng(0).random((2, 60)).astype(np.float32)

    async def scenario() -> None:
        runtime = TritonRuntime(triton, probe_interval_s=0.1)
        errors: list[BaseException] = []
        successes = 0
        stop = asyncio.Event()

        async def stream() -> None:
            nonlocal successes
            while not stop.is_set():
                try:
                    await runtime.infer(key, {"flow": flow})
                    successes += 1
                except Exception as e:  # every failure must be a ModelUnavailableError
                    errors.append(e)
                await asyncio.sleep(0.005)

        try:
            await runtime.load(key, manifest, path)
            workers = [asyncio.create_task(stream()) for _ in range(4)]
            await _eventually(lambda: _true(successes > 20))
            assert triton.pid is not None
            os.kill(triton.pid, signal.SIGKILL)
            await _eventually(lambda: _true(bool(errors)))
            assert not runtime.is_ready(key)
            with pytest.raises(ModelUnavailableError, match="unreachable") as info:
                await runtime.infer(key, {"flow": flow})
            assert info.value.status == 503 and info.value.headers["Retry-After"] == "1"

            await asyncio.to_thread(triton.restart)  # an empty server: the model must come back
            before = successes
            await _eventually(lambda: _true(successes > before + 20 and runtime.is_ready(key)))
            stop.set()
            await asyncio.gather(*workers)
        finally:
            stop.set()
            await runtime.close()
        assert errors, "the kill should have failed some requests"
        assert all(isinstance(e, ModelUnavailableError) for e in errors), {type(e) for e in errors}
        out = await _infer_once(triton, key, manifest, path, flow)
        np.testing.assert_allclose(
            out,
            flow_smoother.FlowSmoother()(__import__("torch").from_numpy(flow)).numpy(),
            rtol=1e-6,
        )

    asyncio.run(scenario())


async def _true(value: bool) -> bool:
    return value


async def _infer_once(
    triton: ManagedTritonServer,
    key: str,
    manifest: ModelManifest,
    path: Path,
    flow: np.ndarray[Any, Any],
) -> np.ndarray[Any, Any]:
    runtime = TritonRuntime(triton)
    try:
        await runtime.load(key, manifest, path)
        return (await runtime.infer(key, {"flow": flow}))["smoothed"]
    finally:
        await runtime.close()


def test_onnx_runs_through_the_python_backend_like_embedded(
    triton: ManagedTritonServer, tmp_path: Path
) -> None:
    from tests.utils.bentoml_models import make_onnx_graph

    graph = make_onnx_graph(tmp_path / "affine.onnx")
    manifest = ModelManifest.model_validate(
        {
            "format": "onnx",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
            "batching": {"max_batch_size": 8},
        }
    )
    x = np.random.default_rng(3).standard_normal((4, 3)).astype(np.float32)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        remote = TritonRuntime(triton)
        local = EmbeddedRuntime()
        try:
            await remote.load("acme.onnx-affine:1", manifest, graph)
            local.register("acme.onnx-affine:1", manifest, graph)
            return (
                await remote.infer("acme.onnx-affine:1", {"x": x}),
                await local.infer("acme.onnx-affine:1", {"x": x}),
            )
        finally:
            await remote.close()
            await local.close()

    remote_out, local_out = asyncio.run(scenario())
    assert remote_out["y"].dtype == np.float32
    np.testing.assert_array_equal(remote_out["y"], local_out["y"])
