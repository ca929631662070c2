"""KServe serving end to end, without a cluster: the gateway, a real S3-protocol server and the
platform's predictor, run exactly as its container would.

* Object storage: moto's S3 server, started here as its own process on loopback
  (``moto_server``), reached through s3fs with the standard ``AWS_*`` variables, as in
  production; nothing is patched in-process.
* The platform: the app in-process (``TestClient``, SQLite) with ``CITYBRAIN_KSERVE__*``
  settings. A model version whose manifest says ``runtime: "kserve"`` is exported to
  ``s3://citybrain-models/<name>`` and its InferenceService applied on first use.
* Kubernetes: no API server can run here, so ``FakeKubeAPI`` (tests/utils/kube.py) answers the
  real ``kubernetes`` client. Standing in for KServe's controller and the kubelet, this test
  starts the predictor container the applied object describes: its ``command``, ``args`` and
  ``env`` as rendered, with the S3 credentials a Secret would add, as a local process. Two
  things differ from a pod, both because this is not one: ``--http_port`` is a free port (a
  pod has 8080 to itself) and ``--http_host=127.0.0.1`` is added (a pod binds 0.0.0.0). No
  storage initializer runs, so ``/mnt/models`` is absent and the predictor reads
  ``STORAGE_URI`` from S3 itself. Once it answers ready, the fake reports the object ready at
  its URL, and the gateway forwards v2 calls there.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import httpx
import numpy as np
import pytest

from marketplace.config import KServeSettings, Settings, TritonSettings
from marketplace.migrate import upgrade
from model_store import ModelManifest, ModelUnavailableError, load_model
from model_store.builtin import flow_smoother
from model_store.kserve.storage import export_version
from model_store.manifest import TensorSpec
from model_store.v2 import HEADER_CONTENT_LENGTH, decode_response
from tests.utils.city import City, city_app
from tests.utils.kube import FakeKubeAPI
from tests.utils.s3 import moto_s3
from tests.utils.server import ServerFailed, free_port, wait_http

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "citybrain-models"
_DEADLINE_S = 180.0  # a generous bound for "eventually"; never asserted as a duration
FLOW = (np.random.default_rng(11).random((3, 60)) * 40).astype(np.float32)
BODY = {
    "inputs": [
        {"name": "flow", "datatype": "FP32", "shape": [3, 60], "data": FLOW.ravel().tolist()}
    ]
}

SHOUTER = """
import numpy as np


class Shouter:
    def predict(self, inputs):
        text = inputs["text"]
        upper = np.array([t.decode("utf-8").upper().encode("utf-8") for t in text.ravel()],
                         dtype=object).reshape(text.shape)
        lengths = np.array([len(t) for t in text.ravel()], dtype=np.int64).reshape(text.shape)
        return {"upper": upper, "length": lengths}
"""


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """moto's S3 server as its own process; yields the AWS_* variables that reach it."""
    with (
        moto_s3(tmp_path_factory.mktemp("moto"), (BUCKET,)) as server,
        pytest.MonkeyPatch.context() as patch,
    ):
        for name, value in server.env.items():
            patch.setenv(name, value)
        yield server.env
        fsspec.get_filesystem_class("s3").clear_instance_cache()


@dataclass
class LocalKServe:
    """Runs the predictor container of each created InferenceService as a local process."""

    api: FakeKubeAPI
    s3_env: dict[str, str]
    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)

    def on_create(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        (container,) = obj["spec"]["predictor"]["containers"]
        port = free_port()
        args = [
            f"--http_port={port}" if a.startswith("--http_port=") else a for a in container["args"]
        ]
        env = {e["name"]: e["value"] for e in container["env"]}
        env.update(self.s3_env)  # what the cluster would inject from a Secret
        # The image's python, with model_store installed; here, this checkout on this venv.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        env["PYTHONPATH"] = str(ROOT)
        env["HOME"] = str(self.logs)
        log = self.logs / f"{meta['name']}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*container["command"], *args, "--http_host=127.0.0.1"],
                env=env,
                cwd=self.logs,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        model = meta["annotations"]["citybrain.io/model-name"]

        def report() -> None:
            try:
                wait_http(
                    f"{url}/v2/models/{model}/ready",
                    proc,
                    what="the predictor",
                    timeout_s=_DEADLINE_S,
                    log=log,
                )
            except ServerFailed as e:
                self.api.mark(meta["namespace"], meta["name"], message=str(e))
                return
            self.urls[meta["name"]] = url
            self.api.mark(meta["namespace"], meta["name"], url=url)

        threading.Thread(target=report, daemon=True).start()


@pytest.fixture(scope="module")
def kserve(s3: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKServe]:
    api = FakeKubeAPI().start()
    local = LocalKServe(api, s3, tmp_path_factory.mktemp("predictors"))
    api.on_create = local.on_create
    try:
        yield local
    finally:
        api.stop()
        for proc in local.procs:
            proc.terminate()
        for proc in local.procs:
            proc.wait(timeout=30)


@contextmanager
def _app(tmp_path: Path, kserve: LocalKServe) -> Iterator[City]:
    url = f"sqlite:///{tmp_path / 'citybrain.db'}"
    upgrade(url)
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=url,
        triton=TritonSettings(managed=False),
        kserve=KServeSettings(
            kubeconfig=kserve.api.kubeconfig(tmp_path / "kubeconfig"),
            namespace="citybrain",
            storage_uri=f"s3://{BUCKET}/{{name}}",
            # Triton's ServingRuntime needs a cluster; every format runs on the platform's own.
            predictor="python",
            poll_s=0.1,
            ready_timeout_s=_DEADLINE_S,
        ),
    )
    with city_app(settings) as city:
        yield city


