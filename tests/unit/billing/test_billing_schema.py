"""The migration creates exactly billing.tables' usage_event; billing stays independent."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import create_engine, inspect

from billing.tables import metadata

REPO_ROOT = Path(__file__).resolve().parents[3]
MIGRATION = REPO_ROOT / "marketplace" / "migrations" / "versions" / "0002_usage_event.py"


def _load_migration() -> ModuleType:
    spec = importlib.util.spec_from_file_location("migration_0002_usage_event", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_migration_matches_the_table_definition(tmp_path: Path) -> None:
    migration = _load_migration()
    assert migration.revision == "0002_usage_event"
    assert migration.down_revision == "0001_foundation"
    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        with engine.begin() as conn:
            context = MigrationContext.configure(conn)
            with Operations.context(context):
                migration.upgrade()
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
            assert diff == []
            assert inspect(conn).get_pk_constraint("usage_event")["constrained_columns"] == [
                "tenant_id",
                "id",
            ]
            with Operations.context(context):
                migration.downgrade()
            assert "usage_event" not in inspect(conn).get_table_names()
    finally:
        engine.dispose()


def test_billing_imports_no_service_or_web_framework() -> None:
    probe = (
        "import sys, billing, billing.metering, billing.flusher, billing.spool, billing.tables;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'marketplace', 'model_store', 'fastapi', 'starlette'});"
        "print(','.join(bad))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == ""
