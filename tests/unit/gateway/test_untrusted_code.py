"""Tenants' python code through the platform: sandboxed on /v2 and at upload, in process only
when the operator trusts a government tenant's model.

A developer uploads the hostile model of ``factories.HOSTILE_SOURCE`` and calls it over /v2
while the platform keeps serving a TorchScript model beside it; the database it tries to read
is the test's own (the server's SQLite file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from marketplace.cli import app as cli
from marketplace.config import Settings
from marketplace.db import transaction
from tests.unit.gateway.conftest import Models, python_model
from tests.unit.model_store.factories import (
    Hostile,
    make_hostile_model,
    make_python_model,
    sandbox_confines,
)
from tests.utils.city import City

MAX_PROCESSES = 16


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    sandbox = {"memory_bytes": 768 << 20, "call_timeout_s": 5.0, "max_processes": MAX_PROCESSES}
    return Settings(
        data_dir=tmp_path / "var", database_url=database_url, model_store={"sandbox": sandbox}
    )


def _infer(city: City, handle: str, inputs: list[dict[str, Any]], who: str = "parkeasy") -> Any:
    return city.client.post(
        f"/v2/models/{handle}/infer", json={"inputs": inputs}, headers=city.headers(who)
    )


def _mode(city: City, handle: str, mode: int) -> Any:
    return _infer(
        city, handle, [{"name": "mode", "datatype": "INT32", "shape": [1], "data": [mode]}]
    )


def _doubled(models: Models) -> None:
    """The TorchScript model beside the failing one still answers, and right."""
    x = {"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}
    r = _infer(models.city, models.public, [x])
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [2, 4, 6]


def _publish(city: City, owner: str, handle: str) -> None:
    r = city.client.post(f"/api/v1/products/{handle}/publish", headers=city.headers(owner))
    assert r.status_code == 200, r.text


def test_a_hostile_model_over_v2_gets_nothing_and_the_platform_keeps_serving(
    models: Models, tmp_path: Path
) -> None:
    city = models.city
    database = city.client.app.state.settings.database_url.removeprefix("sqlite:///")  # type: ignore[attr-defined]
    targets = {"database": database, "gateway_environ": f"/proc/{os.getpid()}/environ"}
    artifact, manifest = make_hostile_model(tmp_path, targets)
    handle = city.product("parkeasy", kind="model", publish=False)
    r = models.upload("parkeasy", handle, artifact, manifest)  # validated in a worker too
    assert r.status_code == 201, r.text
    _publish(city, "parkeasy", handle)

    r = _mode(city, handle, Hostile.PROBE)
    assert r.status_code == 200, r.text
    report = json.loads(r.json()["outputs"][0]["data"][0])
    assert report["env"] == [] and report["pid"] != os.getpid()
    probe = tmp_path / "probe"
    probe.mkdir()
    if sandbox_confines(probe):
        assert set(report["files"].values()) <= {"FileNotFoundError", "PermissionError"}
        assert report["postgres"] != "connected"
        assert report["children"] < MAX_PROCESSES
    for mode in (Hostile.HOARD, Hostile.SLEEP, Hostile.CRASH):
        r = _mode(city, handle, mode)
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "ModelUnavailable"
        _doubled(models)
        r = _mode(city, handle, Hostile.ECHO)  # restarted
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == ["ok"]
    r = _mode(city, handle, Hostile.RAISE)
    assert r.status_code == 500 and r.json()["code"] == "InferenceFailed"
    assert "on purpose" not in r.text  # the model's own message is logged, not returned


def test_a_well_behaved_python_model_answers_right_through_v2(models: Models) -> None:
    artifact, manifest = make_python_model(models.tmp)
    handle = models.city.product("parkeasy", kind="model", publish=False)
    r = models.upload("parkeasy", handle, artifact, manifest)
    assert r.status_code == 201, r.text
    _publish(models.city, "parkeasy", handle)
    x = {"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4.5]}
    r = _infer(models.city, handle, [x])
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0] == {
        "name": "y",
        "datatype": "FP32",
        "shape": [2, 2],
        "data": [2, 4, 6, 9],
    }


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("import os\nos._exit(3)\n", "unloadable: the model exited while loading (exit status 3)"),
        ("X = 1 / 0\n", "unloadable: ZeroDivisionError: division by zero"),
    ],
    ids=["crashes", "raises"],
)
def test_uploading_a_model_that_fails_on_import_is_a_clear_422(
    models: Models, source: str, says: str
) -> None:
    spec = [{"name": "x", "datatype": "FP32", "shape": [-1]}]
    artifact, manifest = python_model(models.tmp, source, {"inputs": spec, "outputs": spec})
    handle = models.city.product("parkeasy", kind="model", publish=False)
    r = models.upload("parkeasy", handle, artifact, manifest)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "InvalidArtifact" and says in r.json()["error"]
    versions = models.city.client.get(
        f"/api/v1/products/{handle}/versions", headers=models.city.headers("parkeasy")
    )
    assert versions.json()["count"] == 0


PID_SOURCE = """
import os
import numpy as np


