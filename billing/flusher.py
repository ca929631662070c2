"""Copies usage events from the spool into the database, exactly once.

Each batch is inserted with insert-or-ignore on ``(tenant_id, id)`` in one transaction; only after
the commit is the spool's checkpoint advanced. Whatever fails in between (an exception mid-batch,
the database going away, the process dying) rolls the batch back and leaves the events pending in
the spool, to be inserted again later; an event whose row already exists (a retry with the same
idempotency key, or a batch whose commit succeeded but whose checkpoint did not) is ignored, never
an error and never billed twice.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
from sqlalchemy import Connection, Engine, text
from sqlalchemy.dialects import postgresql

from billing.events import UsageEvent
from billing.metrics import BillingMetrics
from billing.spool import Spool
from billing.tables import usage_event

__all__ = ["STATUS_FILE", "Flusher", "FlusherStats", "PgMethod"]

log = logging.getLogger(__name__)

#: How batches are written on PostgreSQL (see ``bench/metering.py`` for their speed):
#: ``copy``: COPY straight into the table in a savepoint; if a key is already there (a retry), roll
#: the savepoint back and COPY into a temporary staging table, then INSERT ... SELECT ... ON
#: CONFLICT DO NOTHING;
#: ``unnest``: one INSERT ... SELECT FROM unnest(<one array per column>) ON CONFLICT DO NOTHING;
#: ``values``: SQLAlchemy executemany of INSERT ... ON CONFLICT DO NOTHING.
PgMethod = Literal["copy", "unnest", "values"]

#: The flusher's state for other processes, in the spool directory (see ``_publish_status``).
STATUS_FILE = "status.json"
_STATUS_HEARTBEAT_S = 5.0

_COLUMNS = (
    "tenant_id",
    "id",
    "key_id",
    "product",
    "product_id",
    "version",
    "unit",
    "quantity",
    "at",
    "latency_ms",
    "request_id",
)
_COLS_SQL = ", ".join(f'"{c}"' for c in _COLUMNS)
_TABLE = usage_event.name
_STAGE = f"{_TABLE}_stage"
_PG_STAGE_DDL = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} "
    f"(LIKE {_TABLE} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_PG_STAGE_INSERT = (
    f"INSERT INTO {_TABLE} ({_COLS_SQL}) SELECT {_COLS_SQL} FROM {_STAGE} "
    f'ON CONFLICT ("tenant_id", "id") DO NOTHING'
)
_PG_UNNEST_INSERT = (
    f"INSERT INTO {_TABLE} ({_COLS_SQL}) SELECT * FROM unnest("
    "CAST(:tenant_id AS integer[]), CAST(:id AS varchar[]), CAST(:key_id AS varchar[]), "
    "CAST(:product AS varchar[]), CAST(:product_id AS integer[]), CAST(:version AS integer[]), "
    "CAST(:unit AS varchar[]), CAST(:quantity AS numeric[]), CAST(:at AS timestamptz[]), "
    "CAST(:latency_ms AS float8[]), CAST(:request_id AS varchar[])"
    ') ON CONFLICT ("tenant_id", "id") DO NOTHING'
)


_SQLITE_INSERT = (
    f"INSERT INTO {_TABLE} ({_COLS_SQL}) VALUES ({', '.join('?' for _ in _COLUMNS)}) "
    'ON CONFLICT ("tenant_id", "id") DO NOTHING'
)


@functools.cache
def _sqlite_processors(dialect: Any) -> tuple[Callable[[Any], Any] | None, ...]:
    """The SQLite dialect's bind processor of each inserted column (None: passed as is)."""
    return tuple(
        usage_event.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in _COLUMNS
    )


def _row(event: UsageEvent) -> tuple[Any, ...]:
    return (
        event.tenant_id,
        event.id,
        event.key_id,
        event.product,
        event.product_id,
        event.version,
        event.unit,
        event.quantity,
        event.at,
        event.latency_ms,
        event.request_id,
    )


@dataclass(frozen=True, slots=True)
class FlusherStats:
    """What the flusher has done since it was created.

    Attributes:
        delivered: Events committed to the database and marked delivered (duplicates included).
        inserted: Of those, rows that were new.
        duplicates: Of those, events whose ``(tenant_id, id)`` was already recorded.
        failures: Flush batches that failed and were rolled back.
        last_flush_at: When the last successful flush pass ended (UTC), if any.
        last_error: The last failure's message, cleared by the next successful flush.
        running: Whether the background thread is running.
    """

    delivered: int
    inserted: int
    duplicates: int
    failures: int
    last_flush_at: datetime | None
    last_error: str | None
    running: bool


