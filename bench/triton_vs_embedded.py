"""One model served five ways, side by side: embedded, TritonRuntime, Triton direct, and
through the platform's gateway on the embedded runtime and on Triton.

The built-in ``traffic-police.flow-smoother`` (TorchScript, batched, max queue delay 2 ms)
smooths a 1×60 FP32 request. For each path, in one run, on one machine:

* sequential: one request at a time for ``SECONDS_PER_RUN`` → p50, p99, requests/s;
* concurrent: ``CONCURRENCY`` clients for ``SECONDS_PER_RUN`` → requests/s.

Paths: ``EmbeddedRuntime`` in-process; ``TritonRuntime`` (tritonclient.http.aio to a
``ManagedTritonServer``, same process as the caller); Triton direct (the sync
``tritonclient.http`` client sequentially, the aio client concurrently, no runtime layer);
and the gateway — a ``citybrain serve`` subprocess (SQLite, metering on) with the same artifact
uploaded twice through the API, once with ``runtime: "embedded"`` and once with
``runtime: "triton"``, the latter served on the same tritonserver as an external Triton
(``CITYBRAIN_TRITON__URL``). Gateway calls use the same stock clients with an API key header,
so "Triton via gateway" vs "Triton direct" is the platform's cost (authentication, resolution,
policy, quota, signature checks, the hop, metering). Ratios are relative to the embedded
runtime, and the summary compares the gateway rows. Bounded: about 60 s plus server starts.

Run: ``.venv/bin/python bench/triton_vs_embedded.py [--seconds S]``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tritonclient.http as triton_http
import tritonclient.http.aio as triton_aio

from model_store.builtin import flow_smoother
from model_store.runtimes.embedded import EmbeddedRuntime
from model_store.runtimes.triton import TritonRuntime
from model_store.triton.server import ManagedTritonServer

SECONDS_PER_RUN = 3.0
CONCURRENCY = 8
KEY = "traffic-police.flow-smoother:1"
ROOT = Path(__file__).resolve().parents[1]
OWNER = "traffic-police"

Call = Callable[[], Awaitable[Any]]


async def sequential(call: Call) -> tuple[float, float, float]:
    for _ in range(20):  # warm-up
        await call()
    latencies: list[float] = []
    end = time.perf_counter() + SECONDS_PER_RUN
    started = time.perf_counter()
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), len(ms) / elapsed


async def concurrent(call: Call) -> float:
    done = 0
    end = time.perf_counter() + SECONDS_PER_RUN

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await call()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return done / (time.perf_counter() - started)


@contextmanager
def gateway(
    tmp: Path, server: ManagedTritonServer, artifact: Path, manifest: Any
) -> Iterator[tuple[str, str, dict[str, str]]]:
    """A server subprocess whose Triton is ``server`` (external); the artifact uploaded as two
    models, embedded and triton. Yields (address, consumer key, runtime → handle)."""
    import httpx

    from tests.utils.city import migrate_and_seed
    from tests.utils.publish import publish_model
    from tests.utils.server import running_platform_server

    database_url = f"sqlite:///{tmp / 'citybrain.db'}"
    keys = migrate_and_seed(database_url).keys
    env = {
        "CITYBRAIN_TRITON__URL": server.url,
        "CITYBRAIN_TRITON__REPOSITORY_DIR": str(server.repository),
    }
    with running_platform_server(
        database_url=database_url, data_dir=tmp / "var", log=tmp / "server.log", env=env
    ) as platform:
        handles: dict[str, str] = {}
        owner = {"Authorization": f"Bearer {keys[OWNER]}"}
        with httpx.Client(base_url=platform.url, headers=owner, timeout=120) as api:
            for runtime in ("embedded", "triton"):
                handles[runtime] = publish_model(
                    api,
                    name=f"flow-{runtime}",
                    artifact=artifact.read_bytes(),
                    manifest=manifest.model_copy(update={"runtime": runtime}).model_dump(
                        mode="json"
                    ),
                )
        yield f"127.0.0.1:{platform.port}", keys["parkeasy"], handles


async def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    flow = (np.random.default_rng(0).random((1, 60)) * 40).astype(np.float32)
    results: dict[str, tuple[float, float, float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path, manifest = flow_smoother.build(Path(tmp) / "model")

        embedded = EmbeddedRuntime()
        embedded.register(KEY, manifest, path)

        async def call_embedded() -> Any:
            return await embedded.infer(KEY, {"flow": flow})

        results["embedded (in-process)"] = (
            *await sequential(call_embedded),
            await concurrent(call_embedded),
        )
        await embedded.close()

        server = ManagedTritonServer(Path(tmp) / "data")
        await asyncio.to_thread(server.start)
        try:
            runtime = TritonRuntime(server)
            await runtime.load(KEY, manifest, path)

            async def call_runtime() -> Any:
                return await runtime.infer(KEY, {"flow": flow})

            reference = (await call_runtime())["smoothed"]
            results["TritonRuntime"] = (
                *await sequential(call_runtime),
                await concurrent(call_runtime),
            )
            name = runtime.triton_name(KEY)

            sync_client = triton_http.InferenceServerClient(server.address)
            aio_client = triton_aio.InferenceServerClient(server.address)

            def request(module: Any) -> tuple[list[Any], list[Any]]:
                tensor = module.InferInput("flow", [1, 60], "FP32")
                tensor.set_data_from_numpy(flow, binary_data=True)
                return [tensor], [module.InferRequestedOutput("smoothed", binary_data=True)]

            async def call_sync_direct() -> Any:
                inputs, outputs = request(triton_http)
                return sync_client.infer(name, inputs, outputs=outputs).as_numpy("smoothed")

            async def call_aio_direct() -> Any:
                inputs, outputs = request(triton_aio)
                result = await aio_client.infer(name, inputs, outputs=outputs)
                return result.as_numpy("smoothed")

            np.testing.assert_array_equal(await call_sync_direct(), reference)
            results["Triton direct (tritonclient)"] = (
                *await sequential(call_sync_direct),
                await concurrent(call_aio_direct),
            )
            sync_client.close()
            await aio_client.close()
            await runtime.close()

            with gateway(Path(tmp), server, path, manifest) as (address, key, handles):
                auth = {"Authorization": f"Bearer {key}"}
                gw_sync = triton_http.InferenceServerClient(address)
                gw_aio = triton_aio.InferenceServerClient(address)
                for runtime_name, label in (
                    ("embedded", "embedded via gateway"),
                    ("triton", "Triton via gateway"),
                ):
                    handle = handles[runtime_name]

                    async def call_gw_sync(handle: str = handle) -> Any:
                        inputs, outputs = request(triton_http)
                        result = gw_sync.infer(handle, inputs, outputs=outputs, headers=auth)
                        return result.as_numpy("smoothed")

                    async def call_gw_aio(handle: str = handle) -> Any:
                        inputs, outputs = request(triton_aio)
                        result = await gw_aio.infer(handle, inputs, outputs=outputs, headers=auth)
                        return result.as_numpy("smoothed")

                    np.testing.assert_array_equal(await call_gw_sync(), reference)
                    results[label] = (
                        *await sequential(call_gw_sync),
                        await concurrent(call_gw_aio),
                    )
                gw_sync.close()
                await gw_aio.close()
        finally:
            await asyncio.to_thread(server.stop)

    base = results["embedded (in-process)"]
    print(
        f"flow-smoother 1x60 FP32, {SECONDS_PER_RUN:.0f} s per measurement, "
        f"concurrency {CONCURRENCY} for the last columns"
    )
    header = (
        f"{'path':<30} {'p50 ms':>8} {'p99 ms':>8} {'req/s seq':>10} {'req/s c8':>10}"
        f" {'p50 ×emb':>9} {'seq ×emb':>9} {'c8 ×emb':>9}"
    )
    print(header)
    print("-" * len(header))
    for label, (p50, p99, seq, conc) in results.items():
        print(
            f"{label:<30} {p50:>8.2f} {p99:>8.2f} {seq:>10.0f} {conc:>10.0f}"
            f" {p50 / base[0]:>9.2f} {seq / base[2]:>9.2f} {conc / base[3]:>9.2f}"
        )
    print()
    pairs = (
        ("Triton via gateway", "Triton direct (tritonclient)"),
        ("embedded via gateway", "Triton via gateway"),
        ("embedded via gateway", "embedded (in-process)"),
    )
    for a, b in pairs:
        ra, rb = results[a], results[b]
        print(
            f"{a} vs {b}: p50 ×{ra[0] / rb[0]:.2f} ({ra[0] - rb[0]:+.2f} ms), "
            f"p99 ×{ra[1] / rb[1]:.2f}, req/s seq ×{ra[2] / rb[2]:.2f}, c{CONCURRENCY} ×{ra[3] / rb[3]:.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=SECONDS_PER_RUN,
        help=f"seconds per measured run (default {SECONDS_PER_RUN:g})",
    )
    SECONDS_PER_RUN = parser.parse_args().seconds
    asyncio.run(main())
