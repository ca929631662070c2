"""One Alembic migration file, run alone on an empty SQLite database, for schema tests.

Billing owns its tables (``billing.tables``); the platform's migrations create them. A schema
test loads the migration file, runs its ``upgrade()`` on an empty database, compares the result
with the table definitions, then runs ``downgrade()``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Connection, MetaData, create_engine, inspect

__all__ = ["MIGRATIONS", "MigrationRun", "load_migration", "migration_run"]

MIGRATIONS = Path(__file__).resolve().parents[2] / "marketplace" / "migrations" / "versions"


def load_migration(revision_file: str) -> ModuleType:
    """Import ``marketplace/migrations/versions/<revision_file>.py`` as a module of its own."""
    spec = importlib.util.spec_from_file_location(
        f"migration_{revision_file}", MIGRATIONS / f"{revision_file}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class MigrationRun:
    """A connection to the empty database and what a schema test does with it."""

    conn: Connection

    def upgrade(self, migration: ModuleType) -> None:
        with Operations.context(MigrationContext.configure(self.conn)):
            migration.upgrade()

    def downgrade(self, migration: ModuleType) -> None:
        with Operations.context(MigrationContext.configure(self.conn)):
            migration.downgrade()

    def diff(self, metadata: MetaData) -> list[object]:
        """What autogenerate would change to make the database match ``metadata``."""
        return list(compare_metadata(MigrationContext.configure(self.conn), metadata))

    def tables(self) -> set[str]:
        return set(inspect(self.conn).get_table_names())


@contextmanager
def migration_run(tmp_path: Path) -> Iterator[MigrationRun]:
    """An empty SQLite database in ``tmp_path``, in one transaction."""
    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        with engine.begin() as conn:
            yield MigrationRun(conn)
    finally:
        engine.dispose()
