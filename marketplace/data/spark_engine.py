"""The Spark SQL engine: compiled plans over Parquet snapshots on a Spark cluster (or local[N]).

For datasets that outgrow one node (``CITYBRAIN_DATA__ENGINE=spark``). The plan, its masked
view and its bound parameters are the ones DuckDB runs; ``marketplace.data.spark_sql``
renders them in Spark's dialect with DuckDB's meaning, and this module runs them:

* **One SparkSession per process**, started on the first query (never when the platform
  starts: a JVM and a driver cost tens of seconds and hundreds of MB), shared by every engine
  of the process and stopped when the last one closes. The driver binds
  ``spark_driver_host`` (loopback by default: ``SPARK_LOCAL_IP`` and
  ``spark.driver.host``/``bindAddress``); ``spark_master`` is ``local[2]`` in tests and
  ``spark://host:7077`` in production, ``spark_conf`` adds any Spark setting.
* **The snapshot is a temporary view** named after its digest, read from
  ``spark_snapshot_url`` (``s3a://bucket/artifacts`` in production: every executor reads the
  blob store's immutable file itself) or, without one, from the blob store's local copy
  (local masters only). Reading files by path in SQL is off (``spark.sql.runSQLOnFiles``) and
  calls of functions sqlglot does not know are refused before Spark sees them (Spark SQL can
  call Java), so the view is the only thing a query reads.
* **Values are bound by name** (``spark.sql(text, args=...)``, Spark >= 3.4), never pasted.
* **Limits**: at most ``max_concurrent_queries`` at once; every query runs in a job group of
  its own that a timer cancels at ``query_timeout_s`` (``QueryTimeoutError``, 503). Spark
  runs in ANSI mode, so a bound value that does not convert fails (422) as in DuckDB.
* **The answer** is a pyarrow Table with the same columns and types as DuckDB's. Downloads
  stream partition by partition through the driver (``toLocalIterator``): memory stays
  bounded, speed is well below DuckDB's.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from sqlglot import exp

from marketplace.config import DataSettings
from marketplace.data.engine import Snapshot
from marketplace.data.errors import EngineBusyError, QueryMemoryError, QueryTimeoutError
from marketplace.data.spark_sql import to_spark_sql
from marketplace.errors import InvalidInputError, UnavailableError
from model_store import BlobStore

if TYPE_CHECKING:
    from pyspark import SparkContext
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["SparkEngine", "snapshot_view", "spark_conf"]

log = logging.getLogger(__name__)

# Error conditions that mean "a value does not fit" (a caller's mistake, 422), as DuckDB's
# conversion errors do.
_VALUE_CONDITIONS = ("CAST_", "NUMERIC_VALUE_OUT_OF_RANGE", "INVALID_FRACTION_OF_SECOND")
# The zone DuckDB names on zoned timestamps (every query's session runs in UTC:
# ``duckdb_engine.fenced_connection``).
_UTC = "UTC"
_MEMORY_MARKERS = ("OutOfMemoryError", "SPARK_OUT_OF_MEMORY", "UNABLE_TO_ACQUIRE_MEMORY")


def snapshot_view(digest: str) -> str:
    """The temporary view a snapshot is read through (one per digest: snapshots never
    change, so a view made once serves every later query)."""
    return "cb_snapshot_" + digest.removeprefix("sha256:")


def spark_conf(settings: DataSettings) -> dict[str, str]:
    """The session's configuration (``settings.spark_conf`` wins over these defaults)."""
    host = settings.spark_driver_host
    conf = {
        "spark.app.name": "citybrain-data",
        "spark.driver.host": host,
        "spark.driver.bindAddress": host,
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # DuckDB's meaning: timestamps in UTC, a failed conversion is an error.
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.ansi.enabled": "true",
        "spark.sql.parquet.inferTimestampNTZ.enabled": "true",
        # No SELECT ... FROM parquet.`/any/path`: the snapshot's view is the only table.
        "spark.sql.runSQLOnFiles": "false",
        "spark.sql.execution.arrow.useLargeVarTypes": "false",
    }
    if settings.spark_master.startswith("local"):
        # Spark's 200 shuffle partitions are for clusters; a few suffice on one machine.
        conf["spark.sql.shuffle.partitions"] = str(max(2, 2 * settings.threads))
    conf.update(settings.spark_conf)
    return conf


