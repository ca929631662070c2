"""The gateway picks the runtime by the manifest's ``runtime``: embedded, triton, kserve.

KServe is exercised against ``FakeKubeAPI`` (tests/utils/kube.py): a local fake of the
Kubernetes API's InferenceService endpoints (no API server can run here), served over HTTP on
127.0.0.1 so the real ``kubernetes`` client runs unchanged, acting as KServe's controller (it
marks a service ready with a URL). That URL points at the same fake's small local v2 HTTP
server, which stands in for the predictor (it doubles ``x`` into ``y``); exports go to a local
folder. The real predictor on a real S3-protocol server is in
tests/integration/test_kserve_predictor.py, Triton on a real tritonserver in
tests/integration/test_gateway_triton.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from marketplace.config import KServeSettings, Settings, TritonSettings
from model_store.runtimes.kserve import KServeRuntime
from tests.unit.gateway.conftest import Models
from tests.utils.kube import FakeKubeAPI

X = np.arange(6, dtype=np.float32).reshape(2, 3)
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": X.ravel().tolist()}]}


@pytest.fixture
def settings(tmp_path: Path, database_url: str, fake_api: FakeKubeAPI) -> Settings:
    # No Triton here (managed off, no URL): Triton models must answer 503 naming the runtime.
    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        triton=TritonSettings(managed=False),
        kserve=KServeSettings(
            kubeconfig=fake_api.kubeconfig(tmp_path / "kubeconfig"),
            namespace="citybrain",
            storage_uri=str(tmp_path / "models" / "{name}"),
            poll_s=0.01,
            ready_timeout_s=0.5,
        ),
    )


def _publish(models: Models, runtime: str) -> str:
    manifest = models.manifest.model_copy(update={"runtime": runtime})
    return models.city.model("traffic-police", models.artifact, manifest)


def _appended(models: Models) -> int:
    gateway = models.city.client.app.state.gateway  # type: ignore[attr-defined]
    return int(gateway.usage.status()["appended"])


def test_kserve_models_are_applied_and_served_through_the_gateway(
    models: Models, fake_api: FakeKubeAPI
) -> None:
    fake_api.auto_ready = True
    handle = _publish(models, "kserve")
    client, auth = models.city.client, models.city.headers("parkeasy")
    before = _appended(models)

    r = client.post(f"/v2/models/{handle}/infer", json=BODY, headers=auth)

    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["name"] == "y" and out["shape"] == [2, 3]
    np.testing.assert_array_equal(np.asarray(out["data"], dtype=np.float32).reshape(2, 3), X * 2)
    assert _appended(models) == before + 1  # metered like any call
    name = handle.replace(".", "--") + "--1"
    isvc = fake_api.objects[("citybrain", name)]
    assert isvc["metadata"]["annotations"]["citybrain.io/model-key"] == f"{handle}:1"
    storage = Path(isvc["spec"]["predictor"]["model"]["storageUri"])
    assert storage.name == name
    assert (storage / name / "config.pbtxt").is_file()  # exported before it was applied
    assert ("POST", f"/v2/models/{name}/infer", "application/json") in fake_api.requests
    assert client.get(f"/v2/models/{handle}/ready", headers=auth).status_code == 200
    gateway = client.app.state.gateway  # type: ignore[attr-defined]
    assert isinstance(gateway.serving.runtime.made("kserve"), KServeRuntime)


def test_a_kserve_service_that_never_gets_ready_is_503_and_not_billed(
    models: Models, fake_api: FakeKubeAPI
) -> None:
    handle = _publish(models, "kserve")  # auto_ready off: KServe never reports it ready
    client, auth = models.city.client, models.city.headers("parkeasy")
    before = _appended(models)

    r = client.post(f"/v2/models/{handle}/infer", json=BODY, headers=auth)

    assert r.status_code == 503, r.text
    assert r.json()["code"] == "ModelUnavailable"
    assert "was not ready" in r.json()["error"]
    assert client.get(f"/v2/models/{handle}/ready", headers=auth).status_code == 503
    assert _appended(models) == before


def test_a_runtime_that_is_not_configured_answers_503_naming_it(models: Models) -> None:
    handle = _publish(models, "triton")
    client, auth = models.city.client, models.city.headers("parkeasy")
    before = _appended(models)

    r = client.post(f"/v2/models/{handle}/infer", json=BODY, headers=auth)

    assert r.status_code == 503, r.text
    body = r.json()
    assert body["code"] == "ModelUnavailable"
    assert "the triton runtime is not configured" in body["error"]
    assert "CITYBRAIN_TRITON__URL" in body["error"]
    assert client.get(f"/v2/models/{handle}/ready", headers=auth).status_code == 503
    assert _appended(models) == before
    # Embedded models of the same deployment are unaffected.
    r = client.post(f"/v2/models/{models.public}/infer", json=BODY, headers=auth)
    assert r.status_code == 200, r.text


def test_triton_and_kserve_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CITYBRAIN_DATA_DIR", str(tmp_path))
    assert Settings().triton.data_dir == tmp_path / "triton"
    assert Settings().triton.configured and not Settings().kserve.configured
    monkeypatch.setenv("CITYBRAIN_TRITON__URL", "http://triton:8000")
    with pytest.raises(ValueError, match=r"needs triton\.repository_dir"):
        Settings()
    monkeypatch.setenv("CITYBRAIN_TRITON__REPOSITORY_DIR", str(tmp_path / "repo"))
    monkeypatch.setenv("CITYBRAIN_TRITON__ENABLED", "true")
    monkeypatch.setenv("CITYBRAIN_KSERVE__KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.setenv("CITYBRAIN_KSERVE__NAMESPACE", "city")
    settings = Settings()
    assert settings.triton.enabled and settings.triton.url == "http://triton:8000"
    assert settings.triton.repository_dir == tmp_path / "repo"
    assert settings.kserve.configured and settings.kserve.namespace == "city"
    monkeypatch.delenv("CITYBRAIN_TRITON__URL")
    monkeypatch.setenv("CITYBRAIN_TRITON__MANAGED", "false")
    assert not Settings().triton.configured
