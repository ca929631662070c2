"""Readiness against real parts: a PostgreSQL database dropped under the server, and a real
tritonserver (the one bundled with nvidia-pytriton) killed and restarted.

The SQLite, spool, flusher and KServe cases are in tests/unit/marketplace/test_health.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from marketplace.api.app import create_app
from marketplace.config import Settings, TritonSettings
from marketplace.migrate import upgrade
from model_store.triton.server import ManagedTritonServer
from tests.utils.postgres import ScratchDatabase, admin_connection, scratch_database

ROUTES = ("/v2/health/ready", "/api/v1/health")


def _read(client: TestClient) -> list[tuple[int, dict[str, Any]]]:
    return [(r.status_code, r.json()) for r in (client.get(path) for path in ROUTES)]


def _component(client: TestClient, name: str) -> list[tuple[int, str]]:
    return [(status, body["components"][name]["status"]) for status, body in _read(client)]


@pytest.fixture
def own_database() -> Iterator[ScratchDatabase]:
    """A database of this test's own (it is dropped while the server runs)."""
    with scratch_database("citybrain_ready") as db:
        upgrade(db.url)
        yield db


def test_a_dropped_postgresql_database_is_down(
    own_database: ScratchDatabase, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "var", database_url=own_database.url)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert _component(client, "database") == [(200, "up"), (200, "up")]
        with admin_connection() as conn:  # ends every session too
            conn.execute(f'DROP DATABASE "{own_database.name}" WITH (FORCE)')
        for status, body in _read(client):
            assert status == 503 and body["code"] == "Unavailable"
            assert "database" in body["error"]
            assert body["components"]["database"] == {"status": "down", "reason": "unreachable"}
        assert client.get("/v2/health/live").status_code == 200


@pytest.fixture(scope="module")
def tritonserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedTritonServer]:
    """A real tritonserver the test owns, which the platform reaches as an external Triton."""
    base = tmp_path_factory.mktemp("triton-ready")
    server = ManagedTritonServer(base, repository=base / "models")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_an_external_triton_is_checked_for_real(
    tritonserver: ManagedTritonServer, tmp_path: Path, sqlite_template: Path
) -> None:
    db = tmp_path / "citybrain.db"
    shutil.copy(sqlite_template, db)
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=f"sqlite:///{db}",
        triton=TritonSettings(url=tritonserver.url, repository_dir=tritonserver.repository),
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert _component(client, "triton") == [(200, "up"), (200, "up")]
        assert tritonserver.pid is not None
        os.kill(tritonserver.pid, signal.SIGKILL)
        deadline = time.monotonic() + 60  # a bound for "eventually", never asserted as a time
        while tritonserver.is_running():
            assert time.monotonic() < deadline, "the killed tritonserver did not exit"
            time.sleep(0.05)
        for status, body in _read(client):
            assert status == 503 and "triton" in body["error"]
            assert body["components"]["triton"] == {"status": "down", "reason": "unreachable"}
            assert body["components"]["database"] == {"status": "up"}
        tritonserver.restart()  # keeps its ports (they are free again): the same URL
        assert tritonserver.url == settings.triton.url
        assert _component(client, "triton") == [(200, "up"), (200, "up")]
