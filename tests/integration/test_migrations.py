"""The Alembic history, whole: an empty database goes to head and back to base, on SQLite and
PostgreSQL, and several processes migrating one PostgreSQL database at once never race."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect

from marketplace.db import make_engine
from marketplace.migrate import downgrade, upgrade
from tests.utils.postgres import scratch_database

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with scratch_database("citybrain_test_migrations") as db:
        yield db.url


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    finally:
        engine.dispose()


def test_an_empty_database_goes_to_head_and_back_to_base(empty_database: str) -> None:
    upgrade(empty_database)
    at_head = _tables(empty_database)
    assert {"tenant", "api_key", "product", "usage_event", "audit_entry"} <= at_head

    downgrade(empty_database, "base")
    assert _tables(empty_database) == set()
    assert _revision(empty_database) is None

    # And up again: every downgrade left nothing behind that the upgrade trips over.
    upgrade(empty_database)
    assert _tables(empty_database) == at_head


def test_processes_migrating_one_postgresql_database_at_once_take_turns() -> None:
    with scratch_database("citybrain_test_migrations") as db:
        code = "import sys; from marketplace.migrate import upgrade; upgrade(sys.argv[1])"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, db.url],
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(3)
        ]
        outputs = [p.communicate(timeout=300)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], outputs
        assert _revision(db.url) is not None
        assert "product" in _tables(db.url)
