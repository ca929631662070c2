"""Migration 0007_billing creates exactly billing.tables' rating tables, and drops them again."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import create_engine, inspect

from billing.tables import rating_metadata

MIGRATION = (
    Path(__file__).resolve().parents[3]
    / "marketplace"
    / "migrations"
    / "versions"
    / "0007_billing.py"
)


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("migration_0007_billing", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_migration_matches_the_rating_tables(tmp_path: Path) -> None:
    migration = _load()
    assert migration.revision == "0007_billing"
    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        with engine.begin() as conn:
            context = MigrationContext.configure(conn)
            with Operations.context(context):
                migration.upgrade()
            assert compare_metadata(MigrationContext.configure(conn), rating_metadata) == []
            assert set(inspect(conn).get_table_names()) == set(rating_metadata.tables)
            with Operations.context(context):
                migration.downgrade()
            assert inspect(conn).get_table_names() == []
    finally:
        engine.dispose()
