"""``cb.datasets``: query a dataset (rows, pandas, Arrow, or a CSV/Parquet file), download a
whole version, and push data as a new version.

A query is a plan, never SQL: ``select``, ``where`` (column, op, value), ``group_by``,
``aggregates`` (fn, column, as), ``order_by`` and ``limit``, sent as
``POST /api/v1/products/{handle}/query``. The platform masks what the caller may not see
(``QueryResult.masked`` names those columns). Queries and downloads are metered in rows, once
per ``Idempotency-Key``: each call carries a fresh one that its retries reuse.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from citybrain_sdk._http import Call, new_idempotency_key
from citybrain_sdk.resources import _files
from citybrain_sdk.resources._base import (
    AsyncResource,
    Download,
    Pager,
    Spec,
    SyncResource,
    json_spec,
    latest_version,
    product_path,
)
from citybrain_sdk.resources.query import (
    ACCEPT,
    Aggregate,
    GroupKey,
    Order,
    QueryResult,
    Where,
    arrow_table,
    query_body,
)
from citybrain_sdk.types import Progress, Version

if TYPE_CHECKING:
    import pyarrow

__all__ = ["AsyncDatasets", "Datasets"]

_UPLOAD_TYPES = {
    ".csv": "text/csv",
    ".parquet": "application/vnd.apache.parquet",
    ".jsonl": "application/x-ndjson",
    ".ndjson": "application/x-ndjson",
    ".json": "application/x-ndjson",
}
_FORMATS = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def _query(handle: str, body: dict[str, Any], accept: str, idempotency_key: str | None) -> Call:
    return Call(
        "POST",
        product_path(handle, "query"),
        json=body,
        headers={"Accept": accept},
        idempotency_key=idempotency_key or new_idempotency_key(),
    )


def _query_spec(
    handle: str, body: dict[str, Any], idempotency_key: str | None = None
) -> Spec[QueryResult]:
    call = _query(handle, body, ACCEPT["json"], idempotency_key)

    def result(response: httpx.Response) -> QueryResult:
        return QueryResult.from_json(
            response.json(),
            response.headers.get("x-request-id"),
            call.idempotency_key,
            replayed=response.headers.get("idempotent-replayed") == "true",
        )

    return Spec(call, result)


def _pager(handle: str, body: dict[str, Any]) -> Pager[QueryResult]:
    """Every page of the query ``body``: the same body, with each page's cursor."""

    def page(cursor: str | None) -> Spec[QueryResult]:
        return _query_spec(handle, body if cursor is None else {**body, "cursor": cursor})

    return Pager(page, lambda result: result.next_cursor)


def _arrow_spec(
    handle: str, body: dict[str, Any], idempotency_key: str | None
) -> Spec[pyarrow.Table]:
    call = _query(handle, body, ACCEPT["arrow"], idempotency_key)
    return Spec(call, lambda response: arrow_table(response.content))


def _query_file(
    handle: str,
    body: dict[str, Any],
    dest: str | os.PathLike[str],
    format: str,
    idempotency_key: str | None,
    progress: Progress | None,
) -> Download:
    if format not in ACCEPT or format == "json":
        raise ValueError(f"format must be csv, parquet or arrow, not {format!r}")
    return Download(_query(handle, body, ACCEPT[format], idempotency_key), dest, None, progress)


def _data_download(
    handle: str,
    dest: str | os.PathLike[str],
    version: int,
    format: str,
    progress: Progress | None,
    idempotency_key: str | None,
) -> Download:
    if format not in ("parquet", "csv", "jsonl"):
        raise ValueError(f"format must be parquet, csv or jsonl, not {format!r}")
    call = Call(
        "GET",
        product_path(handle, "versions", version, "data"),
        params={"format": format},
        idempotency_key=idempotency_key or new_idempotency_key(),
    )
    return Download(call, dest, f"{handle}-v{version}.{format}", progress)


