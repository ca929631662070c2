"""Rating, late usage, reports and Stripe sync of billing's unit suites, run on PostgreSQL.

``engine`` here is a fresh PostgreSQL database with billing's tables (see
``tests/integration/billing/conftest.py`` for the same pattern), so the SQL aggregates run on
the production dialect: ``to_char(timezone('UTC', at), 'YYYY-MM')`` instead of SQLite's substr.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine

from billing.tables import metadata, rating_metadata
from tests.unit.billing.test_rating import *  # noqa: F403
from tests.unit.billing.test_reports import *  # noqa: F403
from tests.utils.postgres import scratch_database


@pytest.fixture
def engine() -> Iterator[Engine]:
    with scratch_database("citybrain_test_rating") as db:
        eng = create_engine(db.url)
        metadata.create_all(eng)
        rating_metadata.create_all(eng)
        try:
            yield eng
        finally:
            eng.dispose()
