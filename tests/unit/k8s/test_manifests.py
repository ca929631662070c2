"""The Kustomize overlays in ``k8s/``, rendered by ``kubectl kustomize`` as a cluster gets them.

Checked with the real tools: every overlay renders; every core object validates with
``kubernetes-validate`` (strict, on the oldest Kubernetes we support and the newest the package
knows); KServe objects validate against the CRD schemas kept in ``k8s/crds/kserve/``. Every
``CITYBRAIN_*`` variable a container gets (its ConfigMaps and its env list) must name a real
field of :class:`marketplace.config.Settings`, which itself ignores unknown keys: the test maps
the name onto the model's fields, then proves that setting the variable sets that field. And the
wiring a cluster would trip over: the pod binds 0.0.0.0, probes hit the health routes on the
served port, every path the platform writes is a mounted volume under a read-only root, the
spool lies on the pod's own claim, selectors match.
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
from pydantic import BaseModel, TypeAdapter

from marketplace.config import Settings
from tests.utils.k8s import K8S_DIR, REPO_ROOT, crd_validator, is_kserve, kustomize

OVERLAYS = ("dev", "prod")
# The oldest Kubernetes these manifests are written for, and the newest the validator knows.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
API_PORT = 8000
Obj = dict[str, Any]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    name: str = request.param
    return name, kustomize(K8S_DIR / "overlays" / name)


@pytest.fixture(scope="module")
def prod() -> list[Obj]:
    return kustomize(K8S_DIR / "overlays" / "prod")


@pytest.fixture(scope="module")
def dev() -> list[Obj]:
    return kustomize(K8S_DIR / "overlays" / "dev")


def _one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _pod_templates(objects: list[Obj]) -> list[tuple[str, Obj]]:
    return [
        (f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"])
        for o in objects
        if o["kind"] in ("StatefulSet", "Deployment", "Job", "DaemonSet")
    ]


def _api(objects: list[Obj]) -> tuple[Obj, Obj]:
    statefulset = _one(objects, "StatefulSet", "citybrain")
    (container,) = [
        c for c in statefulset["spec"]["template"]["spec"]["containers"] if c["name"] == "api"
    ]
    return statefulset, container


# --------------------------------------------------------------------------- settings


def field_path(env_name: str) -> tuple[str, ...]:
    """The Settings field an environment variable sets, as pydantic-settings maps it.

    ``CITYBRAIN_`` prefix, case-insensitive names, ``__`` between a section and its field.
    Raises ``AssertionError`` for a name that maps onto no field (Settings would drop it).
    """
    assert env_name.startswith("CITYBRAIN_"), env_name
    parts = env_name[len("CITYBRAIN_") :].lower().split("__")
    model: type[BaseModel] = Settings
    path: list[str] = []
    for i, part in enumerate(parts):
        fields = model.model_fields
        assert part in fields, (
            f"{env_name}: {'.'.join([*path, part]) or part!r} is no setting "
            f"(fields of {model.__name__}: {sorted(fields)}); Settings would silently ignore it"
        )
        path.append(part)
        annotation = fields[part].annotation
        last = i == len(parts) - 1
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            assert not last, f"{env_name} names the whole section {part!r}, not a field of it"
            model = annotation
        else:
            assert last, f"{env_name}: {part!r} is a plain field; it has no {parts[i + 1]!r}"
    return tuple(path)


def _annotation(path: tuple[str, ...]) -> Any:
    model: type[BaseModel] = Settings
    for part in path[:-1]:
        model = model.model_fields[part].annotation  # type: ignore[assignment]
    return model.model_fields[path[-1]].annotation


def _get(settings: Settings, path: tuple[str, ...]) -> Any:
    value: Any = settings
    for part in path:
        value = getattr(value, part)
    return value


def _parse(path: tuple[str, ...], raw: str) -> Any:
    return TypeAdapter(_annotation(path)).validate_strings(raw)


def _probe(path: tuple[str, ...], raw: str) -> str:
    """Another valid value for the field: setting it must show up in that field."""
    value = _parse(path, raw)
    if isinstance(value, bool):
        return str(not value).lower()
    if isinstance(value, int | float | Decimal):
        return str(value / 2 if value else 1)
    if isinstance(value, str | Path):
        return f"{raw.rstrip('/')}-probe"
    raise AssertionError(f"no probe value for {'.'.join(path)} of type {type(value).__name__}")


def _secret_value(env_name: str) -> str:
    """What a Secret would hold for a variable (the manifests only reference Secrets)."""
    if env_name.endswith("DATABASE_URL"):
        return "postgresql+psycopg://citybrain:secret@postgres.example:5432/citybrain"
    if env_name.endswith("REDIS_URL"):
        return "redis://redis.example:6379/0"
    return "from-a-secret"


def container_env(objects: list[Obj], container: Obj) -> dict[str, str]:
    """The environment a container starts with: its ConfigMaps (envFrom), then its env list."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"unexpected envFrom {source}"
        config = _one(objects, "ConfigMap", source["configMapRef"]["name"])
        env.update({k: str(v) for k, v in config.get("data", {}).items()})
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        else:
            ref = entry["valueFrom"]
            assert set(ref) == {"secretKeyRef"}, f"{entry['name']}: only Secrets are expected"
            if not ref["secretKeyRef"].get("optional"):
                env[entry["name"]] = _secret_value(entry["name"])
    return env


