"""Fixtures for billing's unit tests (SQLite file databases, spools in tmp_path)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, func, select

from billing.events import UsageEvent
from billing.spool import Spool
from billing.tables import metadata, usage_event
from tests.unit.billing.billing_city import billing_engine
from tests.utils.usage import make_usage_event

EventFactory = Callable[..., UsageEvent]


@pytest.fixture
def make_event() -> EventFactory:
    """Build a valid usage event; keyword arguments override fields."""
    return make_usage_event


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def spool(spool_dir: Path) -> Iterator[Spool]:
    s = Spool(spool_dir)
    yield s
    s.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def rating_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """Billing's usage and rating tables in a fresh SQLite file, and again in a fresh
    PostgreSQL database, where the SQL aggregates run on the production dialect
    (``to_char(timezone('UTC', at), 'YYYY-MM')`` instead of SQLite's substr)."""
    yield from billing_engine(tmp_path, request.param)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = create_engine(f"sqlite:///{tmp_path / 'billing.db'}")
    metadata.create_all(eng)
    yield eng
    eng.dispose()


def _count_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(usage_event)).scalar_one())


def _ids_in_db(engine: Engine) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(select(usage_event.c.tenant_id, usage_event.c.id)).all()
    return sorted((r[0], r[1]) for r in rows)


@pytest.fixture
def count_rows() -> Callable[[Engine], int]:
    """Count the rows of usage_event."""
    return _count_rows


@pytest.fixture
def ids_in_db() -> Callable[[Engine], list[tuple[int, str]]]:
    """List the (tenant_id, id) keys in usage_event, sorted."""
    return _ids_in_db
