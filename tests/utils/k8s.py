"""The ``k8s/`` manifests as a cluster would receive them, and the schemas that check them.

Rendering is ``kubectl kustomize`` itself (``make system-deps`` installs kubectl from Debian's
``kubernetes-client``), never a loader of our own: what the tests see is what
``kubectl apply -k`` would send. KServe objects are checked against the CRD schemas copied into
``k8s/crds/kserve/`` (Apache-2.0, see its README), so those checks cannot skip.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "k8s"
KSERVE_CRDS = K8S_DIR / "crds" / "kserve"

_CRD_FILES = {
    "InferenceService": ("serving.kserve.io_inferenceservices.yaml", "v1beta1"),
    "ServingRuntime": ("serving.kserve.io_servingruntimes.yaml", "v1alpha1"),
    "ClusterServingRuntime": ("serving.kserve.io_clusterservingruntimes.yaml", "v1alpha1"),
}
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def kubectl() -> str:
    """The path of ``kubectl``; fails the test (never skips) when it is missing."""
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail(
            "kubectl is not installed: `make system-deps` installs it "
            "(apt-get install kubernetes-client)"
        )
    return path


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """Render ``folder`` with ``kubectl kustomize``; every object it outputs, in order."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {folder} failed:\n{result.stderr}")
    return [doc for doc in yaml.load_all(result.stdout, Loader=_LOADER) if doc]


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of a KServe kind, from the CRD kept in ``k8s/crds/kserve``."""
    filename, version = _CRD_FILES[kind]
    crd = yaml.load((KSERVE_CRDS / filename).read_text(encoding="utf-8"), Loader=_LOADER)
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
            return schema
    raise AssertionError(f"{filename} has no {version} schema")


@functools.cache
def crd_validator(kind: str) -> jsonschema.Validator:
    """A ``jsonschema`` validator for a KServe kind.

    The schema itself is not checked against the meta-schema here (20 s for the
    InferenceService CRD on a busy machine): the files are KServe's own, unchanged, and
    ``test_kserve_render`` checks the one it uses.
    """
    schema = crd_schema(kind)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)  # type: ignore[no-any-return]


def is_kserve(obj: dict[str, Any]) -> bool:
    return str(obj.get("apiVersion", "")).startswith("serving.kserve.io/")
