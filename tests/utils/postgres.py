"""Scratch PostgreSQL databases for tests and benches: one helper, one admin connection.

Every test module and bench that needs a database of its own creates it here and gets it
dropped afterwards, even when the test fails. The admin connection is
``CITYBRAIN_TEST_PG_ADMIN`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``, the
server this machine kind runs on loopback with trust authentication).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

PG_ADMIN_DSN = os.environ.get(
    "CITYBRAIN_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@dataclass(frozen=True)
class ScratchDatabase:
    """A database made for one test module or bench run."""

    name: str
    url: str  # SQLAlchemy URL (psycopg 3 driver)
    host: str
    port: int

    @property
    def dsn(self) -> str:
        """The libpq form of ``url`` (``postgresql://...``), for psycopg and psql."""
        return make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)

    def via(self, host: str, port: int) -> str:
        """The same database reached through another address (a test's TCP proxy)."""
        return make_url(self.url).set(host=host, port=port).render_as_string(hide_password=False)


def admin_connection() -> psycopg.Connection:
    """An autocommit connection to the admin database (CREATE/DROP DATABASE need one)."""
    try:
        return psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        raise RuntimeError(
            f"PostgreSQL is not reachable at {make_url(PG_ADMIN_DSN).render_as_string()}: {e}"
            " (set CITYBRAIN_TEST_PG_ADMIN to an admin connection URL)"
        ) from e


@contextmanager
def scratch_database(prefix: str = "citybrain_test") -> Iterator[ScratchDatabase]:
    """Create ``<prefix>_<random hex>``, yield it, drop it (connections included) afterwards."""
    name = f"{prefix}_{secrets.token_hex(5)}"
    with admin_connection() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    admin_url = make_url(PG_ADMIN_DSN)
    url = admin_url.set(drivername="postgresql+psycopg", database=name)
    try:
        yield ScratchDatabase(
            name=name,
            url=url.render_as_string(hide_password=False),
            host=admin_url.host or "127.0.0.1",
            port=admin_url.port or 5432,
        )
    finally:
        with admin_connection() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def emptied(url: str) -> str:
    """Empty every table of the migrated database at ``url`` but ``alembic_version``
    (identities restarted); return ``url``. Tests sharing one migrated database call it first."""
    from marketplace.db import make_engine

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            tables = [
                r[0]
                for r in conn.execute(
                    text(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                        " AND tablename <> 'alembic_version'"
                    )
                )
            ]
            if tables:
                conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()
    return url