class Flusher:
    """Background delivery of spooled usage events to the ``usage_event`` table."""

    def __init__(
        self,
        engine: Engine,
        spool: Spool,
        batch_size: int = 5000,
        interval_s: float = 0.5,
        metrics: BillingMetrics | None = None,
        *,
        max_backoff_s: float = 30.0,
        pg_method: PgMethod = "copy",
    ) -> None:
        """Create a flusher (not started).

        Args:
            engine: The database (PostgreSQL or SQLite). Give PostgreSQL engines a
                ``connect_timeout`` so an unreachable server fails a flush quickly.
            spool: The spool to deliver from.
            batch_size: The most events per transaction.
            interval_s: The pause between flush passes when all is well.
            metrics: Where to report flush latency, failures and deliveries.
            max_backoff_s: The longest pause between retries after failures.
            pg_method: How batches are written on PostgreSQL (see :data:`PgMethod`).

        Raises:
            ValueError: The engine's dialect is neither PostgreSQL nor SQLite, or an argument is
                out of range.
        """
        if engine.dialect.name not in ("postgresql", "sqlite"):
            raise ValueError(f"unsupported database dialect {engine.dialect.name!r}")
        if batch_size < 1 or interval_s <= 0 or max_backoff_s <= 0:
            raise ValueError("batch_size, interval_s and max_backoff_s must be positive")
        self._engine = engine
        self._spool = spool
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._max_backoff_s = max_backoff_s
        self._metrics = metrics
        self._pg_method: PgMethod = pg_method
        self._is_pg = engine.dialect.name == "postgresql"
        self._flush_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._delivered = 0
        self._inserted = 0
        self._failures = 0
        self._last_flush_at: datetime | None = None
        self._last_error: str | None = None
        self._published: dict[str, Any] | None = None
        self._published_at = 0.0

    @property
    def spool(self) -> Spool:
        """The spool this flusher delivers from."""
        return self._spool

    @property
    def engine(self) -> Engine:
        """The database engine."""
        return self._engine

    def start(self) -> None:
        """Start the background thread (idempotent)."""
        with self._state_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="usage-flusher", daemon=True)
            self._thread.start()

    def stop(self, *, flush: bool = True, timeout_s: float = 30.0) -> None:
        """Stop the background thread, then deliver what is left if the database is reachable.

        Events that cannot be delivered stay in the spool; the next start replays them.

        Args:
            flush: Whether to try a final flush.
            timeout_s: How long to wait for the background thread to finish its current pass.
        """
        self._stop.set()
        with self._state_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
        if flush:
            try:
                self.flush_once()
            except Exception as exc:
                log.warning(
                    "usage flusher: final flush failed, %d events stay in the spool: %s",
                    self._spool.backlog(),
                    exc,
                )
        self._published = None  # always record the final state
        self._publish_status()

    def flush_once(self) -> int:
        """Deliver everything pending now, batch by batch.

        Returns:
            The number of events delivered by this call (duplicates included).

        Raises:
            Exception: Whatever made a batch fail (database errors, spool errors); that batch was
                rolled back and its events stay pending. Batches committed before it stay
                delivered.
        """
        with self._flush_lock:
            total = 0
            while True:
                batch = self._spool.read_pending(self._batch_size)
                if not batch.events:
                    self._spool.mark_delivered(batch.cursor)  # skips empty/sealed segments
                    break
                started = time.perf_counter()
                try:
                    inserted = self._insert(batch.events)
                    self._spool.mark_delivered(batch.cursor)
                except Exception as exc:
                    self._record_failure(exc)
                    raise
                elapsed = time.perf_counter() - started
                n = len(batch.events)
                total += n
                with self._state_lock:
                    self._delivered += n
                    self._inserted += inserted
                if self._metrics is not None:
                    self._metrics.flush_latency.observe(elapsed)
                    self._metrics.events_delivered.inc(n)
                    self._metrics.duplicates_ignored.inc(n - inserted)
                if n < self._batch_size:
                    break
            with self._state_lock:
                self._last_flush_at = datetime.now(UTC)
                self._last_error = None
            return total

    def stats(self) -> FlusherStats:
        """Return what the flusher has done so far."""
        with self._state_lock:
            return FlusherStats(
                delivered=self._delivered,
                inserted=self._inserted,
                duplicates=self._delivered - self._inserted,
                failures=self._failures,
                last_flush_at=self._last_flush_at,
                last_error=self._last_error,
                running=self._thread is not None and self._thread.is_alive(),
            )

    # ------------------------------------------------------------------ internals

    def _publish_status(self) -> None:
        """Write ``<spool dir>/status.json`` for ``citybrain usage status`` (best effort).

        The spool directory is locked by this process, so another process cannot open the spool
        to ask; it reads this file (and the spool's files, read-only) instead. Rewritten after a
        pass that changed something, else every few seconds (a heartbeat); never fsynced, and a
        write that fails (a full disk) is skipped silently: the file is advisory.
        """
        spool = self._spool.stats()
        flusher = self.stats()
        state: dict[str, Any] = {
            "backlog": spool.backlog,
            "appended": spool.appended,
            "replayed": spool.replayed,
            "append_failures": spool.append_failures,
            "spool_available": spool.available,
            "spool_error": spool.last_error,
            "delivered": flusher.delivered,
            "inserted": flusher.inserted,
            "duplicates": flusher.duplicates,
            "flush_failures": flusher.failures,
            "last_flush_at": flusher.last_flush_at.isoformat() if flusher.last_flush_at else None,
            "last_error": flusher.last_error,
        }
        now = time.monotonic()
        if state == self._published and now - self._published_at < _STATUS_HEARTBEAT_S:
            return
        document = {
            **state,
            "pid": os.getpid(),
            "flusher_running": not self._stop.is_set(),
            "updated_at": datetime.now(UTC).isoformat(),
        }
        directory = self._spool.directory
        tmp = directory / (STATUS_FILE + ".tmp")
        try:
            tmp.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
            os.replace(tmp, directory / STATUS_FILE)
        except OSError:
            return
        self._published, self._published_at = state, now

    def _record_failure(self, exc: BaseException) -> None:
        with self._state_lock:
            self._failures += 1
            self._last_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        if self._metrics is not None:
            self._metrics.flush_failures.inc()

    def _run(self) -> None:
        failures_in_row = 0
        while not self._stop.is_set():
            try:
                self.flush_once()
            except Exception as exc:
                failures_in_row += 1
                backoff = min(
                    self._max_backoff_s, self._interval_s * 2.0 ** min(failures_in_row, 16)
                )
                wait = backoff * (0.5 + random.random() / 2)
                if failures_in_row == 1:
                    log.warning("usage flusher: flush failed, retrying with backoff: %s", exc)
                else:
                    log.debug("usage flusher: flush failed again (%d): %s", failures_in_row, exc)
            else:
                if failures_in_row:
                    log.info("usage flusher: flushing again after %d failures", failures_in_row)
                failures_in_row = 0
                wait = self._interval_s
            self._publish_status()
            self._stop.wait(wait)

    def _insert(self, events: Sequence[UsageEvent]) -> int:
        """Insert one batch in one transaction; return how many rows were new."""
        with self._engine.begin() as conn:
            if not self._is_pg:
                return self._insert_sqlite(conn, events)
            if self._pg_method == "copy":
                return self._insert_pg_copy(conn, events)
            if self._pg_method == "unnest":
                return self._insert_pg_unnest(conn, events)
            return self._insert_pg_values(conn, events)

    @staticmethod
    def _insert_sqlite(conn: Connection, events: Sequence[UsageEvent]) -> int:
        # One executemany on the driver's cursor, values converted by the dialect's own bind
        # processors: SQLAlchemy's per-row parameter processing cost more than SQLite's insert,
        # and the flusher shares the server's CPU with the calls it meters.
        processors = _sqlite_processors(conn.dialect)
        rows = [
            tuple(
                v if p is None or v is None else p(v)
                for v, p in zip(_row(e), processors, strict=True)
            )
            for e in events
        ]
        driver_conn: Any = conn.connection.driver_connection
        cursor = driver_conn.cursor()
        try:
            cursor.executemany(_SQLITE_INSERT, rows)
            return max(int(cursor.rowcount), 0)
        finally:
            cursor.close()

    @staticmethod
    def _insert_pg_values(conn: Connection, events: Sequence[UsageEvent]) -> int:
        # RETURNING makes SQLAlchemy batch the rows into multi-VALUES statements
        # ("insertmanyvalues") and tells which rows were new.
        stmt = (
            postgresql.insert(usage_event)
            .on_conflict_do_nothing(index_elements=["tenant_id", "id"])
            .returning(usage_event.c.tenant_id)
        )
        return len(conn.execute(stmt, [e.to_row() for e in events]).all())

    @staticmethod
    def _insert_pg_unnest(conn: Connection, events: Sequence[UsageEvent]) -> int:
        rows = [_row(e) for e in events]
        params = {name: [r[i] for r in rows] for i, name in enumerate(_COLUMNS)}
        result = conn.execute(text(_PG_UNNEST_INSERT), params)
        return max(result.rowcount, 0)

    @staticmethod
    def _insert_pg_copy(conn: Connection, events: Sequence[UsageEvent]) -> int:
        # Fast path: COPY straight into the table inside a savepoint. COPY is all or nothing, so
        # if any key is already recorded (a retry, or a batch replayed after a crash between
        # commit and checkpoint) the savepoint is rolled back and the batch goes the slow way:
        # COPY into a staging table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING.
        rows = [_row(e) for e in events]
        driver_conn: Any = conn.connection.driver_connection
        with driver_conn.cursor() as cur:
            cur.execute("SAVEPOINT usage_copy")
            try:
                with cur.copy(f"COPY {_TABLE} ({_COLS_SQL}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            except psycopg.errors.UniqueViolation:
                cur.execute("ROLLBACK TO SAVEPOINT usage_copy")
            else:
                cur.execute("RELEASE SAVEPOINT usage_copy")
                return len(rows)
            cur.execute(_PG_STAGE_DDL)
            with cur.copy(f"COPY {_STAGE} ({_COLS_SQL}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(_PG_STAGE_INSERT)
            return max(int(cur.rowcount), 0)
