"""Migration 0007_billing creates exactly billing.tables' rating tables, and drops them again."""

from __future__ import annotations

from pathlib import Path

from billing.tables import rating_metadata
from tests.utils.migrations import load_migration, migration_run


def test_migration_matches_the_rating_tables(tmp_path: Path) -> None:
    migration = load_migration("0007_billing")
    assert migration.revision == "0007_billing"
    with migration_run(tmp_path) as db:
        db.upgrade(migration)
        assert db.diff(rating_metadata) == []
        assert db.tables() == set(rating_metadata.tables)
        db.downgrade(migration)
        assert db.tables() == set()