def _push_spec(
    handle: str,
    data: Path,
    schema: Any,
    format: str | None,
    notes: str,
    progress: Progress | None,
) -> Spec[Version]:
    doc = _files.json_or_path(schema)
    suffix = data.suffix.lower()
    content_type = _UPLOAD_TYPES.get(suffix, "application/octet-stream")
    fields = {"schema": json.dumps(doc)}
    declared = format or _FORMATS.get(suffix)
    if declared is not None:
        fields["format"] = declared

    def files() -> dict[str, Any]:
        return {"file": (data.name, _files.ProgressReader(data, progress), content_type)}

    call = Call(
        "POST",
        product_path(handle, "versions", "data"),
        params={"notes": notes or None},
        files=files,
        data=fields,
    )
    return json_spec(call, Version.from_json)


class Datasets(SyncResource):
    """Datasets: query, download, push (``cb.datasets``)."""

    def query(
        self,
        handle: str,
        *,
        select: Sequence[str] | None = None,
        where: Sequence[Where] | None = None,
        group_by: Sequence[GroupKey] | None = None,
        aggregates: Sequence[Aggregate] | None = None,
        order_by: Sequence[Order] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        version: int | None = None,
        idempotency_key: str | None = None,
    ) -> QueryResult:
        """Query a dataset; get its rows (and ``to_pandas()`` / ``to_arrow()``).

        Args:
            handle: The dataset, e.g. ``"traffic-police.intersection-flow"``.
            select: Columns to return (None: all the caller may see).
            where: Filters, each ``(column, op, value)`` or a dict ``{"column", "op",
                "value"}``; ops ``eq ne lt le gt ge in not_in between is_null not_null prefix
                contains`` (``is_null``/``not_null`` take no value).
            group_by: Columns to group by, or ``{"column", "time_bucket", "as"}`` keys.
            aggregates: Each ``(fn, column, as)`` or a dict; fns ``count count_distinct sum avg
                min max``, and ``time_bucket`` with ``"unit": "minute" | "hour" | "day"``.
            order_by: Column names, ``"-name"`` for descending, or dicts.
            limit: The most rows to return.
            cursor: ``next_cursor`` of the previous page.
            version: The dataset version (None: the latest published one).
            idempotency_key: The key that makes the call billed once (default: a fresh one).

        Returns:
            The columns, the rows (each a list in column order), ``row_count``,
            ``next_cursor``, the ``masked`` columns and the ``version`` read.

        Raises:
            NotFound: No such dataset, or one the caller may not see.
            Forbidden: The key lacks ``data:read``, or the dataset needs an access grant.
            ValidationError: An unknown column or op, or a value of the wrong type.

        Example:
            >>> page = cb.datasets.query("traffic-police.intersection-flow",
            ...                          select=["intersection"], limit=5)
            >>> page.columns[0].name, len(page.rows)
            ('intersection', 5)
            >>> cb.datasets.query("traffic-police.intersection-flow",
            ...     where=[("intersection", "in", ["I-03", "I-07"])],
            ...     group_by=["intersection"], aggregates=[("avg", "count", "mean_flow")],
            ...     order_by=["-mean_flow"]).to_pandas()
        """
        body = query_body(select, where, group_by, aggregates, order_by, limit, cursor, version)
        return self._run(_query_spec(handle, body, idempotency_key))

    def pages(
        self,
        handle: str,
        *,
        select: Sequence[str] | None = None,
        where: Sequence[Where] | None = None,
        group_by: Sequence[GroupKey] | None = None,
        aggregates: Sequence[Aggregate] | None = None,
        order_by: Sequence[Order] | None = None,
        limit: int | None = None,
        version: int | None = None,
    ) -> Iterator[QueryResult]:
        """Every page of a query, following ``next_cursor`` (each page is one metered call).

        Example:
            >>> rows = [r for page in cb.datasets.pages("environment.air-quality", limit=1000)
            ...         for r in page.rows]
        """
        body = query_body(select, where, group_by, aggregates, order_by, limit, None, version)
        pager = _pager(handle, body)
        while pager.more:
            yield pager.took(self._run(pager.next()))

    def query_arrow(
        self,
        handle: str,
        *,
        select: Sequence[str] | None = None,
        where: Sequence[Where] | None = None,
        group_by: Sequence[GroupKey] | None = None,
        aggregates: Sequence[Aggregate] | None = None,
        order_by: Sequence[Order] | None = None,
        limit: int | None = None,
        version: int | None = None,
        idempotency_key: str | None = None,
    ) -> pyarrow.Table:
        """Query a dataset and get an Arrow table, sent by the server as an Arrow stream
        (exact column types, no JSON in between). Needs ``pyarrow``.

        Example:
            >>> table = cb.datasets.query_arrow("environment.air-quality", limit=10_000)
            >>> table.schema
        """
        body = query_body(select, where, group_by, aggregates, order_by, limit, None, version)
        return self._run(_arrow_spec(handle, body, idempotency_key))

    def query_to_file(
        self,
        handle: str,
        dest: str | os.PathLike[str],
        *,
        format: str = "csv",
        select: Sequence[str] | None = None,
        where: Sequence[Where] | None = None,
        group_by: Sequence[GroupKey] | None = None,
        aggregates: Sequence[Aggregate] | None = None,
        order_by: Sequence[Order] | None = None,
        limit: int | None = None,
        version: int | None = None,
        idempotency_key: str | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """Query a dataset and stream the answer to a file as CSV, Parquet or Arrow, encoded
        by the server (no pandas or pyarrow needed here).

        Args:
            dest: The file to write (replaced only when the answer is complete).
            format: ``"csv"``, ``"parquet"`` or ``"arrow"``.

        Example:
            >>> cb.datasets.query_to_file("environment.air-quality", "air.parquet",
            ...                           format="parquet", limit=10_000)
            PosixPath('air.parquet')
        """
        body = query_body(select, where, group_by, aggregates, order_by, limit, None, version)
        return self._download(_query_file(handle, body, dest, format, idempotency_key, progress))

    def download(
        self,
        handle: str,
        dest: str | os.PathLike[str] = ".",
        *,
        version: int | None = None,
        format: str = "parquet",
        progress: Progress | None = None,
        idempotency_key: str | None = None,
    ) -> Path:
        """Download a whole dataset version (the masked view the caller may see), streamed.

        Args:
            handle: The dataset.
            dest: A file to write, or a folder (the server's file name is used).
            version: The version (None: the latest).
            format: ``"parquet"``, ``"csv"`` or ``"jsonl"``.
            progress: Called as ``progress(bytes_received, total_or_None)``.
            idempotency_key: The key that makes the download billed once.

        Returns:
            The path written.

        Example:
            >>> cb.datasets.download("environment.air-quality", "data/", format="csv",
            ...                      progress=lambda done, total: print(done, total))
            PosixPath('data/environment.air-quality-v1.csv')
        """
        if version is None:
            version = self._run(latest_version(handle))
        return self._download(
            _data_download(handle, dest, version, format, progress, idempotency_key)
        )

    def push(
        self,
        handle: str,
        data: str | os.PathLike[str],
        *,
        schema: Mapping[str, Any] | str | os.PathLike[str],
        format: str | None = None,
        notes: str = "",
        progress: Progress | None = None,
    ) -> Version:
        """Upload CSV, Parquet or JSON Lines as a new version of a dataset (``catalog:write``).

        The file streams from disk; the platform stores it as an immutable Parquet snapshot,
        checks it against ``schema`` and runs the schema's quality rules.

        Args:
            handle: The dataset product.
            data: The file (``.csv``, ``.parquet``, ``.jsonl``).
            schema: ``{"columns": [{"name", "type", "semantic", "sensitivity", …}],
                "quality": [rules]}``, or a path to that JSON.
            format: ``"csv"``, ``"parquet"`` or ``"jsonl"`` (None: from the file's suffix).
            notes: Release notes.
            progress: Called as ``progress(bytes_sent, total)``.

        Returns:
            The new version (``schema``, ``rows``, ``size_bytes``, ``sha256``, ``quality``).

        Raises:
            ValidationError: The file does not match the schema, or is malformed.
            PayloadTooLarge: Over the platform's upload limit.

        Example:
            >>> v = cb.datasets.push("parkeasy.parking-availability", "spaces.csv",
            ...                      schema="schema.json")
            >>> v.rows, v.quality["score"]
        """
        return self._run(_push_spec(handle, Path(data), schema, format, notes, progress))


class AsyncDatasets(AsyncResource):
    """Datasets, awaited (``AsyncClient.datasets``): the methods of :class:`Datasets`."""

    async def query(
        self,
        handle: str,
        *,
        select: Sequence[str] | None = None,
        where: Sequence[Where] | None = None,
        group_by: Sequence[GroupKey] | None = None,
        aggregates: Sequence[Aggregate] | None = None,
        order_by: Sequence[Order] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        version: int | None = None,
        idempotency_key: str | None = None,
    ) -> QueryResult:
        """Query a dataset; see :meth:`Datasets.query`.

        Example:
            >>> page = await cb.datasets.query("traffic-police.intersection-flow", limit=5)
        """
        body = query_body(select, where, group_by, aggregates, order_by, limit, cursor, version)
        return await self._run(_query_spec(handle, body, idempotency_key))

    async def pages(
        self,
        handle: str,
        *,
        select: Sequence[str] | None = None,
        where: Sequence[Where] | None = None,
        group_by: Sequence[GroupKey] | None = None,
        aggregates: Sequence[Aggregate] | None = None,
        order_by: Sequence[Order] | None = None,
        limit: int | None = None,
        version: int | None = None,
    ) -> AsyncIterator[QueryResult]:
        """Every page of a query; see :meth:`Datasets.pages`.

        Example:
            >>> async for page in cb.datasets.pages("environment.air-quality", limit=1000):
            ...     print(page.row_count)
        """
        body = query_body(select, where, group_by, aggregates, order_by, limit, None, version)
        pager = _pager(handle, body)
        while pager.more:
            yield pager.took(await self._run(pager.next()))

    async def query_arrow(
        self,
        handle: str,
        *,
        select: Sequence[str] | None = None,
        where: Sequence[Where] | None = None,
        group_by: Sequence[GroupKey] | None = None,
        aggregates: Sequence[Aggregate] | None = None,
        order_by: Sequence[Order] | None = None,
        limit: int | None = None,
        version: int | None = None,
        idempotency_key: str | None = None,
    ) -> pyarrow.Table:
        """Query into an Arrow table; see :meth:`Datasets.query_arrow`.

        Example:
            >>> table = await cb.datasets.query_arrow("environment.air-quality", limit=100)
        """
        body = query_body(select, where, group_by, aggregates, order_by, limit, None, version)
        return await self._run(_arrow_spec(handle, body, idempotency_key))

    async def query_to_file(
        self,
        handle: str,
        dest: str | os.PathLike[str],
        *,
        format: str = "csv",
        select: Sequence[str] | None = None,
        where: Sequence[Where] | None = None,
        group_by: Sequence[GroupKey] | None = None,
        aggregates: Sequence[Aggregate] | None = None,
        order_by: Sequence[Order] | None = None,
        limit: int | None = None,
        version: int | None = None,
        idempotency_key: str | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """Query into a CSV, Parquet or Arrow file; see :meth:`Datasets.query_to_file`.

        Example:
            >>> await cb.datasets.query_to_file("environment.air-quality", "air.csv")
        """
        body = query_body(select, where, group_by, aggregates, order_by, limit, None, version)
        job = _query_file(handle, body, dest, format, idempotency_key, progress)
        return await self._download(job)

    async def download(
        self,
        handle: str,
        dest: str | os.PathLike[str] = ".",
        *,
        version: int | None = None,
        format: str = "parquet",
        progress: Progress | None = None,
        idempotency_key: str | None = None,
    ) -> Path:
        """Download a whole dataset version; see :meth:`Datasets.download`.

        Example:
            >>> await cb.datasets.download("environment.air-quality", "data/")
        """
        if version is None:
            version = await self._run(latest_version(handle))
        job = _data_download(handle, dest, version, format, progress, idempotency_key)
        return await self._download(job)

    async def push(
        self,
        handle: str,
        data: str | os.PathLike[str],
        *,
        schema: Mapping[str, Any] | str | os.PathLike[str],
        format: str | None = None,
        notes: str = "",
        progress: Progress | None = None,
    ) -> Version:
        """Upload data as a new version; see :meth:`Datasets.push`.

        Example:
            >>> await cb.datasets.push("parkeasy.parking-availability", "spaces.csv",
            ...                        schema=schema)
        """
        return await self._run(_push_spec(handle, Path(data), schema, format, notes, progress))
