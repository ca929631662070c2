"""Reading an API key for authentication: one statement on a raw driver connection.

The platform's one authentication (``marketplace.auth.authenticate``) checks every API key
against the database, on every entry point and above all the inference hot path, so a revoked
key fails on its very next request; nothing is kept past a change to the database. What it can
shed is the machinery around that one read. Through a pooled SQLAlchemy connection a key read
on PostgreSQL costs three round trips (pre-ping, the query, the rollback on return) plus a hop
to a worker thread; on SQLite the execution machinery costs several times the read itself. A
:class:`KeyReader` runs the very same statement (:data:`marketplace.keys.service.KEY_BY_ID`),
compiled once for the database's dialect, on a raw driver connection, and converts the row with
the dialect's own result processors:

* SQLite (a file): one connection of the process's own, used on the event loop (reads take
  microseconds, a thread hop would cost more); rows are kept until the next commit to the
  file by any connection (``PRAGMA data_version``);
* PostgreSQL: an asynchronous psycopg pool in autocommit mode: one round trip on the event loop,
  no transaction to open or roll back; after a broken connection the pool's idle connections
  are checked and the read is retried once.

The row is then checked by :func:`marketplace.keys.service.check_key`. Readers are opened at the
app's startup and used on its event loop only.
"""

from __future__ import annotations

import asyncio
import logging
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import Engine, Select
from sqlalchemy.engine import Dialect

from marketplace.errors import UnavailableError
from marketplace.keys.service import KEY_BY_ID

log = logging.getLogger(__name__)


class KeyReader(Protocol):
    """Reads one key's :data:`KEY_BY_ID` row by id (None: no such key)."""

    async def read(self, key_id: str) -> Any | None: ...

    async def close(self) -> None: ...


class CompiledRead:
    """A Core select compiled once for a dialect, for execution on a raw DBAPI connection.

    Args:
        stmt: The statement (its bind parameters are named).
        dialect: The database's dialect (paramstyle and result processors come from it).
    """

    def __init__(self, stmt: Select[Any] | Any, dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.sql = str(compiled)
        self._positional = dialect.paramstyle in ("qmark", "numeric", "format")
        self._order: Sequence[str] = list(compiled.positiontup or ())
        columns = list(stmt.selected_columns)
        self._processors: list[Callable[[Any], Any] | None] = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        ]
        self._row = namedtuple("Row", [column.key for column in columns])  # type: ignore[misc]

    def params(self, values: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        """The driver's parameters for ``values``."""
        if self._positional:
            return [values[name] for name in self._order]
        return values

    def row(self, raw: Sequence[Any] | None) -> Any | None:
        """The driver's row as a named row of Python values (None stays None)."""
        if raw is None:
            return None
        return self._row(
            *(
                value if process is None or value is None else process(value)
                for value, process in zip(raw, self._processors, strict=True)
            )
        )


_SQLITE_CACHED_KEYS = 10_000


class SqliteKeyReader:
    """Key reads on a SQLite file, on a connection of the reader's own (autocommit reads: each
    sees the latest commit). Used from the event loop thread only.

    Rows read are kept until the database file changes: SQLite's ``PRAGMA data_version``
    changes whenever any other connection, in this process or another, commits. A revocation,
    rotation or new key is a commit, so the next read after it goes to the table, exactly as if
    nothing were kept; between commits the pragma (a counter in the file's header) is all a
    read costs. The usage flusher's commits clear the rows too, every flush interval.
    """

    def __init__(self, engine: Engine) -> None:
        self._query = CompiledRead(KEY_BY_ID, engine.dialect)
        proxied = engine.raw_connection()
        self._conn: Any = proxied.driver_connection
        proxied.detach()  # ours for the process's life, out of the pool
        self._proxied = proxied  # held: the connection lives as long as the reader
        self._version: int | None = None  # the data_version the rows below were read at
        self._rows: dict[str, Any] = {}

    async def read(self, key_id: str) -> Any | None:
        try:
            cursor = self._conn.execute("PRAGMA data_version")
            try:
                (version,) = cursor.fetchone()
            finally:
                cursor.close()  # no statement left open: it would pin a read snapshot
            if version != self._version:
                self._rows.clear()
                self._version = version
            elif key_id in self._rows:
                return self._rows[key_id]
            cursor = self._conn.execute(self._query.sql, self._query.params({"key_id": key_id}))
            try:
                row = self._query.row(cursor.fetchone())
            finally:
                cursor.close()
        except Exception as e:  # sqlite3.OperationalError: locked past the busy timeout, I/O
            log.error("API key read failed: %s", e)
            raise UnavailableError("the platform database is unavailable; retry") from e
        if len(self._rows) >= _SQLITE_CACHED_KEYS:  # unknown ids sprayed at the gateway
            self._rows.clear()
        self._rows[key_id] = row
        return row

    async def close(self) -> None:
        self._conn.close()


class PostgresKeyReader:
    """Key reads on PostgreSQL through a psycopg async pool in autocommit mode.

    Args:
        engine: The platform's engine (its URL and dialect are used; its pool is not).
        max_size: The most connections the reader holds.
    """

    def __init__(self, engine: Engine, max_size: int = 8) -> None:
        from psycopg_pool import AsyncConnectionPool

        self._query = CompiledRead(KEY_BY_ID, engine.dialect)
        conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._pool = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True},
            open=False,
            name="citybrain-key-reader",
        )
        self._opened: asyncio.Task[None] | None = None

    async def _open(self) -> None:
        if self._opened is None:
            self._opened = asyncio.get_running_loop().create_task(self._pool.open(wait=False))
        await asyncio.shield(self._opened)

    async def read(self, key_id: str) -> Any | None:
        import psycopg

        await self._open()
        params = self._query.params({"key_id": key_id})
        for attempt in (1, 2):
            try:
                async with self._pool.connection() as conn:
                    cursor = await conn.execute(self._query.sql, params)
                    return self._query.row(await cursor.fetchone())
            except psycopg.OperationalError as e:
                # Connections the server dropped (a restart, an idle timeout): the pool discards
                # this one; check the idle ones too, then retry once on a sound connection.
                if attempt == 2:
                    log.error("API key read failed: %s", e)
                    raise UnavailableError("the platform database is unavailable; retry") from e
                await self._pool.check()
            except Exception as e:  # the pool timed out waiting for a connection
                log.error("API key read failed: %s", e)
                raise UnavailableError("the platform database is unavailable; retry") from e
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        if self._opened is not None:
            await self._pool.close()


def key_reader_for(engine: Engine, *, max_size: int = 8) -> KeyReader | None:
    """The fastest key reader for ``engine``'s database, or None where the gateway should use
    its SQLAlchemy session (an in-memory SQLite database, which other connections cannot see)."""
    if engine.dialect.name == "postgresql":
        return PostgresKeyReader(engine, max_size=max_size)
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        return SqliteKeyReader(engine)
    return None