class M:
    def predict(self, inputs):
        return {"pid": np.full(inputs["x"].shape, os.getpid(), dtype=np.int64)}
"""
PID_SPEC = {
    "inputs": [{"name": "x", "datatype": "INT64", "shape": [1]}],
    "outputs": [{"name": "pid", "datatype": "INT64", "shape": [1]}],
}


def _pid_model(models: Models, owner: str) -> str:
    artifact, manifest = python_model(models.tmp, PID_SOURCE, PID_SPEC)
    handle = models.city.product(owner, kind="model", publish=False)
    assert models.upload(owner, handle, artifact, manifest).status_code == 201
    _publish(models.city, owner, handle)
    return handle


def _served_by(models: Models, handle: str, version: int) -> int:
    x = {"name": "x", "datatype": "INT64", "shape": [1], "data": [0]}
    r = models.city.client.post(
        f"/v2/models/{handle}/versions/{version}/infer",
        json={"inputs": [x]},
        headers=models.city.headers("parkeasy"),
    )
    assert r.status_code == 200, r.text
    pid: int = r.json()["outputs"][0]["data"][0]
    return pid


def test_the_operator_trusts_government_models_only(models: Models) -> None:
    city = models.city
    url = city.client.app.state.settings.database_url  # type: ignore[attr-defined]
    runner = CliRunner()
    agency = _pid_model(models, "traffic-police")
    developer = _pid_model(models, "parkeasy")
    assert _served_by(models, agency, 1) != os.getpid()  # isolated until trusted

    r = runner.invoke(cli, ["--database-url", url, "models", "trust", developer])
    assert r.exit_code == 1 and "not a government tenant" in r.output
    r = runner.invoke(cli, ["--database-url", url, "models", "trust", agency])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["--database-url", url, "models", "trusted"])
    assert r.output.split() == [agency]
    # Trust applies when a model loads: a new version loads in process, the loaded one stays.
    artifact, manifest = python_model(models.tmp, PID_SOURCE, PID_SPEC)
    assert models.upload("traffic-police", agency, artifact, manifest).status_code == 201
    assert _served_by(models, agency, 2) == os.getpid()
    assert _served_by(models, agency, 1) != os.getpid()
    assert _served_by(models, developer, 1) != os.getpid()

    audit = city.client.get("/api/v1/audit", headers=city.headers("data-bureau")).json()
    trusted = [e for e in audit["data"] if e["action"] == "product.trust"]
    assert [e["target"] for e in trusted] == [f"product:{agency}"]
    # The database refuses the flag on a developer's product, whoever asks.
    name = developer.split(".", 1)[1]
    with pytest.raises(DBAPIError, match="government"), transaction(city.session_factory) as s:
        s.execute(text("UPDATE product SET trusted_code = 1 WHERE name = :n"), {"n": name})
