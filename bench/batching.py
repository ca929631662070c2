"""Throughput of the embedded runtime with dynamic batching on vs off, side by side.

A small TorchScript MLP (256 → 1024 → 256, FP32) serves single-row requests from 1, 8 and
32 concurrent clients; each configuration runs for a fixed time. Prints requests/second for
both modes and their ratio (the goal is ≥ 3× at concurrency 32). Bounded: about 20 s.

Run: ``.venv/bin/python bench/batching.py``
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_store.formats.torchscript import save_torchscript
from model_store.manifest import BatchingConfig, ModelManifest, TensorSpec
from model_store.runtimes.embedded import EmbeddedRuntime

SECONDS_PER_RUN = 2.5
CONCURRENCY = (1, 8, 32)


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(256, 1024)
        self.fc2 = torch.nn.Linear(1024, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def manifest(batched: bool) -> ModelManifest:
    spec = [-1, 256]
    return ModelManifest(
        format="torchscript",
        inputs=[TensorSpec(name="x", datatype="FP32", shape=spec)],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=spec)],
        batching=BatchingConfig(
            max_batch_size=32 if batched else 0, max_queue_delay_ms=2.0, max_queue_size=1024
        ),
    )


async def run(runtime: EmbeddedRuntime, key: str, concurrency: int) -> tuple[float, float]:
    x = np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32)
    done = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + SECONDS_PER_RUN

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await runtime.infer(key, {"x": x})
            latencies.append(time.perf_counter() - start)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return done / elapsed, float(np.percentile(latencies, 50) * 1000)


async def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_torchscript(MLP(), Path(tmp) / "mlp.pt")
        runtime = EmbeddedRuntime(1 << 30, 4)
        await runtime.load("off", manifest(False), path)
        await runtime.load("on", manifest(True), path)
        for key in ("off", "on"):  # warm up both
            await run_short(runtime, key)
        print(f"embedded runtime, MLP 256-1024-256 FP32, 1-row requests, {os.cpu_count()} CPUs,")
        print(f"torch threads {torch.get_num_threads()}, {SECONDS_PER_RUN:.1f} s per cell\n")
        print(
            f"{'clients':>7} | {'off req/s':>10} {'p50 ms':>7} | {'on req/s':>10} {'p50 ms':>7}"
            f" | {'ratio':>6} | mean batch"
        )
        for concurrency in CONCURRENCY:
            off, off_p50 = await run(runtime, "off", concurrency)
            before = runtime.stats().models["on"]
            on, on_p50 = await run(runtime, "on", concurrency)
            after = runtime.stats().models["on"]
            batches = after.batches - before.batches
            rows = sum(k * v for k, v in after.batch_sizes.items()) - sum(
                k * v for k, v in before.batch_sizes.items()
            )
            print(
                f"{concurrency:>7} | {off:>10.0f} {off_p50:>7.2f} | {on:>10.0f} {on_p50:>7.2f}"
                f" | {on / off:>5.2f}x | {rows / max(batches, 1):.1f}"
            )
        await runtime.close()


async def run_short(runtime: EmbeddedRuntime, key: str) -> None:
    x = np.zeros((1, 256), np.float32)
    await asyncio.gather(*(runtime.infer(key, {"x": x}) for _ in range(64)))


if __name__ == "__main__":
    asyncio.run(main())
