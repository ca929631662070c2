"""The images, built by ``images/build.sh`` (what ``make image`` runs) and run with podman.

Inside the platform image, ``citybrain serve`` must answer ``/v2/health/ready`` as a non-root
user on a read-only root filesystem, with a volume for its data directory, as the Kubernetes
manifests run it (``podman run --read-only --user 10001:10001 -v DIR:/var/lib/citybrain``);
it must also serve the demo model it seeds. The Triton image must serve a model that
``model_store.triton.repository`` exported, as KServe's ServingRuntime runs it.

Opt-in (``CITYBRAIN_TEST_IMAGE=1``), and skipped where podman is not installed. Why not on
every run where podman exists: building from nothing took 14 min 18 s for the platform image
and 11 min 58 s for the Triton image on this project's 2-core machine (a debootstrapped base,
every wheel fetched; docs/operations.md has the figures), far beyond what `make test` should
spend. Once built, buildah reuses the dependency layers: a rebuild after a code change took
1 min 59 s, and this whole module 2 min 43 s with both images' layers cached. Run it after
touching the Dockerfiles, images/, the dependencies or the server's start-up. The images are built with the tag ``test``, so ``latest`` (what
``make image`` made) is left alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.utils.k8s import REPO_ROOT
from tests.utils.server import free_port

PODMAN = shutil.which("podman")
pytestmark = [
    pytest.mark.skipif(PODMAN is None, reason="podman is not installed (make image-tools)"),
    pytest.mark.skipif(
        os.environ.get("CITYBRAIN_TEST_IMAGE") != "1",
        reason="building the images takes minutes (14 min cold here): set CITYBRAIN_TEST_IMAGE=1",
    ),
]
TAG = "test"
PLATFORM = f"localhost/citybrain:{TAG}"
TRITON = f"localhost/citybrain-tritonserver:{TAG}"
# The OCI runtime and limits RECIPES.md found to work on this machine kind (crun fails on
# cgroups v1 hybrid hosts); harmless elsewhere.
RUN_OPTIONS = [
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=32768:32768",
]
START_TIMEOUT_S = 300.0


def _podman(*args: str, timeout: float = 120, check: bool = True) -> str:
    assert PODMAN is not None
    result = subprocess.run(
        [PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def _build(what: str) -> None:
    env = {**os.environ, "TAG": TAG}
    result = subprocess.run(
        [str(REPO_ROOT / "images" / "build.sh"), what],
        capture_output=True,
        text=True,
        timeout=3600,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"images/build.sh {what} failed:\n{result.stderr[-6000:]}")


@pytest.fixture(scope="module")
def platform_image() -> str:
    _build("platform")
    return PLATFORM


@pytest.fixture(scope="module")
def triton_image() -> str:
    _build("triton")
    return TRITON


def _wait_for(url: str, container: str) -> httpx.Response:
    """Poll until ``url`` answers 200 (a deadline only so a broken image cannot hang the run)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last: object = None
    while time.monotonic() < deadline:
        state = _podman("inspect", container, "--format", "{{.State.Status}}").strip()
        if state != "running":
            logs = _podman("logs", container, check=False)
            raise AssertionError(f"{container} is {state}:\n{logs[-4000:]}")
        try:
            r = httpx.get(url, timeout=3)
            if r.status_code == 200:
                return r
            last = r.status_code
        except httpx.HTTPError as e:
            last = e
        time.sleep(1)
    logs = _podman("logs", container, check=False)
    raise AssertionError(f"{url} never answered 200 (last: {last}):\n{logs[-4000:]}")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A host folder the container's user can use (a pytest tmp_path is root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="citybrain-image-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"citybrain-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        yield name
    finally:
        _podman("rm", "--force", "--time", "5", name, check=False)


