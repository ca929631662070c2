"""Rating, late usage, reports and Stripe sync of billing's unit suites, run on PostgreSQL.

``engine`` here is a fresh PostgreSQL database with billing's tables (see
``tests/integration/billing/conftest.py`` for the same pattern), so the SQL aggregates run on
the production dialect: ``to_char(timezone('UTC', at), 'YYYY-MM')`` instead of SQLite's substr.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, create_engine

from billing.tables import metadata, rating_metadata
from tests.unit.billing.test_rating import *  # noqa: F403
from tests.unit.billing.test_reports import *  # noqa: F403

SERVER = "host=127.0.0.1 port=5432 user=postgres"


@pytest.fixture
def engine() -> Iterator[Engine]:
    name = f"citybrain_test_rating_{secrets.token_hex(6)}"
    with psycopg.connect(f"{SERVER} dbname=postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    eng = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    metadata.create_all(eng)
    rating_metadata.create_all(eng)
    try:
        yield eng
    finally:
        eng.dispose()
        with psycopg.connect(f"{SERVER} dbname=postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
