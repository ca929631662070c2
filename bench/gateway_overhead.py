"""What the gateway costs, side by side in one run, on the same models and the same client.

For a no-op model and a small TorchScript MLP (256 → 1024 → 256, FP32, dynamic batching up to
32 rows), measures p50/p99 latency and requests/s at concurrency 1 and 32 of:

  (i)   the embedded runtime called in-process (no HTTP);
  (ii)  the platform's v2 gateway over HTTP, with authentication, tier policy and metering
        (``citybrain serve`` in its own process, SQLite, a durable usage spool);
  (iii) kserve's ``ModelServer`` serving the same model in its own process;
  (iv)  the Triton Inference Server bundled with ``nvidia-pytriton`` serving the same model
        (python backend; the MLP with Triton's dynamic batcher).

Every HTTP server is driven by the same client: ``tritonclient.http`` with binary tensors, one
gevent greenlet per concurrent caller. Client and server share the machine's cores, equally for
every server. The servers run side by side and take turns: each cell is measured in rounds, one
turn per server per round, and its req/s is the median round, so the machine's drift during the
run falls on every server alike. After each of the gateway's turns the bench waits until its
usage spool has drained into the database, so no server runs while the gateway still flushes.
Prints a table and the ratios gateway/kserve and gateway/triton. Bounded: about two minutes.
The no-op model is python code published by a government tenant and trusted by the operator
(``citybrain models trust``), so it runs in process as the others' do; untrusted python code
would run in a sandbox worker, one socket round trip more per call.

Run: ``.venv/bin/python bench/gateway_overhead.py [--seconds S] [--rounds N]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.utils.server import ServerFailed, ServerProcess, free_port, platform_server  # noqa: E402

SECONDS = 2.0  # per round
ROUNDS = 3
CONCURRENCY = (1, 32)
MLP_DIM = 256

NOOP_SOURCE = '''
class Noop:
    """Returns its input."""

    def load(self):
        pass

    def predict(self, inputs):
        return {"y": inputs["x"]}
'''


# --------------------------------------------------------------------------- the models


def build_models(work: Path) -> dict[str, tuple[Path, Any, np.ndarray]]:
    """Artifacts, manifests and one request's input of each model."""
    import torch

    from model_store.formats.torchscript import save_torchscript
    from model_store.manifest import BatchingConfig, ModelManifest, TensorSpec

    class MLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(MLP_DIM, 1024)
            self.fc2 = torch.nn.Linear(1024, MLP_DIM)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x)))

    torch.manual_seed(0)
    mlp_path = save_torchscript(MLP().eval(), work / "mlp.pt")
    mlp = ModelManifest(
        format="torchscript",
        inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, MLP_DIM])],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, MLP_DIM])],
        batching=BatchingConfig(max_batch_size=32, max_queue_delay_ms=1.0, max_queue_size=1024),
    )
    import zipfile

    noop_path = work / "noop.zip"
    with zipfile.ZipFile(noop_path, "w") as z:
        z.writestr("noop.py", NOOP_SOURCE)
    noop = ModelManifest(
        format="python",
        entrypoint="noop:Noop",
        inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 4])],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, 4])],
        batching=BatchingConfig(max_batch_size=0, max_queue_size=1024),
    )
    rng = np.random.default_rng(0)
    return {
        "noop": (noop_path, noop, rng.standard_normal((1, 4)).astype(np.float32)),
        "mlp": (mlp_path, mlp, rng.standard_normal((1, MLP_DIM)).astype(np.float32)),
    }


# --------------------------------------------------------------------------- measuring


def summarize(latencies: list[float], elapsed: float) -> dict[str, float]:
    lat = np.array(latencies) * 1000.0
    return {
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "rps": len(lat) / elapsed,
    }


def measure_embedded(
    models: dict[str, tuple[Path, Any, np.ndarray]],
) -> dict[tuple[str, int], dict[str, float]]:
    from model_store.runtimes.embedded import EmbeddedRuntime
    from model_store.sandbox import Isolation

    async def go() -> dict[tuple[str, int], dict[str, float]]:
        runtime = EmbeddedRuntime(isolation=Isolation(trusted=lambda _key: True))
        out = {}
        try:
            for name, (path, manifest, x) in models.items():
                await runtime.load(name, manifest, path)
                for c in CONCURRENCY:
                    latencies: list[float] = []
                    deadline = time.perf_counter() + SECONDS

                    async def client(
                        name: str = name,
                        x: np.ndarray = x,
                        latencies: list[float] = latencies,
                        deadline: float = deadline,
                    ) -> None:
                        while time.perf_counter() < deadline:
                            t = time.perf_counter()
                            await runtime.infer(name, {"x": x})
                            latencies.append(time.perf_counter() - t)

                    start = time.perf_counter()
                    await asyncio.gather(*(client() for _ in range(c)))
                    out[(name, c)] = summarize(latencies, time.perf_counter() - start)
        finally:
            await runtime.close()
        return out

    return asyncio.run(go())


