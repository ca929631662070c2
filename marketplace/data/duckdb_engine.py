"""The embedded DuckDB engine: compiled plans over Parquet snapshots, fenced in.

One in-memory DuckDB database per process, opened on first use, with its configuration locked:
``enable_external_access=false`` with the blob store's snapshot folder as the one allowed
directory (no other file, no network, no extension can be reached, and no query can change
that: ``lock_configuration``), a ``memory_limit`` and a thread count shared by every query of
the process. Each query runs on a cursor of its own, at most ``max_concurrent_queries`` at
once, and is interrupted from a timer at ``query_timeout_s``: a runaway query answers 503 and
frees its worker thread, it never hangs it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from sqlglot import exp

from marketplace.config import DataSettings
from marketplace.data.engine import Snapshot
from marketplace.data.errors import EngineBusyError, QueryMemoryError, QueryTimeoutError
from marketplace.data.masking import SNAPSHOT_TABLE
from marketplace.errors import InvalidInputError
from model_store import BlobStore

__all__ = ["DuckDBEngine", "fenced_connection"]

log = logging.getLogger(__name__)

_RENDERED_ENTRIES = 1024


def fenced_connection(
    allowed: list[str], *, memory_limit: str, threads: int
) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB that may read (and write) only under ``allowed`` folders or
    files, with its configuration locked."""
    conn = duckdb.connect(
        ":memory:",
        config={
            "threads": threads,
            "memory_limit": memory_limit,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        },
    )
    try:
        listed = ", ".join("'" + p.replace("'", "''") + "'" for p in allowed)
        # GLOBAL: each query runs on a cursor of its own, and a plain SET holds for this
        # connection's session alone (a cursor would read timestamps in the host's zone).
        # Timestamps with a time zone are read and shown in UTC, whatever the host's zone.
        conn.execute("SET GLOBAL TimeZone='UTC'")
        # No progress bar on the server's terminal (a session setting: cursors start without).
        conn.execute("SET enable_progress_bar=false")
        # Snapshots are content-addressed and never change: their Parquet footers (row-group
        # statistics) are read once per process, not once per query.
        conn.execute("SET GLOBAL parquet_metadata_cache=true")
        conn.execute(f"SET allowed_directories=[{listed}]")
        conn.execute("SET enable_external_access=false")
        conn.execute("SET lock_configuration=true")
    except BaseException:
        conn.close()
        raise
    return conn


class _Deadline:
    """Interrupts a cursor when its time is up; remembers that it did."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, seconds: float) -> None:
        self.fired = False
        self._cursor = cursor
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        self._cursor.interrupt()

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


class DuckDBEngine:
    """:class:`~marketplace.data.engine.QueryEngine` on embedded DuckDB."""

    name = "duckdb"
    dialect = "duckdb"

    def __init__(self, settings: DataSettings, blobs: BlobStore) -> None:
        self._settings = settings
        self._blobs = blobs
        self._lock = threading.Lock()
        self._db: duckdb.DuckDBPyConnection | None = None
        self._root: Path | None = None
        self._slots = threading.BoundedSemaphore(settings.max_concurrent_queries)
        # Rendered SQL by query object: the pipeline reuses a compiled plan's tree for the
        # same plan and view, so rendering it once is enough. Each entry holds its tree, so
        # no id is reused while it is cached.
        self._rendered: dict[int, tuple[exp.Expr, Path, str]] = {}

    def _local(self, snapshot: Snapshot) -> Path:
        return self._blobs.local_path(snapshot.digest)

    def _cursor(self, path: Path) -> duckdb.DuckDBPyConnection:
        # Every blob (local store or local cache of a remote one) lives under
        # <root>/sha256/<2 hex>/<62 hex>: that folder is the one DuckDB may read.
        root = path.parent.parent
        with self._lock:
            if self._db is None:
                self._db = fenced_connection(
                    [str(root) + "/"],
                    memory_limit=self._settings.memory_limit,
                    threads=self._settings.threads,
                )
                self._root = root
            elif root != self._root:  # pragma: no cover - one blob store per process
                raise RuntimeError(f"snapshot {path} is outside {self._root}")
            return self._db.cursor()

    @staticmethod
    def _bind(query: exp.Expr, path: Path) -> str:
        source = exp.Table(
            this=exp.Anonymous(this="read_parquet", expressions=[exp.Literal.string(str(path))])
        )

        def swap(node: exp.Expr) -> exp.Expr:
            if isinstance(node, exp.Table) and node.name == SNAPSHOT_TABLE and not node.db:
                return source.copy()
            return node

        return query.transform(swap).sql(dialect="duckdb")

    @staticmethod
    def _translate(e: Exception, deadline: _Deadline | None, seconds: float) -> Exception:
        if isinstance(e, duckdb.InterruptException) or (deadline is not None and deadline.fired):
            return QueryTimeoutError(f"the query ran past the time limit of {seconds:g} s")
        if isinstance(e, duckdb.OutOfMemoryException):
            return QueryMemoryError("the query needs more memory than the data engine may use")
        if isinstance(e, duckdb.ConversionException):
            message = str(e).removeprefix("Conversion Error: ").splitlines()[0]
            return InvalidInputError(f"a value does not fit its column's type: {message}")
        return e

    def _render(self, query: exp.Expr, path: Path) -> str:
        hit = self._rendered.get(id(query))
        if hit is not None and hit[0] is query and hit[1] == path:
            return hit[2]
        sql = self._bind(query, path)
        with self._lock:
            if len(self._rendered) >= _RENDERED_ENTRIES:
                self._rendered.clear()
            self._rendered[id(query)] = (query, path, sql)
        return sql

    def run(self, snapshot: Snapshot, query: exp.Expr, params: Mapping[str, Any]) -> pa.Table:
        seconds = self._settings.query_timeout_s
        path = self._local(snapshot)
        sql = self._render(query, path)
        if not self._slots.acquire(timeout=seconds):
            raise EngineBusyError("every query slot stayed busy; retry in a moment")
        try:
            cursor = self._cursor(path)
            deadline = _Deadline(cursor, seconds)
            try:
                with deadline:
                    return cursor.sql(sql, params=dict(params)).to_arrow_table()
            except duckdb.Error as e:
                raise self._translate(e, deadline, seconds) from e
            finally:
                cursor.close()
        finally:
            self._slots.release()

    @contextmanager
    def stream(
        self,
        snapshot: Snapshot,
        query: exp.Expr,
        params: Mapping[str, Any],
        *,
        batch_rows: int,
    ) -> Iterator[pa.RecordBatchReader]:
        seconds = self._settings.download_timeout_s
        path = self._local(snapshot)
        sql = self._bind(query, path)
        cursor = self._cursor(path)
        deadline = _Deadline(cursor, seconds)
        try:
            with deadline:
                try:
                    reader = cursor.sql(sql, params=dict(params)).to_arrow_reader(batch_rows)
                except duckdb.Error as e:
                    raise self._translate(e, deadline, seconds) from e

                def batches() -> Iterator[pa.RecordBatch]:
                    try:
                        yield from reader
                    except duckdb.Error as e:
                        raise self._translate(e, deadline, seconds) from e

                yield pa.RecordBatchReader.from_batches(reader.schema, batches())
        finally:
            cursor.close()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
