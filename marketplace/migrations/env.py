"""Alembic environment: one history for the marketplace's and billing's tables."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import context
from sqlalchemy import Connection, pool, text

from billing.tables import metadata as billing_metadata
from billing.tables import rating_metadata
from marketplace.db import Base, make_engine

config = context.config
# pg_advisory_lock key of the migrations: any constant shared by every process of the platform.
MIGRATION_LOCK_KEY = 0x43_42_4D_49_47  # "CBMIG"
target_metadata = [Base.metadata, billing_metadata, rating_metadata]


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


@contextmanager
def _migration_lock(conn: Connection) -> Iterator[None]:
    """On PostgreSQL, one migrating process at a time: the others wait, then find the
    database at head and do nothing. A session-level lock, released even if a revision fails."""
    if conn.dialect.name != "postgresql":
        yield
        return
    conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
    conn.commit()
    try:
        yield
    finally:
        if conn.in_transaction():
            conn.rollback()
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
        conn.commit()


def _run(conn: Connection) -> None:
    with _migration_lock(conn):
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
