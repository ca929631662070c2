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

from citybrain_sdk._http import API_PREFIX, AsyncHTTP, Call, SyncHTTP, new_idempotency_key, segment
from citybrain_sdk.resources import _files
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
from citybrain_sdk.types import Product, Progress, Version

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


def _path(handle: str, *rest: str) -> str:
    return "/".join([f"{API_PREFIX}/products/{segment(handle)}", *rest])


def _query_call(
    handle: str, body: dict[str, Any], accept: str, idempotency_key: str | None
) -> Call:
    return Call(
        "POST",
        _path(handle, "query"),
        json=body,
        headers={"Accept": accept},
        idempotency_key=idempotency_key or new_idempotency_key(),
    )


def _data_call(handle: str, version: int, format: str, idempotency_key: str | None) -> Call:
    if format not in ("parquet", "csv", "jsonl"):
        raise ValueError(f"format must be parquet, csv or jsonl, not {format!r}")
    return Call(
        "GET",
        _path(handle, "versions", segment(version), "data"),
        params={"format": format},
        idempotency_key=idempotency_key or new_idempotency_key(),
    )


def _push_call(
    handle: str,
    data: Path,
    schema: Any,
    format: str | None,
    notes: str,
    progress: Progress | None,
) -> Call:
    doc = _files.json_or_path(schema)
    suffix = data.suffix.lower()
    content_type = _UPLOAD_TYPES.get(suffix, "application/octet-stream")
    fields = {"schema": json.dumps(doc)}
    declared = format or _FORMATS.get(suffix)
    if declared is not None:
        fields["format"] = declared

    def files() -> dict[str, Any]:
        return {"file": (data.name, _files.ProgressReader(data, progress), content_type)}

    return Call(
        "POST",
        _path(handle, "versions", "data"),
        params={"notes": notes or None},
        files=files,
        data=fields,
    )


def _result(call: Call, response: httpx.Response) -> QueryResult:
    return QueryResult.from_json(
        response.json(),
        response.headers.get("x-request-id"),
        call.idempotency_key,
        replayed=response.headers.get("idempotent-replayed") == "true",
    )


def _latest(doc: Any, handle: str) -> int:
    product = Product.from_json(doc)
    if product.latest_version is None:
        raise ValueError(f"{handle} has no versions yet")
    return product.latest_version


class Datasets:
    """Datasets: query, download, push (``cb.datasets``)."""

    def __init__(self, http: SyncHTTP) -> None:
        self._http = http

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
        call = _query_call(handle, body, ACCEPT["json"], idempotency_key)
        response = self._http.send(call)
        return _result(call, response)

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
        cursor: str | None = None
        while True:
            page = self.query(
                handle,
                select=select,
                where=where,
                group_by=group_by,
                aggregates=aggregates,
                order_by=order_by,
                limit=limit,
                cursor=cursor,
                version=version,
            )
            yield page
            if not page.next_cursor:
                return
            cursor = page.next_cursor

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
        response = self._http.send(_query_call(handle, body, ACCEPT["arrow"], idempotency_key))
        return arrow_table(response.content)

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
        if format not in ACCEPT or format == "json":
            raise ValueError(f"format must be csv, parquet or arrow, not {format!r}")
        body = query_body(select, where, group_by, aggregates, order_by, limit, None, version)
        call = _query_call(handle, body, ACCEPT[format], idempotency_key)
        with self._http.stream(call) as response:
            return _files.save(response, Path(dest), None, progress)

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
            version = _latest(self._http.json(Call("GET", _path(handle))), handle)
        call = _data_call(handle, version, format, idempotency_key)
        with self._http.stream(call) as response:
            target = _files.target_path(dest, response, f"{handle}-v{version}.{format}")
            return _files.save(response, target, None, progress)

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
        call = _push_call(handle, Path(data), schema, format, notes, progress)
        return Version.from_json(self._http.json(call))


class AsyncDatasets:
    """Datasets, awaited (``AsyncClient.datasets``): the methods of :class:`Datasets`."""

    def __init__(self, http: AsyncHTTP) -> None:
        self._http = http

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
        call = _query_call(handle, body, ACCEPT["json"], idempotency_key)
        response = await self._http.send(call)
        return _result(call, response)

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
        cursor: str | None = None
        while True:
            page = await self.query(
                handle,
                select=select,
                where=where,
                group_by=group_by,
                aggregates=aggregates,
                order_by=order_by,
                limit=limit,
                cursor=cursor,
                version=version,
            )
            yield page
            if not page.next_cursor:
                return
            cursor = page.next_cursor

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
        call = _query_call(handle, body, ACCEPT["arrow"], idempotency_key)
        return arrow_table((await self._http.send(call)).content)

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
        if format not in ACCEPT or format == "json":
            raise ValueError(f"format must be csv, parquet or arrow, not {format!r}")
        body = query_body(select, where, group_by, aggregates, order_by, limit, None, version)
        call = _query_call(handle, body, ACCEPT[format], idempotency_key)
        async with self._http.stream(call) as response:
            return await _files.asave(response, Path(dest), None, progress)

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
            version = _latest(await self._http.json(Call("GET", _path(handle))), handle)
        call = _data_call(handle, version, format, idempotency_key)
        async with self._http.stream(call) as response:
            target = _files.target_path(dest, response, f"{handle}-v{version}.{format}")
            return await _files.asave(response, target, None, progress)

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
        call = _push_call(handle, Path(data), schema, format, notes, progress)
        return Version.from_json(await self._http.json(call))
