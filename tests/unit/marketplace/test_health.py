"""Readiness tells the truth: the database, the usage spool and each configured runtime.

Each test breaks one component for real (a database file that cannot be opened, a spool
directory replaced by a file — which fails for root too, unlike ``chmod`` —, a stopped
flusher, a Kubernetes API or a Triton that does not answer) and reads both readiness routes,
then mends it where it can and reads them again. Liveness never looks at any of it. A usage
store that refuses flushes is noted, not down: the spool still meters every call.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from marketplace.api.app import create_app
from marketplace.config import BillingSettings, KServeSettings, Settings, TritonSettings
from tests.utils.kube import FakeKubeAPI
from tests.utils.server import free_port
from tests.utils.usage import make_usage_event

ROUTES = ("/v2/health/ready", "/api/v1/health")


@pytest.fixture
def db_dir(tmp_path: Path, sqlite_template: Path) -> Path:
    """The database in a folder of its own, so that the test can take the folder away."""
    folder = tmp_path / "db"
    folder.mkdir()
    shutil.copy(sqlite_template, folder / "citybrain.db")
    return folder


def _app(tmp_path: Path, db_dir: Path, **settings: Any) -> TestClient:
    cfg = Settings(
        data_dir=tmp_path / "var",
        database_url=f"sqlite:///{db_dir / 'citybrain.db'}",
        # One flush pass at start, then none during the test: the checks are what is read.
        billing=BillingSettings(flush_interval_s=3600),
        **settings,
    )
    return TestClient(create_app(cfg), raise_server_exceptions=False)


def _read(client: TestClient) -> list[tuple[int, dict[str, Any]]]:
    return [(r.status_code, r.json()) for r in (client.get(path) for path in ROUTES)]


def _down(client: TestClient, component: str, reason: str | None = None) -> None:
    """Both routes answer 503 naming ``component``, in the platform's error shape."""
    for status, body in _read(client):
        assert status == 503, body
        assert body["code"] == "Unavailable" and body["request_id"]
        assert body["ready"] is False and component in body["error"]
        assert body["components"][component]["status"] == "down"
        if reason is not None:
            assert body["components"][component]["reason"] == reason
    assert client.get("/v2/health/live").json() == {"live": True}


def _up(client: TestClient) -> dict[str, Any]:
    (v2_status, v2), (api_status, api) = _read(client)
    assert (v2_status, api_status) == (200, 200), (v2, api)
    assert v2["ready"] is True and "error" not in v2
    assert api["status"] == "ok" and api["components"] == v2["components"]
    components: dict[str, Any] = v2["components"]
    return components


def test_all_up_names_the_components_checked(tmp_path: Path, db_dir: Path) -> None:
    with _app(tmp_path, db_dir) as client:
        components = _up(client)
    assert components["database"] == {"status": "up"}
    assert components["usage_spool"] == {"status": "up"}
    # The managed Triton starts with its first model: not down, and not claimed up either.
    assert components["triton"]["status"] == "idle"
    assert "kserve" not in components  # not configured


def test_a_database_that_cannot_be_opened_is_down(tmp_path: Path, db_dir: Path) -> None:
    with _app(tmp_path, db_dir) as client:
        _up(client)
        engine = client.app.state.engine  # type: ignore[attr-defined]
        gone = db_dir.with_name("db-gone")
        db_dir.rename(gone)
        engine.dispose()  # pooled connections still hold the moved file open
        try:
            _down(client, "database", "unreachable")
        finally:
            gone.rename(db_dir)
        engine.dispose()
        assert _up(client)["database"] == {"status": "up"}


def test_an_unwritable_spool_is_down(tmp_path: Path, db_dir: Path) -> None:
    with _app(tmp_path, db_dir) as client:
        _up(client)
        spool_dir = Path(client.app.state.settings.billing.spool_dir)  # type: ignore[attr-defined]
        moved = spool_dir.with_name("spool-moved")
        spool_dir.rename(moved)
        spool_dir.write_text("not a directory")  # ENOTDIR, for root as for anyone
        try:
            _down(client, "usage_spool", "not writable")
        finally:
            spool_dir.unlink()
            moved.rename(spool_dir)
        assert _up(client)["usage_spool"] == {"status": "up"}


def test_a_stopped_flusher_is_down(tmp_path: Path, db_dir: Path) -> None:
    with _app(tmp_path, db_dir) as client:
        _up(client)
        gateway = client.app.state.gateway  # type: ignore[attr-defined]
        gateway.usage.flusher.stop(flush=False)
        _down(client, "usage_spool", "flusher stopped")


def test_failing_flushes_are_noted_but_calls_can_still_be_metered(
    tmp_path: Path, db_dir: Path
) -> None:
    """The usage store refuses the flush (its table is gone): events wait in the spool, which
    still takes them, so the process stays ready, and says what is wrong."""
    with _app(tmp_path, db_dir) as client:
        meter = client.app.state.gateway.usage  # type: ignore[attr-defined]
        with client.app.state.engine.begin() as conn:  # type: ignore[attr-defined]
            conn.exec_driver_sql("DROP TABLE usage_event")
        meter.record_sync(
            make_usage_event("waits-in-the-spool", tenant_id=1, product="traffic-police.anything")
        )
        with pytest.raises(sqlite3.OperationalError):
            meter.flusher.flush_once()
        spool = _up(client)["usage_spool"]
        assert spool["status"] == "up" and "flushes to the database fail" in spool["note"]


@pytest.fixture
def kube() -> Iterator[FakeKubeAPI]:
    api = FakeKubeAPI().start()
    yield api
    api.stop()


def test_kserve_when_configured(tmp_path: Path, db_dir: Path, kube: FakeKubeAPI) -> None:
    """The Kubernetes API (a local fake of it: no cluster runs here) answers, then is gone."""
    kserve = KServeSettings(kubeconfig=kube.kubeconfig(tmp_path / "kubeconfig"))
    with _app(tmp_path, db_dir, kserve=kserve) as client:
        assert _up(client)["kserve"] == {"status": "up"}
        assert any(
            path.endswith("/inferenceservices/citybrain-readiness-probe")
            for _, path, _ in kube.requests
        )
        kube.stop()
        _down(client, "kserve")


def test_an_external_triton_that_does_not_answer_is_down(tmp_path: Path, db_dir: Path) -> None:
    """Nothing listens at the configured URL (a real one answering: tests/integration)."""
    triton = TritonSettings(url=f"http://127.0.0.1:{free_port()}", repository_dir=tmp_path / "repo")
    with _app(tmp_path, db_dir, triton=triton) as client:
        _down(client, "triton", "unreachable")
