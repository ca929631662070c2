"""Rendered InferenceServices and the serving manifests in ``k8s/serving``, validated offline.

KServe objects are checked against the CRD ``openAPIV3Schema`` kept in ``k8s/crds/kserve/``
(copied from KServe with its Apache-2.0 licence, so these checks never skip). ``k8s/serving``
is rendered by ``kubectl kustomize`` (tests/utils/k8s.py); the overlays that deploy the platform
are checked in tests/unit/k8s/test_manifests.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from model_store.builtin import flow_smoother, hotline_asr
from model_store.manifest import ModelManifest
from model_store.runtimes.kserve import (
    InferenceServiceStatus,
    Resources,
    inference_service_name,
    render_inference_service,
    triton_can_serve,
)
from tests.unit.model_store.factories import make_python_model, make_torchscript_model
from tests.utils.k8s import kustomize

REPO_ROOT = Path(__file__).resolve().parents[3]
KSERVE_CRDS = REPO_ROOT / "k8s" / "crds" / "kserve"
K8S = REPO_ROOT / "k8s"


def _crd_schema(filename: str, version: str) -> dict[str, Any]:
    path = KSERVE_CRDS / filename
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
            return schema
    raise AssertionError(f"{filename} has no {version} schema")


def _validator(filename: str, version: str) -> jsonschema.Validator:
    schema = _crd_schema(filename, version)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def isvc_schema() -> jsonschema.Validator:
    return _validator("serving.kserve.io_inferenceservices.yaml", "v1beta1")


def _validate_isvc(obj: dict[str, Any], schema: jsonschema.Validator) -> None:
    schema.validate(obj)
    assert obj["apiVersion"] == "serving.kserve.io/v1beta1"
    assert obj["kind"] == "InferenceService"


@pytest.fixture
def torchscript(tmp_path: Path) -> ModelManifest:
    return make_torchscript_model(tmp_path)[1]


@pytest.fixture
def python_model(tmp_path: Path) -> ModelManifest:
    return make_python_model(tmp_path)[1]


def test_the_crd_schema_rejects_what_it_should(
    isvc_schema: jsonschema.Validator, torchscript: ModelManifest
) -> None:
    obj = render_inference_service("acme.doubler:1", torchscript, storage_uri="s3://m/x")
    obj["spec"]["predictor"]["minReplicas"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        isvc_schema.validate(obj)


def test_a_torchscript_model_goes_to_the_triton_runtime(
    isvc_schema: jsonschema.Validator, torchscript: ModelManifest
) -> None:
    obj = render_inference_service(
        "traffic-police.flow-smoother:1",
        torchscript,
        storage_uri="s3://citybrain-models/triton/traffic-police--flow-smoother--1",
        namespace="citybrain",
        resources=Resources(
            cpu_request="250m", memory_request="512Mi", cpu_limit="1", memory_limit="1Gi"
        ),
        min_replicas=2,
        max_replicas=5,
    )
    _validate_isvc(obj, isvc_schema)
    assert triton_can_serve(torchscript)
    assert obj["metadata"]["name"] == "traffic-police--flow-smoother--1"
    assert obj["metadata"]["namespace"] == "citybrain"
    assert (
        obj["metadata"]["annotations"]["citybrain.io/model-key"] == "traffic-police.flow-smoother:1"
    )
    predictor = obj["spec"]["predictor"]
    assert predictor["model"]["modelFormat"] == {"name": "triton"}
    assert predictor["model"]["runtime"] == "kserve-tritonserver"
    assert predictor["model"]["protocolVersion"] == "v2"
    assert predictor["model"]["storageUri"].startswith("s3://citybrain-models/")
    assert predictor["model"]["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 5)
    assert "canaryTrafficPercent" not in predictor


def test_a_python_model_gets_a_custom_python_predictor(
    isvc_schema: jsonschema.Validator, python_model: ModelManifest
) -> None:
    obj = render_inference_service(
        "acme.pydoubler:4",
        python_model,
        storage_uri="pvc://models/acme/4",
        canary_traffic_percent=10,
        min_replicas=0,
    )
    _validate_isvc(obj, isvc_schema)
    assert not triton_can_serve(python_model)
    predictor = obj["spec"]["predictor"]
    assert "model" not in predictor
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"] == "citybrain:latest"
    assert {"name": "STORAGE_URI", "value": "pvc://models/acme/4"} in container["env"]
    assert "--model_name=acme--pydoubler--4" in container["args"]
    assert predictor["canaryTrafficPercent"] == 10
    assert predictor["minReplicas"] == 0


def test_the_platforms_predictor_runs_a_module_that_exists(python_model: ModelManifest) -> None:
    obj = render_inference_service("acme.pydoubler:4", python_model, storage_uri="s3://m/4")
    (container,) = obj["spec"]["predictor"]["containers"]
    assert container["command"] == ["python", "-m", "model_store.kserve.predictor"]
    assert importlib.util.find_spec(container["command"][2]) is not None
    port = container["ports"][0]["containerPort"]
    assert f"--http_port={port}" in container["args"]
    assert "--model_dir=/mnt/models" in container["args"]
    assert "--enable_grpc=false" in container["args"]  # the gateway calls it over HTTP only
    assert container["env"] == [{"name": "STORAGE_URI", "value": "s3://m/4"}]
    # Without KServe's CRD here, the container is still checked as the core Container it is.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}
    kubernetes_validate.validate({**pod, "spec": {"containers": [container]}}, "1.30", strict=True)


def test_the_predictor_can_be_forced_either_way(
    isvc_schema: jsonschema.Validator, torchscript: ModelManifest, python_model: ModelManifest
) -> None:
    forced_python = render_inference_service(
        "a.b:1", torchscript, storage_uri="s3://m/1", predictor="python"
    )
    forced_triton = render_inference_service(
        "a.c:1", python_model, storage_uri="s3://m/2", predictor="triton"
    )
    for obj in (forced_python, forced_triton):
        _validate_isvc(obj, isvc_schema)
    assert "containers" in forced_python["spec"]["predictor"]
    assert forced_triton["spec"]["predictor"]["model"]["runtime"] == "kserve-tritonserver"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_replicas": 3, "max_replicas": 2}, "replicas"),
        ({"min_replicas": -1}, "replicas"),
        ({"canary_traffic_percent": 101}, "canary"),
    ],
)
def test_inconsistent_scaling_is_refused(
    torchscript: ModelManifest, kwargs: dict[str, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        render_inference_service("a.b:1", torchscript, storage_uri="s3://m", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "key", ["Traffic_Police.Flow:1", "9lives.model:2", "a." + "long" * 30 + ":7"]
)
def test_service_names_are_dns_labels(key: str) -> None:
    import re

    name = inference_service_name(key)
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name
    assert len(name) <= 45


def test_status_is_read_from_the_ready_condition_and_urls() -> None:
    obj = {
        "metadata": {"name": "m"},
        "status": {
            "url": "http://m.citybrain.example.com/",
            "address": {"url": "http://m.citybrain.svc.cluster.local"},
            "conditions": [
                {"type": "PredictorReady", "status": "True"},
                {"type": "Ready", "status": "True"},
            ],
        },
    }
    status = InferenceServiceStatus.from_object(obj)
    assert status.ready
    assert status.base_url() == "http://m.citybrain.svc.cluster.local"
    assert status.base_url(prefer_cluster_local=False) == "http://m.citybrain.example.com"

    pending = InferenceServiceStatus.from_object(
        {
            "metadata": {"name": "m"},
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "RevisionMissing",
                        "message": "image pull backoff",
                    }
                ]
            },
        }
    )
    assert not pending.ready and pending.message == "image pull backoff"
    assert InferenceServiceStatus.from_object({"metadata": {"name": "m"}}).base_url() is None


# --------------------------------------------------------------------------- k8s/


@pytest.fixture(scope="module")
def k8s_objects() -> list[dict[str, Any]]:
    return kustomize(K8S / "serving")


def test_k8s_kserve_objects_match_the_crds(
    k8s_objects: list[dict[str, Any]], isvc_schema: jsonschema.Validator
) -> None:
    runtime_schema = _validator("serving.kserve.io_servingruntimes.yaml", "v1alpha1")
    kserve = [o for o in k8s_objects if o["apiVersion"].startswith("serving.kserve.io/")]
    assert {o["kind"] for o in kserve} == {"ServingRuntime", "InferenceService"}
    for obj in kserve:
        validator = isvc_schema if obj["kind"] == "InferenceService" else runtime_schema
        validator.validate(obj)
    (runtime,) = [o for o in kserve if o["kind"] == "ServingRuntime"]
    assert runtime["metadata"]["name"] == "kserve-tritonserver"
    assert {"name": "triton", "version": "2", "autoSelect": True, "priority": 1} in runtime["spec"][
        "supportedModelFormats"
    ]
    # The CRD leaves the container to Kubernetes' own schema: check it as a core Container.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "runtime"}}
    for container in runtime["spec"]["containers"]:
        spec = {"containers": [container]}
        kubernetes_validate.validate({**pod, "spec": spec}, "1.30", strict=True)


def test_the_sample_inference_services_are_what_the_renderer_produces(
    k8s_objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    samples = {o["metadata"]["name"]: o for o in k8s_objects if o["kind"] == "InferenceService"}
    smoother = samples.pop("traffic-police--flow-smoother--1")
    _, manifest = flow_smoother.build(tmp_path)
    rendered = render_inference_service(
        "traffic-police.flow-smoother:1",
        manifest,
        storage_uri=smoother["spec"]["predictor"]["model"]["storageUri"],
        namespace="citybrain",
        min_replicas=1,
        max_replicas=3,
    )
    assert smoother == rendered
    asr = samples.pop("hotline-12345--hotline-asr--1")  # python format: the platform's predictor
    (container,) = asr["spec"]["predictor"]["containers"]
    rendered = render_inference_service(
        "hotline-12345.hotline-asr:1",
        hotline_asr.manifest(),
        storage_uri=container["env"][0]["value"],
        namespace="citybrain",
        min_replicas=1,
        max_replicas=2,
    )
    assert asr == rendered
    assert container["command"] == ["python", "-m", "model_store.kserve.predictor"]
    assert samples == {}