class HttpTarget:
    """One HTTP server under test, with a tritonclient per concurrency kept open across rounds."""

    def __init__(
        self,
        label: str,
        port: int,
        names: dict[str, str],
        headers: dict[str, str] | None = None,
        settle: Any = None,
    ) -> None:
        self.label = label
        self.port = port
        self.names = names  # bench model -> the server's model name
        self.headers = headers
        self.settle = settle  # called after each round: the server's deferred work finishes
        self._clients: dict[int, Any] = {}

    def client(self, concurrency: int) -> Any:
        import tritonclient.http as triton

        if concurrency not in self._clients:
            self._clients[concurrency] = triton.InferenceServerClient(
                f"127.0.0.1:{self.port}", concurrency=concurrency, network_timeout=60
            )
        return self._clients[concurrency]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def greenlet_callers(
    call: Callable[[], object], concurrency: int, seconds: float
) -> tuple[list[float], int]:
    """Run ``call`` in a loop from ``concurrency`` gevent greenlets for ``seconds``.

    Returns the latency of each call that succeeded and the number that raised.
    """
    import gevent

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    def caller() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            try:
                call()
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - t)

    gevent.joinall([gevent.spawn(caller) for _ in range(concurrency)])
    return latencies, errors


def http_round(
    target: HttpTarget, model: str, x: np.ndarray, concurrency: int, seconds: float
) -> tuple[list[float], float, int]:
    """Drive one server for ``seconds``: latencies, elapsed time, errors."""
    import tritonclient.http as triton

    client = target.client(concurrency)
    name = target.names[model]
    inp = triton.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    out = [triton.InferRequestedOutput("y", binary_data=True)]
    start = time.perf_counter()
    latencies, errors = greenlet_callers(
        lambda: client.infer(name, [inp], outputs=out, headers=target.headers),
        concurrency,
        seconds,
    )
    elapsed = time.perf_counter() - start
    if target.settle is not None:
        target.settle()
    return latencies, elapsed, errors


def measure_interleaved(
    targets: list[HttpTarget], models: dict[str, tuple[Path, Any, np.ndarray]]
) -> dict[str, dict[tuple[str, int], dict[str, float]]]:
    """Every cell in ROUNDS rounds, the servers taking turns within each round.

    Taking turns spreads the machine's drift (other tenants of the host, frequency, cache
    state) evenly over the servers compared; a cell's req/s is the median of its rounds, its
    latency percentiles are over all its rounds' calls.
    """
    results: dict[str, dict[tuple[str, int], dict[str, float]]] = {t.label: {} for t in targets}
    for name, (_path, _manifest, x) in models.items():
        for c in CONCURRENCY:
            for t in targets:  # warm up: load the model, open the connections
                http_round(t, name, x, c, 0.3)
            rounds: dict[str, list[tuple[list[float], float, int]]] = {t.label: [] for t in targets}
            for _ in range(ROUNDS):
                for t in targets:
                    rounds[t.label].append(http_round(t, name, x, c, SECONDS))
            for label, rs in rounds.items():
                latencies = [lat for r in rs for lat in r[0]]
                cell = summarize(latencies, sum(r[1] for r in rs))
                cell["rps"] = float(np.median([len(r[0]) / r[1] for r in rs]))
                cell["errors"] = sum(r[2] for r in rs)
                results[label][(name, c)] = cell
    return results


# --------------------------------------------------------------------------- (ii) the gateway


def start_gateway(
    work: Path, models: dict[str, tuple[Path, Any, np.ndarray]]
) -> tuple[ServerProcess, int, dict[str, str], dict[str, str], dict[str, str]]:
    import httpx

    from tests.utils.city import migrate_and_seed
    from tests.utils.publish import publish_model

    data = work / "citybrain"
    url = f"sqlite:///{data / 'citybrain.db'}"
    keys = migrate_and_seed(url).keys
    # Flush every half second (default 2 s), so a round's events reach the database within
    # the round and their flush is charged to the gateway, not to the next server's turn.
    env = {"CITYBRAIN_BILLING__FLUSH_INTERVAL_S": "0.5"}
    # The log is a file, not a pipe: a chatty server must never block on a full pipe.
    proc = platform_server(database_url=url, data_dir=data, log=work / "gateway.log", env=env)
    proc.ready_timeout_s = 60
    proc.start()
    owner = {"Authorization": f"Bearer {keys['traffic-police']}"}
    handles = {}
    with httpx.Client(base_url=proc.url, headers=owner, timeout=60) as c:
        for name, (path, manifest, _x) in models.items():
            handle = publish_model(
                c,
                name=f"bench-{name}",
                title=name,
                domain="other",
                artifact=path.read_bytes(),
                manifest=manifest.model_dump_json(),
            )
            handles[name] = handle
            if manifest.format == "python":
                _trust(url, handle)
    # A consumer tenant's key: the calls go through auth, tier policy and metering. The
    # operator's key reads /metrics.
    return (
        proc,
        proc.port,
        handles,
        {"Authorization": f"Bearer {keys['parkeasy']}"},
        {"Authorization": f"Bearer {keys['data-bureau']}"},
    )


