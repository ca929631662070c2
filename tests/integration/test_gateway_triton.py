"""Models whose manifest says ``runtime: "triton"``, served through the gateway on a real
tritonserver (the one bundled with nvidia-pytriton, on the CPU).

* Managed: the platform starts its own tritonserver on the first call of a Triton model (not on
  port 8000); the outputs equal the embedded runtime's for the same artifact.
* External (``triton.url`` + ``triton.repository_dir``): a tritonserver this module starts is
  killed with SIGKILL during a stream of requests: the gateway answers 503 with a clear error,
  the model's readiness says not ready, failed calls are not billed, and once the server is
  back the gateway serves again by itself (the runtime reloads the model).

The apps run in-process (``TestClient``) on SQLite; the two tritonservers share one prepared
copy of the binary.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http
from typer.testing import CliRunner

from marketplace.cli import app as cli
from marketplace.config import Settings, TritonSettings
from marketplace.migrate import upgrade
from model_store import ModelManifest
from model_store.builtin import flow_smoother
from model_store.runtimes.triton import TritonRuntime
from model_store.sandbox.gate import TenantCodeGate
from model_store.triton.server import ManagedTritonServer
from tests.unit.model_store.factories import make_python_model
from tests.utils.city import City, city_app

pytestmark = pytest.mark.integration

_DEADLINE_S = 60.0  # a generous bound for "eventually"; never asserted as a duration
FLOW = (np.random.default_rng(5).random((3, 60)) * 40).astype(np.float32)
BODY = {
    "inputs": [
        {"name": "flow", "datatype": "FP32", "shape": [3, 60], "data": FLOW.ravel().tolist()}
    ]
}


@dataclass
class Artifact:
    path: Path
    manifest: ModelManifest


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder whose triton/dist (the prepared binary) every server here reuses."""
    return tmp_path_factory.mktemp("triton-shared")