def load_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings exactly as the container's process would build them from ``env``."""
    with monkeypatch.context() as m:
        for name in [n for n in __import__("os").environ if n.upper().startswith("CITYBRAIN_")]:
            m.delenv(name)
        for name, value in env.items():
            m.setenv(name, value)
        return Settings()


def _containers(objects: list[Obj]) -> list[tuple[str, Obj]]:
    out = []
    for where, template in _pod_templates(objects):
        spec = template["spec"]
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            out.append((f"{where}:{c['name']}", c))
    return out


def test_every_citybrain_key_names_a_setting_and_sets_it(
    overlay: tuple[str, list[Obj]], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, objects = overlay
    checked = 0
    for where, container in _containers(objects):
        env = container_env(objects, container)
        keys = sorted(k for k in env if k.startswith("CITYBRAIN_"))
        assert keys, f"{name} {where} gets no CITYBRAIN_* settings"
        loaded = load_settings(env, monkeypatch)
        for key in keys:
            path = field_path(key)
            assert _get(loaded, path) == _parse(path, env[key]), (
                f"{name} {where}: {key}={env[key]!r} did not reach {'.'.join(path)}"
            )
            probe = _probe(path, env[key])
            changed = load_settings({**env, key: probe}, monkeypatch)
            assert _get(changed, path) == _parse(path, probe) != _get(loaded, path), (
                f"{name} {where}: changing {key} does not change {'.'.join(path)}"
            )
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize(
    "key",
    [
        "CITYBRAIN_KSERVE_NAMESPACE",  # the old ConfigMap's: one underscore
        "CITYBRAIN_TRITON_URL",
        "CITYBRAIN_BILLING__SPOOLDIR",
        "CITYBRAIN_GATEWAY",
        "CITYBRAIN_HOST__NAME",
    ],
)
def test_a_misspelt_key_is_caught(key: str) -> None:
    with pytest.raises(AssertionError):
        field_path(key)


def test_the_old_configmap_keys_really_were_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Why the check above exists: Settings drops unknown keys without a word."""
    loaded = load_settings(
        {"CITYBRAIN_KSERVE_NAMESPACE": "elsewhere", "CITYBRAIN_TRITON_URL": "http://t:8000"},
        monkeypatch,
    )
    assert loaded.kserve.namespace == "citybrain"
    assert loaded.triton.url is None


# --------------------------------------------------------------------------- validity


def test_every_overlay_renders_what_it_should(overlay: tuple[str, list[Obj]]) -> None:
    name, objects = overlay
    kinds = {o["kind"] for o in objects}
    common = {"Namespace", "ServiceAccount", "ConfigMap", "Service", "StatefulSet"}
    if name == "dev":
        assert kinds == common
    else:
        assert kinds == common | {
            "Role",
            "RoleBinding",
            "Job",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "Ingress",
            "ServingRuntime",
        }
    assert all(
        o["metadata"].get("namespace") == "citybrain" for o in objects if o["kind"] != "Namespace"
    )
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "citybrain" for o in objects)


def test_core_objects_validate_strictly(overlay: tuple[str, list[Obj]]) -> None:
    _, objects = overlay
    core = [o for o in objects if not is_kserve(o)]
    for version in K8S_VERSIONS:
        for obj in core:
            kubernetes_validate.validate(obj, version, strict=True)


def test_the_validator_rejects_a_broken_object(prod: list[Obj]) -> None:
    statefulset, _ = _api(prod)
    broken = {**statefulset, "spec": {**statefulset["spec"], "replicas": "three"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)
    typo = {**statefulset, "spec": {**statefulset["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSIONS[0], strict=True)


def test_kserve_objects_match_the_crds(prod: list[Obj]) -> None:
    serving = kustomize(K8S_DIR / "serving")
    kserve = [o for o in [*prod, *serving] if is_kserve(o)]
    assert {o["kind"] for o in kserve} == {"ServingRuntime", "InferenceService"}
    for obj in kserve:
        crd_validator(obj["kind"]).validate(obj)
    runtime = _one(prod, "ServingRuntime")
    with pytest.raises(Exception, match="is not of type"):
        bad = {**runtime, "spec": {**runtime["spec"], "protocolVersions": "v2"}}
        crd_validator("ServingRuntime").validate(bad)


def test_prod_ships_the_triton_runtime_but_no_sample_inference_service(prod: list[Obj]) -> None:
    # The platform exports a version before applying its InferenceService; a shipped sample
    # would point at a storageUri nobody filled.
    assert not [o for o in prod if o["kind"] == "InferenceService"]
    runtime = _one(prod, "ServingRuntime", "kserve-tritonserver")
    (container,) = runtime["spec"]["containers"]
    assert container["image"].split(":")[0] == "citybrain-tritonserver"
    assert container["args"][0] == "tritonserver"
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


# --------------------------------------------------------------------------- the pod


def test_the_pod_binds_all_interfaces_on_the_probed_port(
    overlay: tuple[str, list[Obj]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, objects = overlay
    _, api = _api(objects)
    args = api["args"]
    assert args[0] == "serve"
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert int(args[args.index("--port") + 1]) == API_PORT
    assert load_settings(container_env(objects, api), monkeypatch).host == "0.0.0.0"
    (port,) = api["ports"]
    assert (port["name"], port["containerPort"]) == ("http", API_PORT)
    assert api["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert api["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert api["startupProbe"]["httpGet"]["path"] == "/v2/health/live"


def test_every_pod_runs_locked_down(overlay: tuple[str, list[Obj]]) -> None:
    _, objects = overlay
    templates = _pod_templates(objects)
    assert templates
    for where, template in templates:
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] != 0, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), (where, c["name"])
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), (where, c["name"])


def _mount_for(path: PurePosixPath, mounts: list[Obj]) -> Obj | None:
    best: Obj | None = None
    for m in mounts:
        root = PurePosixPath(m["mountPath"])
        if (path == root or root in path.parents) and (
            best is None or len(root.parts) > len(PurePosixPath(best["mountPath"]).parts)
        ):
            best = m
    return best


def test_every_path_the_platform_writes_is_a_volume(
    overlay: tuple[str, list[Obj]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The root filesystem is read-only: /tmp, and for the server its data directory and its
    spool (and a SQLite database), must be mounts."""
    name, objects = overlay
    for where, container in _containers(objects):
        template = next(t for w, t in _pod_templates(objects) if where.startswith(w + ":"))
        volumes = {v["name"] for v in template["spec"]["volumes"]}
        owner = next(o for o in objects if where.startswith(f"{o['kind']}/{o['metadata']['name']}"))
        claims = {c["metadata"]["name"] for c in owner["spec"].get("volumeClaimTemplates", [])}
        settings = load_settings(container_env(objects, container), monkeypatch)
        writable = [PurePosixPath("/tmp")]
        if container["args"][0] == "serve":  # `db upgrade` writes only the database
            assert settings.billing.spool_dir is not None
            writable.append(PurePosixPath(str(settings.data_dir)))
            writable.append(PurePosixPath(str(settings.billing.spool_dir)))
        if settings.is_sqlite:
            writable.append(PurePosixPath(settings.database_url.removeprefix("sqlite:///")))
        for path in writable:
            mount = _mount_for(path, container["volumeMounts"])
            assert mount is not None, f"{name} {where}: {path} is on the read-only root"
            assert mount["name"] in volumes | claims, f"{name} {where}: no volume {mount['name']}"


def test_each_api_pod_keeps_its_spool_on_a_claim_of_its_own(
    overlay: tuple[str, list[Obj]], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, objects = overlay
    statefulset, api = _api(objects)
    settings = load_settings(container_env(objects, api), monkeypatch)
    mount = _mount_for(PurePosixPath(str(settings.billing.spool_dir)), api["volumeMounts"])
    assert mount is not None
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    assert mount["name"] in claims, f"{name}: the spool is not on a per-pod claim"
    volumes = {v["name"] for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert mount["name"] not in volumes  # a pod volume of the same name would shadow the claim
    policy = statefulset["spec"]["persistentVolumeClaimRetentionPolicy"]
    assert policy == {"whenDeleted": "Retain", "whenScaled": "Retain"}


def test_prometheus_scrapes_the_served_port(overlay: tuple[str, list[Obj]]) -> None:
    _, objects = overlay
    statefulset, _ = _api(objects)
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == API_PORT
    assert annotations["prometheus.io/path"] == "/metrics"


def test_services_select_the_api_pods(overlay: tuple[str, list[Obj]]) -> None:
    _, objects = overlay
    statefulset, _ = _api(objects)
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    governing = _one(objects, "Service", statefulset["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    for service in [o for o in objects if o["kind"] == "Service"]:
        assert service["spec"]["selector"].items() <= labels.items()


# --------------------------------------------------------------------------- dev and prod


def test_dev_is_one_pod_on_sqlite_with_no_secrets(
    dev: list[Obj], monkeypatch: pytest.MonkeyPatch
) -> None:
    statefulset, api = _api(dev)
    assert statefulset["spec"]["replicas"] == 1
    settings = load_settings(container_env(dev, api), monkeypatch)
    assert settings.is_sqlite
    db = PurePosixPath(settings.database_url.removeprefix("sqlite:///"))
    mount = _mount_for(db, api["volumeMounts"])
    assert mount is not None
    assert mount["name"] in {
        c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]
    }
    assert "env" not in api


def test_prod_takes_postgres_redis_and_s3_from_secrets(
    prod: list[Obj], monkeypatch: pytest.MonkeyPatch
) -> None:
    statefulset, api = _api(prod)
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in api["env"] if "valueFrom" in e}
    assert refs["CITYBRAIN_DATABASE_URL"]["name"] == "citybrain-postgres"
    assert refs["CITYBRAIN_GATEWAY__QUOTA_REDIS_URL"]["name"] == "citybrain-redis"
    assert {refs["AWS_ACCESS_KEY_ID"]["name"], refs["AWS_SECRET_ACCESS_KEY"]["name"]} == {
        "citybrain-s3"
    }
    settings = load_settings(container_env(prod, api), monkeypatch)
    assert settings.database_url.startswith("postgresql")
    assert settings.gateway.quota_redis_url is not None  # quotas shared by every pod
    assert settings.model_store.artifact_url is not None
    assert settings.model_store.artifact_url.startswith("s3://")
    assert settings.kserve.configured and settings.kserve.in_cluster
    assert settings.kserve.storage_uri.startswith("s3://")
    assert not settings.triton.managed  # no tritonserver per API pod
    assert statefulset["spec"]["template"]["spec"]["automountServiceAccountToken"] is True


def test_s3fs_is_a_declared_dependency() -> None:
    """s3:// artifact URLs go through fsspec, which needs s3fs installed with the platform."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.split(">")[0].split("=")[0].strip() == "s3fs" for d in project["dependencies"])
    import fsspec

    assert fsspec.get_filesystem_class("s3").__module__.startswith("s3fs")


def test_the_migrations_job_runs_the_api_image_with_the_api_settings(prod: list[Obj]) -> None:
    _, api = _api(prod)
    job = _one(prod, "Job", "citybrain-migrate")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["args"] == ["db", "upgrade"]
    assert migrate["image"] == api["image"]
    assert migrate["envFrom"] == api["envFrom"]
    assert migrate["env"] == api["env"]


def test_autoscaler_budget_and_policies_target_the_api(prod: list[Obj]) -> None:
    statefulset, _ = _api(prod)
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    hpa = _one(prod, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", statefulset["metadata"]["name"])
    assert 3 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    # The autoscaler owns the count: one in the manifest would be reset by every apply.
    assert "replicas" not in statefulset["spec"]
    pdb = _one(prod, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    policy = _one(prod, "NetworkPolicy", "citybrain-api")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} == {"http"}
    egress = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert {53, 5432, 6379, 443} <= egress


def test_the_ingress_reaches_the_api_service(prod: list[Obj]) -> None:
    ingress = _one(prod, "Ingress")
    service = _one(prod, "Service", "citybrain")
    port_names = {p["name"] for p in service["spec"]["ports"]}
    backends = [
        path["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends
    for backend in backends:
        assert backend["name"] == "citybrain"
        assert backend["port"]["name"] in port_names
