"""KServeClient and KServeRuntime against a local fake of the Kubernetes API.

No Kubernetes cluster runs here. ``FakeKubeAPI`` is a fake of exactly the endpoints these
classes touch: the CustomObjects paths of ``serving.kserve.io/v1beta1`` InferenceServices
(create, get, JSON merge-patch, delete), served over HTTP on 127.0.0.1 from a thread, with a
kubeconfig pointing at it, so the real ``kubernetes`` client code runs unchanged. It can act
as KServe's controller (mark a service ready with a URL), and it answers the v2 ``infer``
path of that URL as a predictor that doubles ``x`` into ``y``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_store.errors import InferenceInputError, ModelUnavailableError
from model_store.runtimes.kserve import KServeClient, KServeError, KServeRuntime
from tests.unit.model_store.factories import make_python_model, make_torchscript_model

_PATH = re.compile(
    r"^/apis/serving\.kserve\.io/v1beta1/namespaces/(?P<ns>[^/]+)/inferenceservices(?:/(?P<name>[^/?]+))?"
)
_INFER = re.compile(r"^/v2/models/(?P<model>[^/]+)/infer$")


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


class FakeKubeAPI:
    """The InferenceService endpoints of an API server, plus a doubling v2 predictor."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.auto_ready = False
        self.predictor_status = 200
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"null")

            def _status(self, code: int, reason: str, message: str) -> None:
                self._send(
                    code,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "reason": reason,
                        "message": message,
                        "code": code,
                    },
                )

            def _handle(self, method: str) -> None:
                with fake.lock:
                    fake.requests.append((method, self.path, self.headers.get("Content-Type")))
                infer = _INFER.match(self.path)
                if infer and method == "POST":
                    fake.answer_infer(self, self._body())
                    return
                match = _PATH.match(self.path)
                if match is None:
                    self._status(404, "NotFound", f"no route {self.path}")
                    return
                ns, name = match.group("ns"), match.group("name")
                with fake.lock:
                    if method == "POST" and name is None:
                        obj = self._body()
                        key = (ns, obj["metadata"]["name"])
                        if key in fake.objects:
                            self._status(
                                409, "AlreadyExists", f'inferenceservices "{key[1]}" already exists'
                            )
                            return
                        obj["metadata"].update(
                            namespace=ns,
                            uid=f"uid-{len(fake.objects)}",
                            resourceVersion="1",
                            generation=1,
                        )
                        if fake.auto_ready:
                            fake.set_ready(obj, f"http://127.0.0.1:{fake.port}")
                        fake.objects[key] = obj
                        self._send(201, obj)
                    elif method == "GET" and name:
                        obj = fake.objects.get((ns, name))
                        if obj is None:
                            self._status(404, "NotFound", f'inferenceservices "{name}" not found')
                        else:
                            self._send(200, obj)
                    elif method == "PATCH" and name:
                        obj = fake.objects.get((ns, name))
                        if obj is None:
                            self._status(404, "NotFound", f'inferenceservices "{name}" not found')
                            return
                        if self.headers.get("Content-Type") != "application/merge-patch+json":
                            self._status(415, "UnsupportedMediaType", "only merge patches here")
                            return
                        merged = _merge(obj, self._body())
                        merged["metadata"]["generation"] = obj["metadata"]["generation"] + 1
                        fake.objects[(ns, name)] = merged
                        self._send(200, merged)
                    elif method == "DELETE" and name:
                        if fake.objects.pop((ns, name), None) is None:
                            self._status(404, "NotFound", f'inferenceservices "{name}" not found')
                        else:
                            self._send(200, {"kind": "Status", "status": "Success"})
                    else:
                        self._status(405, "MethodNotAllowed", method)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @staticmethod
    def set_ready(obj: dict[str, Any], url: str) -> None:
        obj["status"] = {
            "url": url,
            "address": {"url": url},
            "conditions": [{"type": "Ready", "status": "True"}],
        }

    def answer_infer(self, handler: Any, body: dict[str, Any]) -> None:
        if self.predictor_status != 200:
            handler._send(self.predictor_status, {"error": "input 'x': bad shape"})
            return
        (tensor,) = body["inputs"]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        handler._send(
            200,
            {
                "model_name": "m",
                "outputs": [
                    {
                        "name": "y",
                        "datatype": "FP32",
                        "shape": list(x.shape),
                        "data": (x * 2).ravel().tolist(),
                    }
                ],
            },
        )

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}
                    ],
                    "users": [{"name": "tester", "user": {"token": "fake-token"}}],
                    "contexts": [
                        {"name": "fake", "context": {"cluster": "fake", "user": "tester"}}
                    ],
                    "current-context": "fake",
                }
            )
        )
        return path


@pytest.fixture
def fake_api() -> Iterator[FakeKubeAPI]:
    api = FakeKubeAPI()
    api.thread.start()
    yield api
    api.server.shutdown()
    api.server.server_close()


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
    fake_api.server.shutdown()
    fake_api.server.server_close()
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

    async def scenario() -> dict[str, np.ndarray]:
        runtime = KServeRuntime(
            kserve,
            storage_uri=lambda k, m: f"s3://citybrain-models/{k}",
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
    assert fake_api.objects == {}  # unload deleted it
    created = [m for m, path, _ in fake_api.requests if m == "POST" and "inferenceservices" in path]
    assert created == ["POST"]


def test_runtime_renders_python_models_as_custom_predictors(
    fake_api: FakeKubeAPI, kserve: KServeClient, tmp_path: Path
) -> None:
    artifact, manifest = make_python_model(tmp_path)
    fake_api.auto_ready = True

    async def scenario() -> None:
        runtime = KServeRuntime(
            kserve,
            storage_uri=lambda k, m: f"pvc://models/{k.replace(':', '/')}",
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
            kserve, storage_uri=lambda k, m: "s3://x", poll_s=0.01, ready_timeout_s=0
        )
        try:
            with pytest.raises(ModelUnavailableError, match="not ready"):
                await runtime.load("acme.doubler:9", manifest, artifact)
            assert not runtime.is_ready("acme.doubler:9")
        finally:
            await runtime.close()

    asyncio.run(scenario())
    assert copy.deepcopy(list(fake_api.objects)) == [("citybrain", "acme--doubler--9")]