@pytest.fixture(scope="module")
def smoother(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    path, manifest = flow_smoother.build(tmp_path_factory.mktemp("smoother"))
    return Artifact(path, manifest)


@pytest.fixture(scope="module")
def external(shared: Path) -> Iterator[ManagedTritonServer]:
    """A tritonserver the test owns, which the platform reaches as an external Triton."""
    server = ManagedTritonServer(shared, repository=shared / "external-models")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextmanager
def _app(tmp_path: Path, triton: TritonSettings) -> Iterator[City]:
    url = f"sqlite:///{tmp_path / 'citybrain.db'}"
    upgrade(url)
    settings = Settings(data_dir=tmp_path / "var", database_url=url, triton=triton)
    with city_app(settings) as city:
        yield city


def _publish(city: City, artifact: Artifact, runtime: str) -> str:
    """Upload the artifact through the API as a new public model; publish it."""
    manifest = artifact.manifest.model_copy(update={"runtime": runtime})
    return city.model("traffic-police", artifact.path, manifest)


def _smoothed(response: Any) -> np.ndarray[Any, Any]:
    assert response.status_code == 200, response.text
    (out,) = response.json()["outputs"]
    assert out["name"] == "smoothed" and out["datatype"] == "FP32"
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def _appended(city: City) -> int:
    gateway = city.client.app.state.gateway  # type: ignore[attr-defined]
    return int(gateway.usage.status()["appended"])


def _triton(city: City) -> TritonRuntime:
    gateway = city.client.app.state.gateway  # type: ignore[attr-defined]
    runtime = gateway.serving.runtime.made("triton")
    assert isinstance(runtime, TenantCodeGate)  # Triton does not isolate tenant code
    assert isinstance(runtime.inner, TritonRuntime)
    return runtime.inner


def _eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + _DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold before the deadline"
        time.sleep(0.05)


def test_a_managed_triton_serves_uploaded_models_like_the_embedded_runtime(
    tmp_path: Path, shared: Path, smoother: Artifact
) -> None:
    with _app(tmp_path, TritonSettings(data_dir=shared / "triton")) as city:
        on_triton = _publish(city, smoother, "triton")
        embedded = _publish(city, smoother, "embedded")
        gateway = city.client.app.state.gateway  # type: ignore[attr-defined]
        assert gateway.serving.runtime.made("triton") is None  # started on first use only
        auth = city.headers("parkeasy")
        before = _appended(city)

        remote = _smoothed(
            city.client.post(f"/v2/models/{on_triton}/infer", json=BODY, headers=auth)
        )
        local = _smoothed(city.client.post(f"/v2/models/{embedded}/infer", json=BODY, headers=auth))

        np.testing.assert_array_equal(remote, local)
        assert _appended(city) == before + 2
        assert city.client.get(f"/v2/models/{on_triton}/ready", headers=auth).status_code == 200
        runtime = _triton(city)
        server = runtime.server
        assert server is not None and server.is_running()
        assert not server.address.endswith(":8000")
        name = runtime.triton_name(f"{on_triton}:1")
        assert (server.repository / name / "config.pbtxt").is_file()
        direct = triton_http.InferenceServerClient(server.address)
        try:
            assert direct.is_model_ready(name)  # really served by tritonserver
            assert not direct.is_model_ready(runtime.triton_name(f"{embedded}:1"))
        finally:
            direct.close()
    assert server is not None and not server.is_running()  # the platform stopped its server


def _upload_python(city: City, owner: str, tmp_path: Path) -> str:
    path, manifest = make_python_model(tmp_path)
    handle = city.product(owner, kind="model", publish=False)
    r = city.upload_model(owner, handle, path, manifest.model_copy(update={"runtime": "triton"}))
    assert r.status_code == 201, r.text
    r = city.client.post(f"/api/v1/products/{handle}/publish", headers=city.headers(owner))
    assert r.status_code == 200, r.text
    return handle


def test_triton_runs_python_code_only_when_the_operator_trusts_it(
    tmp_path: Path, external: ManagedTritonServer
) -> None:
    """Triton's python stubs share the server's user, files and network: no sandbox."""
    triton = TritonSettings(url=external.url, repository_dir=external.repository)
    x = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
    with _app(tmp_path, triton) as city:
        auth = city.headers("parkeasy")
        untrusted = _upload_python(city, "parkeasy", tmp_path)
        trusted = _upload_python(city, "traffic-police", tmp_path)
        url = f"sqlite:///{tmp_path / 'citybrain.db'}"
        done = CliRunner().invoke(cli, ["--database-url", url, "models", "trust", trusted])
        assert done.exit_code == 0, done.output

        r = city.client.post(f"/v2/models/{untrusted}/infer", json=x, headers=auth)
        assert r.status_code == 503 and "does not isolate it" in r.json()["error"]
        assert city.client.get(f"/v2/models/{untrusted}/ready", headers=auth).status_code == 503
        r = city.client.post(f"/v2/models/{trusted}/infer", json=x, headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [2, 4]
        assert _triton(city).is_ready(f"{trusted}:1")


def test_zz_backend_killed_during_a_stream_503s_unbilled_then_recovers(
    tmp_path: Path, external: ManagedTritonServer, smoother: Artifact
) -> None:
    triton = TritonSettings(
        url=external.url, repository_dir=external.repository, probe_interval_s=0.1
    )
    with _app(tmp_path, triton) as city:
        handle = _publish(city, smoother, "triton")
        auth = city.headers("parkeasy")
        expected = _smoothed(
            city.client.post(f"/v2/models/{handle}/infer", json=BODY, headers=auth)
        )
        assert (external.repository / _triton(city).triton_name(f"{handle}:1")).is_dir()
        billed_before = _appended(city)
        results: list[tuple[int, dict[str, Any], str | None]] = []
        lock = threading.Lock()
        stop = threading.Event()

        crashes: list[BaseException] = []

        def stream() -> None:
            try:
                while not stop.is_set():
                    r = city.client.post(f"/v2/models/{handle}/infer", json=BODY, headers=auth)
                    if r.status_code == 200:
                        np.testing.assert_array_equal(_smoothed(r), expected)
                    with lock:
                        results.append((r.status_code, r.json(), r.headers.get("retry-after")))
                    time.sleep(0.005)
            except BaseException as e:  # reported by the test, not lost in the thread
                crashes.append(e)
                raise

        def count(status: int) -> int:
            assert not crashes, crashes
            with lock:
                return sum(1 for s, _, _ in results if s == status)

        workers = [threading.Thread(target=stream) for _ in range(3)]
        for worker in workers:
            worker.start()
        try:
            _eventually(lambda: count(200) >= 20)
            assert external.pid is not None
            os.kill(external.pid, signal.SIGKILL)
            _eventually(lambda: count(503) >= 5)

            # Down: readiness says so, and a call says why.
            r = city.client.get(f"/v2/models/{handle}/ready", headers=auth)
            assert r.status_code == 503 and r.json()["error"] == f"model '{handle}' is not ready"
            r = city.client.post(f"/v2/models/{handle}/infer", json=BODY, headers=auth)
            assert r.status_code == 503
            assert r.json()["code"] == "ModelUnavailable"
            assert "Triton backend" in r.json()["error"] and "unreachable" in r.json()["error"]
            assert r.headers["retry-after"] == "1"

            external.restart()  # the backend returns, empty: nobody touches the gateway
            served_before = count(200)
            _eventually(lambda: count(200) >= served_before + 20)
        finally:
            stop.set()
            for worker in workers:
                worker.join()
        failures = [(s, body) for s, body, _ in results if s != 200]
        assert failures, "the kill should have failed some calls"
        assert all(s == 503 and body["code"] == "ModelUnavailable" for s, body in failures), {
            (s, body.get("code")) for s, body in failures
        }
        assert all(after == "1" for s, _, after in results if s == 503)
        # Exactly the successful calls were billed; none of the failed ones.
        assert _appended(city) == billed_before + count(200)
        assert city.client.get(f"/v2/models/{handle}/ready", headers=auth).status_code == 200


def test_triton_enabled_starts_the_managed_server_with_the_platform(
    tmp_path: Path, shared: Path
) -> None:
    with _app(tmp_path, TritonSettings(enabled=True, data_dir=shared / "triton")) as city:
        server = _triton(city).server  # made and started at startup, before any Triton call
        assert server is not None and server.is_ready()
        assert not server.address.endswith(":8000")
    assert not server.is_running()
