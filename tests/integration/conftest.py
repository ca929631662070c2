"""Integration fixtures: a fresh PostgreSQL database per test run, dropped afterwards.

``database_url`` is overridden here, so API tests imported into this folder run against
PostgreSQL (tsvector search, row locks, timestamptz) instead of SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from marketplace.db import make_engine
from marketplace.migrate import upgrade
from tests.utils.postgres import scratch_database


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """One migrated database for the session's API tests (see ``database_url``)."""
    with scratch_database() as db:
        upgrade(db.url)
        yield db.url


@pytest.fixture
def database_url(pg_url: str) -> str:
    """The session's database, emptied before each test."""
    engine = make_engine(pg_url)
    with engine.begin() as conn:
        tables = [
            r[0]
            for r in conn.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
                )
            )
        ]
        if tables:
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return pg_url