def test_the_build_context_is_only_what_the_images_copy(shared_dir: Path) -> None:
    """.dockerignore keeps the checkout (.venv, var, node_modules, .git) out of every build."""
    probe = shared_dir / "Dockerfile.context"
    probe.write_text("FROM scratch\nCOPY . /ctx/\n")
    image = "localhost/citybrain-context-probe:test"
    _podman(
        "build", "--isolation", "chroot", "-f", str(probe), "-t", image, str(REPO_ROOT),
        timeout=600,
    )  # fmt: skip
    try:
        cid = _podman("create", image, "true").strip()
        archive = shared_dir / "context.tar"
        _podman("export", "-o", str(archive), cid)
        _podman("rm", cid)
        names = subprocess.run(
            ["tar", "-tf", str(archive)], capture_output=True, text=True, check=True
        ).stdout.split()
    finally:
        _podman("rmi", "--force", image, check=False)
    top = {n.removeprefix("ctx/").split("/")[0] for n in names if n.startswith("ctx/")} - {""}
    assert top == {"pyproject.toml", "README.md", "marketplace", "model_store", "billing", "images"}
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_the_platform_image_serves_as_non_root_on_a_read_only_root(
    platform_image: str, shared_dir: Path, container_name: str
) -> None:
    data = shared_dir / "data"
    data.mkdir()
    os.chown(data, 10001, 10001)  # as a PVC with fsGroup would be
    port = free_port()
    # The image's own command (serve --host 0.0.0.0): podman forwards the host's loopback port
    # to the container's own address, which a server bound to 127.0.0.1 would not answer.
    _podman(
        "run", "--detach", "--name", container_name, *RUN_OPTIONS,
        "--read-only", "--user", "10001:10001",
        "--volume", f"{data}:/var/lib/citybrain",
        "--publish", f"127.0.0.1:{port}:8000",
        platform_image,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    ready = _wait_for(f"{base}/v2/health/ready", container_name)
    assert ready.json() == {"ready": True}
    assert httpx.get(f"{base}/v2/health/live").status_code == 200

    state = json.loads(_podman("inspect", container_name))[0]
    assert state["HostConfig"]["ReadonlyRootfs"] is True
    assert _podman("exec", container_name, "id", "-u").strip() == "10001"
    denied = subprocess.run(
        [str(PODMAN), "exec", container_name, "touch", "/opt/citybrain/written"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    image_user = _podman("image", "inspect", platform_image, "--format", "{{.Config.User}}")
    assert image_user.strip() == "10001:10001"
    torch_version = _podman(
        "exec", container_name, "python", "-c", "import torch; print(torch.__version__)"
    )
    assert torch_version.strip() == "2.13.0+cpu"

    # Its state went to the volume: the database, and the usage spool its server holds.
    assert (data / "citybrain.db").is_file()
    status = json.loads(_podman("exec", container_name, "citybrain", "usage", "status", "--json"))
    assert status["spool_dir"] == "/var/lib/citybrain/spool" and status["server_running"]

    # A metered call of the demo model the image seeds, answered by torch inside the image.
    seeded = _podman("exec", container_name, "citybrain", "seed", timeout=300)
    keys = dict(re.findall(r"^\s+([a-z0-9-]+)\s+(cbk_\S+)$", seeded, flags=re.M))
    flow = [10.0, 30.0, 12.0, 28.0, 14.0, 35.0, 11.0, 29.0]
    r = httpx.post(
        f"{base}/v2/models/traffic-police.flow-smoother/infer",
        headers={"Authorization": f"Bearer {keys['parkeasy']}"},
        json={"inputs": [{"name": "flow", "datatype": "FP32", "shape": [1, 8], "data": flow}]},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    (output,) = r.json()["outputs"]
    assert output["name"] == "smoothed" and output["shape"] == [1, 8]
    smoothed = np.array(output["data"], dtype=np.float32)
    # Smoothing narrows the swing between neighbouring minutes.
    assert np.ptp(np.diff(smoothed)) < np.ptp(np.diff(np.array(flow, dtype=np.float32)))


def test_the_triton_image_serves_an_exported_model(
    triton_image: str, shared_dir: Path, container_name: str
) -> None:
    import tritonclient.http as triton

    from model_store.builtin import flow_smoother
    from model_store.formats import load_model
    from model_store.triton.repository import export_model

    build_dir = shared_dir / "build"
    build_dir.mkdir()
    artifact, manifest = flow_smoother.build(build_dir)
    repository = shared_dir / "models"
    # No folders of this machine's Python: the image's own model_store must serve it.
    exported = export_model(
        repository, "traffic-police.flow-smoother:1", manifest, artifact, python_paths=[]
    )
    for path in [shared_dir, *shared_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    port = free_port()
    # The ServingRuntime's command (k8s/serving/triton-runtime.yaml), as its uid, read-only.
    _podman(
        "run", "--detach", "--name", container_name, *RUN_OPTIONS,
        "--read-only", "--user", "1000:1000",
        "--volume", f"{repository}:/mnt/models:ro",
        "--publish", f"127.0.0.1:{port}:8080",
        triton_image,
        "tritonserver", "--model-store=/mnt/models", "--http-port=8080", "--grpc-port=9000",
        "--allow-grpc=true", "--allow-http=true", "--disable-auto-complete-config",
        "--pinned-memory-pool-byte-size=0", "--allow-metrics=false",
    )  # fmt: skip
    _wait_for(f"http://127.0.0.1:{port}/v2/models/{exported.name}/ready", container_name)

    flow = np.random.default_rng(7).poisson(30, size=(3, 60)).astype(np.float32)
    client = triton.InferenceServerClient(f"127.0.0.1:{port}")
    inp = triton.InferInput("flow", list(flow.shape), "FP32")
    inp.set_data_from_numpy(flow)
    result = client.infer(exported.name, [inp])
    served = result.as_numpy("smoothed")
    expected = load_model(manifest, artifact).predict({"flow": flow})["smoothed"]
    assert served is not None
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
