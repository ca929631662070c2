"""Integration fixtures: ``database_url`` is the session's PostgreSQL database here.

Every test in this folder is marked ``integration``. ``pg_url`` (the migrated scratch database)
lives in ``tests/conftest.py``; API suites that run on both SQLite and PostgreSQL stay in
``tests/unit`` and say so with ``pytest.mark.databases``.
"""

from __future__ import annotations

import pytest

from tests.utils.postgres import emptied


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def database_url(pg_url: str) -> str:
    """The session's database, emptied before each test."""
    return emptied(pg_url)
