"""The federation feed and harvest tests with the city on PostgreSQL (``database_url`` is
overridden in this folder's conftest; the hub stays a SQLite file): the feed's query under the
tenant-bound session (row-level security) says the same as on SQLite."""

from __future__ import annotations

from tests.unit.marketplace.test_federation_harvest import *  # noqa: F403
