"""A fresh PostgreSQL database per module for billing's integration tests."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, create_engine

from billing.tables import metadata

SERVER = "host=127.0.0.1 port=5432 user=postgres"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """Create ``citybrain_test_billing_<hex>`` and drop it afterwards."""
    name = f"citybrain_test_billing_{secrets.token_hex(6)}"
    with psycopg.connect(f"{SERVER} dbname=postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(f"{SERVER} dbname=postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = create_engine(pg_url, connect_args={"connect_timeout": 5})
    metadata.create_all(engine)
    yield engine
    engine.dispose()
