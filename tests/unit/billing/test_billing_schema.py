"""The migration creates exactly billing.tables' usage_event; billing stays independent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect

from billing.tables import metadata
from tests.utils.migrations import load_migration, migration_run

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_migration_matches_the_table_definition(tmp_path: Path) -> None:
    migration = load_migration("0002_usage_event")
    assert migration.revision == "0002_usage_event"
    assert migration.down_revision == "0001_foundation"
    with migration_run(tmp_path) as db:
        db.upgrade(migration)
        assert db.diff(metadata) == []
        pk = inspect(db.conn).get_pk_constraint("usage_event")
        assert pk["constrained_columns"] == ["tenant_id", "id"]
        db.downgrade(migration)
        assert "usage_event" not in db.tables()


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
