"""KServeClient and KServeRuntime against a local fake of the Kubernetes API.

No Kubernetes API server can run here, so the API is a fake, and that is fine for what these
tests check: ``FakeKubeAPI`` (tests/utils/kube.py) serves exactly the endpoints these classes
touch — the CustomObjects paths of ``serving.kserve.io/v1beta1`` InferenceServices (create,
get, JSON merge-patch, delete) — over HTTP on 127.0.0.1, with a kubeconfig pointing at it, so
the real ``kubernetes`` client code runs unchanged. It can act as KServe's controller (mark a
service ready with a URL), and it answers the v2 ``infer`` path of that URL as a predictor that
doubles ``x`` into ``y``. The real predictor, on a real S3-protocol server, is tested in
tests/integration/test_kserve_predictor.py.

Exports go to local folders here (a storage URI may be any fsspec URL).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_store.errors import InferenceInputError, ModelUnavailableError
from model_store.kserve.storage import read_bundle
from model_store.runtimes.kserve import KServeClient, KServeError, KServeRuntime
from tests.unit.model_store.factories import make_python_model, make_torchscript_model
from tests.utils.kube import FakeKubeAPI


@pytest.fixture
def kserve(fake_api: FakeKubeAPI, tmp_path: Path) -> Iterator[KServeClient]:
    client = KServeClient(
        kubeconfig=fake_api.kubeconfig(tmp_path / "kubeconfig"), namespace="citybrain"
    )
    yield client
    client.close()


def _isvc(name: str, storage: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": "citybrain"},
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "model": {"modelFormat": {"name": "triton"}, "storageUri": storage},
            }
        },
    }


def test_apply_creates_then_patches(fake_api: FakeKubeAPI, kserve: KServeClient) -> None:
    created = kserve.apply(_isvc("m1", "s3://a"))
    assert created["metadata"]["uid"] == "uid-0"
    updated = kserve.apply(_isvc("m1", "s3://b"))

    assert updated["spec"]["predictor"]["model"]["storageUri"] == "s3://b"
    assert updated["metadata"]["generation"] == 2
    assert (
        fake_api.objects[("citybrain", "m1")]["spec"]["predictor"]["model"]["storageUri"]
        == "s3://b"
    )
    assert [m for m, _, _ in fake_api.requests] == ["POST", "POST", "PATCH"]
    assert fake_api.requests[-1][2] == "application/merge-patch+json"


def test_status_reports_readiness_and_the_url(fake_api: FakeKubeAPI, kserve: KServeClient) -> None:
    assert kserve.status("missing") is None
    kserve.apply(_isvc("m2", "s3://a"))
    pending = kserve.status("m2")
    assert pending is not None and not pending.ready and pending.base_url() is None

    with fake_api.lock:
        fake_api.set_ready(fake_api.objects[("citybrain", "m2")], "http://m2.citybrain.example.com")
    ready = kserve.wait_ready("m2", timeout_s=5, poll_s=0.01)
    assert ready.ready
    assert ready.base_url() == "http://m2.citybrain.example.com"


def test_wait_ready_gives_up_with_kserves_reason(
    fake_api: FakeKubeAPI, kserve: KServeClient
) -> None:
    kserve.apply(_isvc("m3", "s3://a"))
    with fake_api.lock:
        fake_api.objects[("citybrain", "m3")]["status"] = {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "RevisionFailed",
                    "message": "storage initializer: access denied",
                }
            ]
        }
    with pytest.raises(KServeError, match="access denied"):
        kserve.wait_ready("m3", timeout_s=0, poll_s=0.01)


def test_delete_removes_and_reports_absence(fake_api: FakeKubeAPI, kserve: KServeClient) -> None:
    kserve.apply(_isvc("m4", "s3://a"))
    assert kserve.delete("m4") is True
    assert ("citybrain", "m4") not in fake_api.objects
    assert kserve.delete("m4") is False


def test_an_unreachable_cluster_is_a_503(tmp_path: Path, fake_api: FakeKubeAPI) -> None:
    kubeconfig = fake_api.kubeconfig(tmp_path / "kubeconfig")
    fake_api.stop()
    client = KServeClient(kubeconfig=kubeconfig)
    client._api_client.configuration.retries = 0  # fail fast instead of urllib3's retries
    try:
        with pytest.raises(KServeError, match="unreachable") as info:
            client.get("m")
        assert info.value.status == 503
    finally:
        client.close()


def test_runtime_deploys_and_forwards_v2_requests(
    fake_api: FakeKubeAPI, kserve: KServeClient, tmp_path: Path
) -> None:
    fake_api.auto_ready = True
    artifact, manifest = make_torchscript_model(tmp_path)
    key = "acme.doubler:1"
    store = tmp_path / "store"

    async def scenario() -> dict[str, np.ndarray]:
        runtime = KServeRuntime(
            kserve,
            storage_uri=lambda k, m: str(store / k.replace(":", "-")),
            poll_s=0.01,
            ready_timeout_s=5,
        )
        try:
            assert not runtime.is_ready(key)
            await runtime.load(key, manifest, artifact)
            assert runtime.is_ready(key)
            outputs = await runtime.infer(key, {"x": np.arange(6, dtype=np.float32).reshape(2, 3)})
            fake_api.predictor_status = 400
            with pytest.raises(InferenceInputError, match="bad shape"):
                await runtime.infer(key, {"x": np.ones((1, 3), dtype=np.float32)})
            assert runtime.stats().models[key].requests == 1
            await runtime.unload(key)
            with pytest.raises(ModelUnavailableError, match="not registered"):
                await runtime.infer(key, {"x": np.ones((1, 3), dtype=np.float32)})
            return outputs
        finally:
            await runtime.close()

    outputs = asyncio.run(scenario())
    np.testing.assert_array_equal(outputs["y"], np.arange(6, dtype=np.float32).reshape(2, 3) * 2)
    # TorchScript goes to Triton: its storageUri got the Triton repository before the apply.
    model_dir = store / "acme.doubler-1" / "acme--doubler--1"
    assert (model_dir / "config.pbtxt").is_file()
    assert (model_dir / "1" / "artifact.pt").read_bytes() == artifact.read_bytes()
    assert fake_api.objects == {}  # unload deleted it
    created = [m for m, path, _ in fake_api.requests if m == "POST" and "inferenceservices" in path]
    assert created == ["POST"]


def test_runtime_exports_python_models_for_the_platforms_predictor(
    fake_api: FakeKubeAPI, kserve: KServeClient, tmp_path: Path
) -> None:
    artifact, manifest = make_python_model(tmp_path)
    fake_api.auto_ready = True
    store = tmp_path / "store"
    uris: list[str] = []

    def storage_uri(key: str, _: object) -> str:
        uris.append(str(store / key.replace(":", "/")))
        return uris[-1]

    async def scenario() -> None:
        runtime = KServeRuntime(kserve, storage_uri=storage_uri, poll_s=0.01)
        try:
            await runtime.load("acme.py:3", manifest, artifact)
        finally:
            await runtime.close()

    asyncio.run(scenario())
    (container,) = fake_api.objects[("citybrain", "acme--py--3")]["spec"]["predictor"]["containers"]
    assert container["command"] == ["python", "-m", "model_store.kserve.predictor"]
    assert {"name": "STORAGE_URI", "value": uris[-1]} in container["env"]
    bundle = read_bundle(store / "acme.py" / "3")  # what the predictor will read
    assert bundle.key == "acme.py:3"
    assert bundle.manifest == manifest
    assert bundle.artifact_path.read_bytes() == artifact.read_bytes()


def test_a_failed_export_applies_nothing(
    fake_api: FakeKubeAPI, kserve: KServeClient, tmp_path: Path
) -> None:
    artifact, manifest = make_python_model(tmp_path)

    async def scenario() -> None:
        runtime = KServeRuntime(kserve, storage_uri=lambda k, m: "pvc://models/x", poll_s=0.01)
        try:
            with pytest.raises(ModelUnavailableError, match="cannot write pvc:// model storage"):
                await runtime.load("acme.py:4", manifest, artifact)
            assert not runtime.is_ready("acme.py:4")
        finally:
            await runtime.close()

    asyncio.run(scenario())
    assert fake_api.objects == {}
    assert not [m for m, path, _ in fake_api.requests if "inferenceservices" in path]


def test_runtime_leaves_an_operator_managed_uri_alone(
    fake_api: FakeKubeAPI, kserve: KServeClient, tmp_path: Path
) -> None:
    artifact, manifest = make_python_model(tmp_path)
    fake_api.auto_ready = True

    async def scenario() -> None:
        runtime = KServeRuntime(
            kserve,
            storage_uri=lambda k, m: f"pvc://models/{k.replace(':', '/')}",
            export=False,
            render_options={"min_replicas": 0, "max_replicas": 2, "canary_traffic_percent": 20},
            poll_s=0.01,
        )
        try:
            await runtime.load("acme.py:2", manifest, artifact)
        finally:
            await runtime.close()

    asyncio.run(scenario())
    stored = fake_api.objects[("citybrain", "acme--py--2")]
    predictor = stored["spec"]["predictor"]
    assert predictor["containers"][0]["env"][0] == {
        "name": "STORAGE_URI",
        "value": "pvc://models/acme.py/2",
    }
    assert (
        predictor["minReplicas"],
        predictor["maxReplicas"],
        predictor["canaryTrafficPercent"],
    ) == (0, 2, 20)


def test_runtime_reports_a_refused_service(
    fake_api: FakeKubeAPI, kserve: KServeClient, tmp_path: Path
) -> None:
    artifact, manifest = make_torchscript_model(tmp_path)

    async def scenario() -> None:
        runtime = KServeRuntime(
            kserve, storage_uri=lambda k, m: str(tmp_path / "x"), poll_s=0.01, ready_timeout_s=0
        )
        try:
            with pytest.raises(ModelUnavailableError, match="not ready"):
                await runtime.load("acme.doubler:9", manifest, artifact)
            assert not runtime.is_ready("acme.doubler:9")
        finally:
            await runtime.close()

    asyncio.run(scenario())
    assert copy.deepcopy(list(fake_api.objects)) == [("citybrain", "acme--doubler--9")]
