"""Engine and session factory for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker


class Base(DeclarativeBase):
    pass


def make_engine(database_url: str, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and a busy timeout."""
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            database_url,
            connect_args={"check_same_thread": False, "timeout": 30},
            **kwargs,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, decide when a transaction begins.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # IMMEDIATE takes the write lock up front, so two writers never deadlock on upgrade;
            # read-mostly connections (the gateway's lookups) open no transaction at all.
            if conn.get_execution_options().get(READ_MOSTLY):
                return  # autocommit reads: each statement sees the latest commit, no lock
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    url = database_url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


READ_MOSTLY = "citybrain_read_mostly"


def make_session_factory(engine: Engine, *, read_mostly: bool = False) -> sessionmaker[Session]:
    """Sessions on ``engine``. ``read_mostly`` sessions are for reads: on SQLite they open no
    transaction (each statement reads the latest commit, without the write lock), so many read
    at once; a write in one commits by itself. PostgreSQL is unaffected."""
    bind = engine.execution_options(**{READ_MOSTLY: True}) if read_mostly else engine
    return sessionmaker(bind, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back everything on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# --------------------------------------------------------------------------- tenant context

TENANT_ROLE = "citybrain_tenant"
ANONYMOUS_TENANT = 0


def set_tenant_context(
    session: Session, *, tenant_id: int, government: bool = False, operator: bool = False
) -> None:
    """Run this session's transactions as the caller's tenant (PostgreSQL row-level security).

    Applies to the current transaction and every later one of the session: ``SET LOCAL ROLE``
    to the policy-bound role plus the tenant settings the policies read (migration 0006). On
    SQLite it does nothing; the application's checks are the only wall there.
    """
    session.info["tenant_context"] = (tenant_id, government, operator)
    if session.in_transaction():
        _apply_tenant_context(session.connection(), session.info["tenant_context"])


def _apply_tenant_context(connection: Any, ctx: tuple[int, bool, bool]) -> None:
    if connection.dialect.name != "postgresql":
        return
    tenant_id, government, operator = ctx
    connection.exec_driver_sql(f"SET LOCAL ROLE {TENANT_ROLE}")
    connection.exec_driver_sql(
        "SELECT set_config('citybrain.tenant_id', %(t)s, true),"
        " set_config('citybrain.government', %(g)s, true),"
        " set_config('citybrain.operator', %(o)s, true)",
        {"t": str(tenant_id), "g": "on" if government else "off", "o": "on" if operator else "off"},
    )


@event.listens_for(Session, "after_begin")
def _tenant_context_on_begin(session: Session, _transaction: Any, connection: Any) -> None:
    ctx = session.info.get("tenant_context")
    if ctx is not None:
        _apply_tenant_context(connection, ctx)
