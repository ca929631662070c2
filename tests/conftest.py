"""Fixtures shared by every test: a migrated database, the app, the seeded demo city.

Unit tests run on SQLite (a migrated template file copied per test). ``tests/integration``
overrides ``database_url`` with a fresh PostgreSQL database, so the same API tests run there too.
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


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "citybrain.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> str:
    dest = tmp_path / "citybrain.db"
    shutil.copy(sqlite_template, dest)
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
