"""Integration fixtures: a fresh PostgreSQL database per test run, dropped afterwards.

``database_url`` is overridden here, so API tests imported into this folder run against
PostgreSQL (tsvector search, row locks, timestamptz) instead of SQLite.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import text

from marketplace.db import make_engine
from marketplace.migrate import upgrade

PG_ADMIN_DSN = os.environ.get(
    "CITYBRAIN_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_DSN}: {e}")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    name = f"citybrain_test_{secrets.token_hex(4)}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    url = f"{base.replace('postgresql://', 'postgresql+psycopg://')}/{name}"
    upgrade(url)
    yield url
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
