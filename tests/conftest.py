"""Fixtures shared by every test: a migrated database, the app, the seeded demo city.

Unit tests run on SQLite (a migrated template file copied per test). A module marked
``pytestmark = pytest.mark.databases("sqlite", "postgresql")`` runs each of its tests that use
``database_url`` once per backend (ids ``[sqlite]``, ``[postgresql]``); the PostgreSQL runs are
marked ``integration`` and share one migrated scratch database, emptied before each test.
``tests/integration`` overrides ``database_url`` with that PostgreSQL database for its own tests.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from marketplace.api.app import create_app
from marketplace.config import Settings
from marketplace.db import make_engine, make_session_factory, transaction
from marketplace.migrate import upgrade
from marketplace.seed import seed_demo_city
from tests.utils.city import City
from tests.utils.kube import FakeKubeAPI
from tests.utils.postgres import emptied, scratch_database

DATABASES = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "databases(*backends): run the tests that use database_url on each backend named"
        f" (of {', '.join(DATABASES)}); the postgresql runs are integration tests",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("databases")
    if marker is None or "database_url" not in metafunc.fixturenames:
        return
    unknown = set(marker.args) - set(DATABASES)
    if unknown or not marker.args:
        raise pytest.UsageError(f"databases({marker.args}): pick from {DATABASES}")
    metafunc.parametrize(
        "database_url",
        [
            pytest.param(b, id=b, marks=[pytest.mark.integration] if b == "postgresql" else [])
            for b in marker.args
        ],
        indirect=True,
    )


@pytest.fixture
def fake_api() -> Iterator[FakeKubeAPI]:
    """A fake Kubernetes API server (tests/utils/kube.py), stopped afterwards."""
    api = FakeKubeAPI().start()
    yield api
    api.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "citybrain.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """One migrated PostgreSQL database for the session's tests (see ``database_url``)."""
    with scratch_database() as db:
        upgrade(db.url)
        yield db.url


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database of the backend this test runs on (SQLite unless parametrised)."""
    if getattr(request, "param", "sqlite") == "postgresql":
        return emptied(request.getfixturevalue("pg_url"))
    dest = tmp_path / "citybrain.db"
    shutil.copy(request.getfixturevalue("sqlite_template"), dest)
    return f"sqlite:///{dest}"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "var", database_url=database_url)


@pytest.fixture
def session_factory(settings: Settings):  # type: ignore[no-untyped-def]
    engine = make_engine(settings.database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def city(client: TestClient, session_factory) -> City:  # type: ignore[no-untyped-def]
    with transaction(session_factory) as session:
        result = seed_demo_city(session)
    return City(client=client, keys=result.keys, session_factory=session_factory)