class _SharedSession:
    """The process's one SparkSession: started by the first engine that needs it, stopped
    when the last engine using it closes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._session: SparkSession | None = None
        self._users = 0
        self.views: set[str] = set()
        self.views_lock = threading.Lock()

    def acquire(self, settings: DataSettings) -> SparkSession:
        with self._lock:
            if self._session is None:
                self._session = self._start(settings)
                self.views = set()
            self._users += 1
            return self._session

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._session is not None:
                session, self._session = self._session, None
                session.stop()

    @staticmethod
    def _start(settings: DataSettings) -> SparkSession:
        try:
            from pyspark.sql import SparkSession
        except ImportError as e:  # pragma: no cover - the extra is not installed
            raise UnavailableError(
                "the spark data engine needs pyspark (pip install 'citybrain[spark]')"
            ) from e
        # The JVM reads this when it starts: Spark binds nothing but this address.
        os.environ.setdefault("SPARK_LOCAL_IP", settings.spark_driver_host)
        # Failed queries are translated into domain errors here; pyspark would also log each
        # one (with its SQL) as an error.
        for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        builder = SparkSession.builder.master(settings.spark_master)
        for key, value in spark_conf(settings).items():
            builder = builder.config(key, value)
        log.info("starting a Spark session on %s", settings.spark_master)
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
        return session


_SHARED = _SharedSession()


class _Deadline:
    """Cancels a job group when its time is up; remembers that it did."""

    def __init__(self, context: SparkContext, group: str, seconds: float) -> None:
        self.fired = False
        self._context = context
        self._group = group
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        self._context.cancelJobGroup(self._group)

    def __enter__(self) -> _Deadline:
        self._context.setJobGroup(self._group, "citybrain data query", interruptOnCancel=True)
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def _condition(e: BaseException) -> str:
    getter = getattr(e, "getCondition", None)
    value = getter() if callable(getter) else None
    return str(value or "")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text.split(" SQLSTATE:")[0].strip()


def _arrow_shape(table: pa.Table) -> pa.Table:
    """The schema DuckDB answers with: plain (not large) strings and binaries, zones named as
    DuckDB names UTC, every column nullable (Spark marks counts and the like NOT NULL)."""
    fields = []
    for f in table.schema:
        t = f.type
        if pa.types.is_large_string(t):
            t = pa.string()
        elif pa.types.is_large_binary(t):
            t = pa.binary()
        elif pa.types.is_timestamp(t) and t.tz is not None:
            t = pa.timestamp(t.unit, tz=_UTC)
        fields.append(pa.field(f.name, t))
    schema = pa.schema(fields)
    return table if schema.equals(table.schema) else table.cast(schema)


class SparkEngine:
    """:class:`~marketplace.data.engine.QueryEngine` on Spark SQL (see the module docstring)."""

    name = "spark"
    dialect = "spark"

    def __init__(self, settings: DataSettings, blobs: BlobStore) -> None:
        self._settings = settings
        self._blobs = blobs
        self._lock = threading.Lock()
        self._session: SparkSession | None = None
        self._slots = threading.BoundedSemaphore(settings.max_concurrent_queries)

    @property
    def started(self) -> bool:
        """Whether this engine has started (or joined) the process's Spark session."""
        return self._session is not None

    def _spark(self) -> SparkSession:
        with self._lock:
            if self._session is None:
                self._session = _SHARED.acquire(self._settings)
            return self._session

    def _location(self, snapshot: Snapshot) -> str:
        hexpart = snapshot.digest.removeprefix("sha256:")
        base = self._settings.spark_snapshot_url
        if base:
            return f"{base.rstrip('/')}/sha256/{hexpart[:2]}/{hexpart[2:]}"
        return str(self._blobs.local_path(snapshot.digest))

    def _bind_view(self, spark: SparkSession, snapshot: Snapshot) -> None:
        name = snapshot_view(snapshot.digest)
        with _SHARED.views_lock:
            if name in _SHARED.views:
                return
            spark.read.parquet(self._location(snapshot)).createOrReplaceTempView(name)
            _SHARED.views.add(name)

    def _translate(self, e: BaseException, deadline: _Deadline, seconds: float) -> BaseException:
        if deadline.fired:
            return QueryTimeoutError(f"the query ran past the time limit of {seconds:g} s")
        condition = _condition(e)
        text = str(e)
        if any(marker in text or marker in condition for marker in _MEMORY_MARKERS):
            return QueryMemoryError("the query needs more memory than the data engine may use")
        if condition.startswith(_VALUE_CONDITIONS):
            return InvalidInputError(f"a value does not fit its column's type: {_first_line(e)}")
        if condition == "PATH_NOT_FOUND":
            log.error("the Spark engine cannot read a snapshot: %s", _first_line(e))
            return UnavailableError("the data engine cannot read this dataset right now")
        from pyspark.errors import AnalysisException

        if isinstance(e, AnalysisException):
            return InvalidInputError(f"the query does not run on this engine: {_first_line(e)}")
        from py4j.protocol import Py4JNetworkError

        if isinstance(e, Py4JNetworkError):
            return UnavailableError("the Spark engine is not reachable")
        return e

    def run(self, snapshot: Snapshot, query: exp.Expr, params: Mapping[str, Any]) -> pa.Table:
        seconds = self._settings.query_timeout_s
        # Rendered (and fenced) before anything starts: a refused query never starts Spark.
        sql = to_spark_sql(query, snapshot_view(snapshot.digest))
        if not self._slots.acquire(timeout=seconds):
            raise EngineBusyError("every query slot stayed busy; retry in a moment")
        try:
            spark = self._spark()
            deadline = _Deadline(spark.sparkContext, f"cb-{uuid.uuid4().hex}", seconds)
            try:
                with deadline:
                    self._bind_view(spark, snapshot)
                    table = spark.sql(sql, args=dict(params)).toArrow()
            except Exception as e:
                translated = self._translate(e, deadline, seconds)
                if translated is e:
                    raise
                raise translated from e
            return _arrow_shape(table)
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
        sql = to_spark_sql(query, snapshot_view(snapshot.digest))
        spark = self._spark()
        deadline = _Deadline(spark.sparkContext, f"cb-{uuid.uuid4().hex}", seconds)
        with deadline:
            try:
                self._bind_view(spark, snapshot)
                frame, schema = _utc_frame(spark.sql(sql, args=dict(params)))
                rows = frame.toLocalIterator(prefetchPartitions=True)
            except Exception as e:
                translated = self._translate(e, deadline, seconds)
                if translated is e:
                    raise
                raise translated from e

            def batches() -> Iterator[pa.RecordBatch]:
                try:
                    while chunk := list(itertools.islice(rows, batch_rows)):
                        yield _batch(chunk, schema)
                except Exception as e:
                    translated = self._translate(e, deadline, seconds)
                    if translated is e:
                        raise
                    raise translated from e

            yield pa.RecordBatchReader.from_batches(schema, batches())

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session = None
                _SHARED.release()


def _utc_frame(frame: DataFrame) -> tuple[DataFrame, pa.Schema]:
    """``frame`` with zoned timestamps as UTC wall times (rows carry them in the Python
    process's local zone otherwise), and the Arrow schema of the answer."""
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import TimestampType

    schema = _arrow_shape(to_arrow_schema(frame.schema, timezone="UTC").empty_table()).schema
    columns = [
        F.col(f"`{f.name}`").cast("timestamp_ntz").alias(f.name)
        if isinstance(f.dataType, TimestampType)
        else F.col(f"`{f.name}`")
        for f in frame.schema.fields
    ]
    return frame.select(*columns), schema


def _batch(rows: list[Any], schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for i, field in enumerate(schema):
        values = [row[i] for row in rows]
        if pa.types.is_timestamp(field.type) and field.type.tz is not None:
            naive = pa.array(values, pa.timestamp(field.type.unit))
            arrays.append(naive.cast(field.type))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
