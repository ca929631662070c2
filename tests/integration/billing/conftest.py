"""A fresh PostgreSQL database per module for billing's integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine

from billing.tables import metadata
from tests.utils.postgres import scratch_database


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """Create ``citybrain_test_billing_<hex>`` and drop it afterwards."""
    with scratch_database("citybrain_test_billing") as db:
        yield db.url


@pytest.fixture(scope="module")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = create_engine(pg_url, connect_args={"connect_timeout": 5})
    metadata.create_all(engine)
    yield engine
    engine.dispose()