def _publish(city: City, artifact: Path, manifest: ModelManifest, runtime: str) -> str:
    return city.model("traffic-police", artifact, manifest.model_copy(update={"runtime": runtime}))


def _appended(city: City) -> int:
    gateway = city.client.app.state.gateway  # type: ignore[attr-defined]
    return int(gateway.usage.status()["appended"])


def test_the_gateway_forwards_to_the_predictor_serving_the_export_from_s3(
    tmp_path: Path, kserve: LocalKServe
) -> None:
    artifact, manifest = flow_smoother.build(tmp_path / "build")
    expected = load_model(manifest, artifact).predict({"flow": FLOW})["smoothed"]
    with _app(tmp_path, kserve) as city:
        handle = _publish(city, artifact, manifest, "kserve")
        auth = city.headers("parkeasy")
        before = _appended(city)

        r = city.client.post(f"/v2/models/{handle}/infer", json=BODY, headers=auth)

        assert r.status_code == 200, r.text
        (out,) = r.json()["outputs"]
        assert (out["name"], out["datatype"], out["shape"]) == ("smoothed", "FP32", [3, 60])
        got = np.asarray(out["data"], dtype=np.float32).reshape(3, 60)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5)
        assert _appended(city) == before + 1  # metered like any call
        assert city.client.get(f"/v2/models/{handle}/ready", headers=auth).status_code == 200

    name = f"{handle.replace('.', '--')}--1"
    obj = kserve.api.objects[("citybrain", name)]
    (container,) = obj["spec"]["predictor"]["containers"]
    assert container["command"] == ["python", "-m", "model_store.kserve.predictor"]
    assert {"name": "STORAGE_URI", "value": f"s3://{BUCKET}/{name}"} in container["env"]
    # The export lies on the S3 server, marked with the artifact's digest.
    s3 = fsspec.filesystem("s3")
    mark = json.loads(s3.cat_file(f"{BUCKET}/{name}/export.json"))
    assert mark["key"] == f"{handle}:1"
    assert mark["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()

    # The predictor itself: metadata from the manifest, its own checks, binary outputs.
    url = f"{kserve.urls[name]}/v2/models/{name}"
    meta = httpx.get(url, timeout=10).json()
    assert meta["inputs"] == [{"name": "flow", "datatype": "FP32", "shape": [-1, -1]}]
    assert meta["outputs"] == [{"name": "smoothed", "datatype": "FP32", "shape": [-1, -1]}]
    flat = {"inputs": [{**BODY["inputs"][0], "shape": [180]}]}
    bad = httpx.post(f"{url}/infer", json=flat, timeout=30)
    assert bad.status_code == 400
    assert "input 'flow': expected shape [-1, -1]" in bad.json()["error"]
    binary = httpx.post(
        f"{url}/infer", json={**BODY, "parameters": {"binary_data_output": True}}, timeout=30
    )
    assert binary.status_code == 200, binary.text
    outputs = decode_response(binary.content, int(binary.headers[HEADER_CONTENT_LENGTH]))
    np.testing.assert_array_equal(outputs["smoothed"], got)


def test_a_python_model_with_text_is_served_from_its_export(
    tmp_path: Path, kserve: LocalKServe
) -> None:
    artifact = tmp_path / "shouter.zip"
    with zipfile.ZipFile(artifact, "w") as archive:
        archive.writestr("shouter.py", SHOUTER)
    manifest = ModelManifest(
        format="python",
        entrypoint="shouter:Shouter",
        inputs=[TensorSpec(name="text", datatype="BYTES", shape=[-1])],
        outputs=[
            TensorSpec(name="upper", datatype="BYTES", shape=[-1]),
            TensorSpec(name="length", datatype="INT64", shape=[-1]),
        ],
    )
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["hi", "城市"]}]}
    with _app(tmp_path, kserve) as city:
        handle = _publish(city, artifact, manifest, "kserve")
        r = city.client.post(
            f"/v2/models/{handle}/infer", json=body, headers=city.headers("parkeasy")
        )

    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert outputs["upper"]["data"] == ["HI", "城市"]
    assert outputs["length"]["data"] == [2, 6]  # UTF-8 bytes: the model got bytes, as embedded


def test_a_triton_export_is_a_model_repository_on_s3(s3: dict[str, str], tmp_path: Path) -> None:
    """What KServe's Triton ServingRuntime reads from the storageUri of a TorchScript model."""
    artifact, manifest = flow_smoother.build(tmp_path / "build")
    key = "traffic-police.flow-smoother:7"
    uri = f"s3://{BUCKET}/triton/smoother-7"
    assert export_version(uri, key, manifest, artifact, triton=True)

    s3fs = fsspec.filesystem("s3")
    model = f"{BUCKET}/triton/smoother-7/traffic-police--flow-smoother--7"
    config = s3fs.cat_file(f"{model}/config.pbtxt").decode()
    assert 'backend: "python"' in config
    # No host paths: the serving image has model_store installed.
    assert 'key: "CITYBRAIN_PYTHONPATH" value { string_value: "" }' in config
    assert s3fs.cat_file(f"{model}/1/artifact.pt") == artifact.read_bytes()
    assert s3fs.exists(f"{model}/1/model.py") and s3fs.exists(f"{model}/1/manifest.json")


def test_a_store_that_refuses_the_export_is_a_503_naming_no_bucket(
    s3: dict[str, str], tmp_path: Path
) -> None:
    artifact, manifest = flow_smoother.build(tmp_path / "build")
    with pytest.raises(ModelUnavailableError) as info:
        export_version("s3://no-such-bucket/m", "a.b:1", manifest, artifact, triton=False)
    assert info.value.status == 503
    assert "could not be exported" in str(info.value)
    assert "no-such-bucket" not in str(info.value)  # the store's details stay in the log
