"""The query engine interface: one compiled plan in, Arrow out, on DuckDB or Spark.

An engine receives a sqlglot expression that reads the table
:data:`~marketplace.data.masking.SNAPSHOT_TABLE` and named placeholders (``p0``, ``mask_ipad``
...) with their values; it binds ``snapshot`` to the version's Parquet snapshot, renders the
tree in its own dialect (``expression.sql(dialect=engine.dialect)``) and runs it within the
limits of :class:`~marketplace.config.DataSettings`. Errors are domain errors: a query past the
time limit raises :class:`~marketplace.data.errors.QueryTimeoutError`, past the memory limit
:class:`~marketplace.data.errors.QueryMemoryError`, with every slot busy
:class:`~marketplace.data.errors.EngineBusyError` (503 each); a bound value that does not
convert to its column's type raises ``InvalidInputError`` (422).

Implementations: :class:`marketplace.data.duckdb_engine.DuckDBEngine` (embedded, the default)
and :class:`marketplace.data.spark_engine.SparkEngine` (``CITYBRAIN_DATA__ENGINE=spark``).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa
from sqlglot import exp

from marketplace.config import DataSettings
from marketplace.errors import UnavailableError
from model_store import BlobStore

__all__ = ["QueryEngine", "Snapshot", "make_engine"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A dataset version's immutable Parquet snapshot in the blob store.

    Attributes:
        digest: ``sha256:<hex>``, its address in the blob store.
        rows: Rows in it.
        bytes: Its size.
    """

    digest: str
    rows: int
    bytes: int


class QueryEngine(Protocol):
    """Runs compiled plans over snapshots (see the module docstring)."""

    #: ``duckdb`` or ``spark``.
    name: str
    #: The sqlglot dialect queries are rendered in.
    dialect: str

    def run(self, snapshot: Snapshot, query: exp.Expr, params: Mapping[str, Any]) -> pa.Table:
        """Run ``query`` over ``snapshot`` and return the whole result (a page: small)."""
        ...

    def stream(
        self,
        snapshot: Snapshot,
        query: exp.Expr,
        params: Mapping[str, Any],
        *,
        batch_rows: int,
    ) -> AbstractContextManager[pa.RecordBatchReader]:
        """Run ``query``, its result read in batches of about ``batch_rows`` (downloads: the
        whole view); errors while reading are the same domain errors as :meth:`run`'s."""
        ...

    def close(self) -> None:
        """Release what the engine holds (connections, sessions)."""
        ...


def make_engine(settings: DataSettings, blobs: BlobStore) -> QueryEngine:
    """The engine ``settings.engine`` names.

    Raises:
        UnavailableError: The named engine is not available in this build.
    """
    if settings.engine == "duckdb":
        from marketplace.data.duckdb_engine import DuckDBEngine

        return DuckDBEngine(settings, blobs)
    if settings.engine == "spark":
        # Nothing starts here: pyspark (an optional extra) is imported, and the process's
        # Spark session started, on the first query.
        from marketplace.data.spark_engine import SparkEngine

        return SparkEngine(settings, blobs)
    raise UnavailableError(
        f"the {settings.engine} data engine is not available in this deployment "
        "(CITYBRAIN_DATA__ENGINE=duckdb serves every dataset)"
    )
