"""Throughput of the embedded runtime with dynamic batching on vs off, side by side.

A small TorchScript MLP (256 → 1024 → 256, FP32) serves single-row requests from 1, 8 and
32 concurrent clients; each configuration runs for a fixed time, in three interleaved rounds
(this machine's speed drifts). Prints the bare ``predict`` cost per row alone and in a batch of
32 (the ceiling of what batching can gain), then per level the round with the median ratio:
requests/second for both modes and their ratio (the goal is ≥ 3× at concurrency 32), and the
ratios of all rounds. Bounded: about 40 s.

Run: ``.venv/bin/python bench/batching.py``
"""

from __future__ import annotations

import asyncio
import os
import statistics
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

SECONDS_PER_RUN = 2.0
ROUNDS = 3
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


def predict_cost(path: Path) -> tuple[float, float]:
    """Seconds per row of a bare ``predict`` on 1 row and on 32 rows (the ceiling of the ratio)."""
    from model_store.formats import load_model

    model = load_model(manifest(False), path)
    per_row = []
    for rows in (1, 32):
        x = np.ones((rows, 256), np.float32)
        for _ in range(100):
            model.predict({"x": x})
        start, n = time.perf_counter(), 1000
        for _ in range(n):
            model.predict({"x": x})
        per_row.append((time.perf_counter() - start) / n / rows)
    return per_row[0], per_row[1]


async def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_torchscript(MLP(), Path(tmp) / "mlp.pt")
        runtime = EmbeddedRuntime(1 << 30, 4)
        await runtime.load("off", manifest(False), path)
        await runtime.load("on", manifest(True), path)
        for key in ("off", "on"):  # warm up both
            await run_short(runtime, key)
        one, batched = predict_cost(path)
        print(f"embedded runtime, MLP 256-1024-256 FP32, 1-row requests, {os.cpu_count()} CPUs,")
        print(
            f"torch threads {torch.get_num_threads()}, {SECONDS_PER_RUN:.1f} s per cell, "
            f"median of {ROUNDS} interleaved rounds"
        )
        print(
            f"bare predict: {one * 1e6:.1f} us a row alone, {batched * 1e6:.1f} us a row in 32 "
            f"(the most batching can gain here: {one / batched:.1f}x)\n"
        )
        print(
            f"{'clients':>7} | {'off req/s':>10} {'p50 ms':>7} | {'on req/s':>10} {'p50 ms':>7}"
            f" | {'ratio':>6} | mean batch"
        )
        cells: dict[int, list[tuple[float, float, float, float, float]]] = {
            c: [] for c in CONCURRENCY
        }
        batch_means: dict[int, list[float]] = {c: [] for c in CONCURRENCY}
        for _ in range(ROUNDS):
            for concurrency in CONCURRENCY:
                off, off_p50 = await run(runtime, "off", concurrency)
                before = runtime.stats().models["on"]
                on, on_p50 = await run(runtime, "on", concurrency)
                after = runtime.stats().models["on"]
                batches = after.batches - before.batches
                rows = sum(k * v for k, v in after.batch_sizes.items()) - sum(
                    k * v for k, v in before.batch_sizes.items()
                )
                cells[concurrency].append((on / off, off, off_p50, on, on_p50))
                batch_means[concurrency].append(rows / max(batches, 1))
        for concurrency in CONCURRENCY:
            ratio, off, off_p50, on, on_p50 = sorted(cells[concurrency])[ROUNDS // 2]
            print(
                f"{concurrency:>7} | {off:>10.0f} {off_p50:>7.2f} | {on:>10.0f} {on_p50:>7.2f}"
                f" | {ratio:>5.2f}x | {statistics.median(batch_means[concurrency]):.1f}"
                f"   (ratios of the rounds: "
                f"{', '.join(f'{c[0]:.2f}' for c in cells[concurrency])})"
            )
        best_off = max(c[1] for cells_of in cells.values() for c in cells_of)
        top = max(c[3] for c in cells[CONCURRENCY[-1]])
        print(
            f"\n{CONCURRENCY[-1]} clients batched against the best unbatched rate at any level "
            f"({best_off:.0f} req/s): {statistics.median(c[3] for c in cells[CONCURRENCY[-1]]) / best_off:.2f}x "
            f"(best round {top / best_off:.2f}x)"
        )
        await runtime.close()


async def run_short(runtime: EmbeddedRuntime, key: str) -> None:
    x = np.zeros((1, 256), np.float32)
    await asyncio.gather(*(runtime.infer(key, {"x": x}) for _ in range(64)))


if __name__ == "__main__":
    asyncio.run(main())
