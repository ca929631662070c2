"""Stock v2 clients against the real server (a subprocess), unchanged but for the API key header.

``tritonclient.http`` (binary tensors by default, and JSON with ``binary_data=False``) and
kserve's ``InferenceRESTClient`` call health, metadata and inference; outputs equal the embedded
runtime's in-process result. On SQLite (the embedded default) and on PostgreSQL. ``kserve`` is
imported here only: the server process never imports it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from model_store import BlobStore, EmbeddedRuntime
from model_store.builtin import flow_smoother
from tests.utils.city import migrate_and_seed
from tests.utils.server import running_platform_server

ROOT = Path(__file__).resolve().parents[2]
NAME = flow_smoother.NAME
FLOW = np.random.default_rng(3).poisson(40, size=(4, 60)).astype(np.float32)


@dataclass
class Server:
    url: str
    port: int
    key: str
    data_dir: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def _start(database_url: str, data_dir: Path) -> Iterator[Server]:
    keys = migrate_and_seed(database_url, blobs=BlobStore(data_dir / "artifacts"))
    with running_platform_server(
        database_url=database_url, data_dir=data_dir, log=data_dir.parent / "server.log"
    ) as proc:
        yield Server(url=proc.url, port=proc.port, key=keys.keys["parkeasy"], data_dir=data_dir)


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'citybrain.db'}"
    else:
        url = request.getfixturevalue("database_url")
    yield from _start(url, tmp_path / "var")


def _expected() -> np.ndarray:
    async def go() -> np.ndarray:
        path, manifest = flow_smoother.build(
            Path(os.environ.get("TMPDIR", "/tmp")) / "flow-expected"
        )
        runtime = EmbeddedRuntime()
        try:
            await runtime.load("m", manifest, path)
            return (await runtime.infer("m", {"flow": FLOW}))["smoothed"]
        finally:
            await runtime.close()

    return asyncio.run(go())


def test_tritonclient_http(server: Server) -> None:
    expected = _expected()
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
        assert client.is_model_ready(NAME, headers=server.auth)
        meta = client.get_model_metadata(NAME, headers=server.auth)
        assert meta["inputs"] == [{"name": "flow", "datatype": "FP32", "shape": [-1, -1]}]
        for binary in (True, False):
            inp = triton.InferInput("flow", list(FLOW.shape), "FP32")
            inp.set_data_from_numpy(FLOW, binary_data=binary)
            out = triton.InferRequestedOutput("smoothed", binary_data=binary)
            result = client.infer(NAME, [inp], outputs=[out], headers=server.auth)
            np.testing.assert_array_equal(result.as_numpy("smoothed"), expected)
            assert result.get_response()["model_version"] == "1"
        with pytest.raises(triton.InferenceServerException, match="not found"):
            client.infer("traffic-police.nothing", [inp], headers=server.auth)
        with pytest.raises(triton.InferenceServerException, match="API key"):
            client.infer(NAME, [inp])
    finally:
        client.close()


def test_kserve_rest_client(server: Server) -> None:
    expected = _expected()

    async def go() -> None:
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        try:
            assert await client.is_server_live(server.url)
            assert await client.is_server_ready(server.url)
            assert await client.is_model_ready(server.url, NAME, headers=server.auth)
            for binary in (False, True):
                inp = InferInput(name="flow", shape=list(FLOW.shape), datatype="FP32")
                inp.set_data_from_numpy(FLOW, binary_data=binary)
                req = InferRequest(model_name=NAME, infer_inputs=[inp], request_id="r-1")
                res = await client.infer(
                    server.url, req, model_name=NAME, headers=dict(server.auth)
                )
                assert res.model_name == NAME and res.id == "r-1"
                np.testing.assert_array_equal(res.outputs[0].as_numpy(), expected)
            with pytest.raises(httpx.HTTPStatusError, match="not found"):
                await client.infer(
                    server.url, req, model_name="traffic-police.nothing", headers=dict(server.auth)
                )
        finally:
            await client.close()

    asyncio.run(go())


def test_the_server_never_imports_kserve(server: Server) -> None:
    r = httpx.get(f"{server.url}/v2", timeout=5)
    assert r.status_code == 200
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import marketplace.api.app, marketplace.cli, sys; "
            "print('kserve' in sys.modules, 'tritonclient' in sys.modules)",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert check.stdout.split() == ["False", "False"]