def _trust(url: str, handle: str) -> None:
    """The operator trusts the (government) no-op model to run in process, before its first
    call loads it."""
    from marketplace.catalog.trust import set_trusted_code
    from marketplace.cli._common import operator_principal
    from marketplace.db import make_engine, make_session_factory, transaction

    engine = make_engine(url)
    with transaction(make_session_factory(engine)) as session:
        set_trusted_code(session, operator_principal(session), handle, True)
    engine.dispose()


def _drain_spool(port: int, operator: dict[str, str], timeout: float = 30.0) -> None:
    """Wait until the gateway's flusher has delivered every usage event of the last round."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=operator, timeout=5)
        r.raise_for_status()
        backlog = [
            float(line.split()[-1])
            for line in r.text.splitlines()
            if line.startswith("citybrain_billing_spool_backlog_events")
        ]
        if not backlog:
            raise SystemExit("the gateway's /metrics has no spool backlog gauge")
        if backlog[0] == 0:
            return
        time.sleep(0.05)
    raise SystemExit("the gateway's usage spool did not drain")


# --------------------------------------------------------------------------- (iii) kserve


def kserve_main(port: int, grpc_port: int, work: Path) -> None:
    """Child process: serve both models with kserve's ModelServer."""
    import logging

    sys.argv = sys.argv[:1]
    import kserve
    import torch
    from kserve import InferOutput, InferResponse

    for name in ("uvicorn.access", "kserve.trace", "kserve", "uvicorn"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(1)

    class Served(kserve.Model):
        def __init__(self, name: str, fn: Any) -> None:
            super().__init__(name)
            self.fn = fn
            self.ready = True

        async def predict(
            self, payload: Any, headers: Any = None, response_headers: Any = None
        ) -> Any:
            x = payload.inputs[0].as_numpy()
            y = self.fn(x)
            out = InferOutput(name="y", shape=list(y.shape), datatype="FP32")
            out.set_data_from_numpy(y, binary_data=True)
            return InferResponse(
                response_id=payload.id or "", model_name=self.name, infer_outputs=[out]
            )

    mlp = torch.jit.load(str(work / "mlp.pt")).eval()

    def run_mlp(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return mlp(torch.from_numpy(np.ascontiguousarray(x))).numpy()

    server = kserve.ModelServer(http_port=port, grpc_port=grpc_port, enable_grpc=False, workers=1)
    for name in ("uvicorn.access", "kserve.trace", "kserve", "uvicorn"):  # after its log setup
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([Served("noop", lambda x: x), Served("mlp", run_mlp)])


def start_kserve(work: Path) -> tuple[ServerProcess, int]:
    port = free_port()
    proc = ServerProcess(
        [sys.executable, __file__, "--kserve", str(port), str(free_port()), str(work)],
        port,
        work / "kserve.log",
        what="kserve's ModelServer",
        ready_timeout_s=60,
    )
    return proc.start(), port


# --------------------------------------------------------------------------- (iv) triton

TRITON_MODEL = """
import sys
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.kind = "{kind}"
        if self.kind == "mlp":
            import torch
            torch.set_num_threads(1)
            self.torch = torch
            self.model = torch.jit.load("{artifact}").eval()

    def execute(self, requests):
        xs = [pb_utils.get_input_tensor_by_name(r, "x").as_numpy() for r in requests]
        if self.kind == "mlp":
            with self.torch.inference_mode():
                ys = self.model(self.torch.from_numpy(np.concatenate(xs))).numpy()
            outs = np.split(ys, np.cumsum([len(x) for x in xs])[:-1])
        else:
            outs = xs
        return [pb_utils.InferenceResponse([pb_utils.Tensor("y", y)]) for y in outs]
"""

TRITON_CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: {batch}
input [{{ name: "x", data_type: TYPE_FP32, dims: [ {dim} ] }}]
output [{{ name: "y", data_type: TYPE_FP32, dims: [ {dim} ] }}]
instance_group [{{ kind: KIND_CPU, count: 1 }}]
{batcher}
"""


def start_triton(work: Path) -> tuple[ServerProcess, int] | None:
    try:
        import pytriton
    except ImportError:
        print("(iv) skipped: nvidia-pytriton is not installed")
        return None
    bundled = Path(pytriton.__file__).parent / "tritonserver"
    server = work / "tritonserver"
    for part in ("bin", "backends", "caches"):
        shutil.copytree(bundled / part, server / part)
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    shutil.copy(
        bundled / "python_backend_stubs" / ver / "triton_python_backend_stub",
        server / "backends" / "python",
    )
    repo = work / "triton-models"
    for name, batch, dim, batcher in (
        ("noop", 32, 4, ""),
        ("mlp", 32, MLP_DIM, "dynamic_batching { max_queue_delay_microseconds: 1000 }"),
    ):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(
            TRITON_CONFIG.format(name=name, batch=batch, dim=dim, batcher=batcher)
        )
        (repo / name / "1" / "model.py").write_text(
            TRITON_MODEL.format(kind=name, artifact=work / "mlp.pt")
        )
    http, grpc = free_port(), free_port()
    site = sysconfig.get_paths()["purelib"]
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": f"{sysconfig.get_config_var('LIBDIR')}:{Path(site) / 'nvidia_pytriton.libs'}",
        "PYTHONPATH": site,
        # The python backend's stub runs the first python3 on PATH: it must be this venv's
        # (pyenv's own has numpy 2, and the models then fail to load).
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    proc = ServerProcess(
        [
            str(server / "bin" / "tritonserver"),
            f"--model-repository={repo}",
            f"--backend-directory={server / 'backends'}",
            f"--cache-directory={server / 'caches'}",
            "--http-address=127.0.0.1",
            f"--http-port={http}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={grpc}",
            "--allow-metrics=false",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            "--disable-auto-complete-config",
            "--strict-readiness=true",
            f"--backend-config=python,shm-region-prefix-name=cbbench{os.getpid()}",
            "--backend-config=python,shm-default-byte-size=4194304",
            "--log-verbose=0",
        ],
        http,
        work / "triton.log",
        env=env,
        what="tritonserver",
        ready_timeout_s=60,
    )
    try:
        proc.start()
    except ServerFailed as e:
        print(f"(iv) skipped: {e}")
        return None
    return proc, http


# --------------------------------------------------------------------------- main


def main() -> None:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="citybrain-bench-"))
    procs: list[ServerProcess] = []
    try:
        models = build_models(work)
        results: dict[str, dict[tuple[str, int], dict[str, float]]] = {}
        results["(i) embedded, in-process"] = measure_embedded(models)

        gw, gw_port, handles, consumer, operator = start_gateway(work, models)
        procs.append(gw)
        targets = [
            HttpTarget(
                "(ii) gateway over HTTP",
                gw_port,
                handles,
                consumer,
                settle=lambda: _drain_spool(gw_port, operator),
            )
        ]
        ks, ks_port = start_kserve(work)
        procs.append(ks)
        targets.append(HttpTarget("(iii) kserve ModelServer", ks_port, {m: m for m in models}))
        triton = start_triton(work)
        if triton is not None:
            procs.append(triton[0])
            targets.append(HttpTarget("(iv) tritonserver", triton[1], {m: m for m in models}))
        try:
            results.update(measure_interleaved(targets, models))
        finally:
            for t in targets:
                t.close()
    finally:
        for p in procs:
            p.stop(grace_s=15)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\n{os.cpu_count()} CPUs; {ROUNDS} rounds of {SECONDS:g} s per cell, servers taking turns;"
        " req/s is the median round; tritonclient.http, binary tensors\n"
    )
    print(
        f"{'setup':30} {'model':5} {'conc':>4} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>9} {'errors':>6}"
    )
    for setup, cells in results.items():
        for (name, c), r in sorted(cells.items()):
            print(
                f"{setup:30} {name:5} {c:>4} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['rps']:9.0f} {int(r.get('errors', 0)):>6}"
            )
    print("\nratios (req/s):")
    gw = results["(ii) gateway over HTTP"]
    for other in ("(iii) kserve ModelServer", "(iv) tritonserver", "(i) embedded, in-process"):
        if other not in results:
            continue
        for name in models:
            for c in CONCURRENCY:
                ratio = gw[(name, c)]["rps"] / results[other][(name, c)]["rps"]
                print(f"  gateway / {other:28} {name:5} conc {c:>2}: {ratio:5.2f}x")
    print(f"\nran in {time.monotonic() - started:.0f} s")
    print(
        json.dumps(
            {s: {f"{n}@{c}": r for (n, c), r in cells.items()} for s, cells in results.items()}
        )
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--kserve":
        kserve_main(int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
        parser.add_argument(
            "--seconds", type=float, default=SECONDS, help=f"seconds per turn (default {SECONDS:g})"
        )
        parser.add_argument(
            "--rounds", type=int, default=ROUNDS, help=f"rounds per cell (default {ROUNDS})"
        )
        args = parser.parse_args()
        SECONDS, ROUNDS = args.seconds, args.rounds
        main()
