"""A dataset query's plan as the API takes it, and its answer (:class:`QueryResult`).

Filters, aggregates and orderings may be written as tuples for brevity; they are sent as the
JSON objects the platform defines (``{"column", "op", "value"}``, ``{"fn", "column", "as"}``,
``{"column", "desc"}``). pandas and pyarrow are imported only by the methods that need them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas
    import pyarrow

__all__ = [
    "ACCEPT",
    "Aggregate",
    "Column",
    "GroupKey",
    "Order",
    "QueryResult",
    "Where",
    "query_body",
]

Where = Mapping[str, Any] | tuple[str, str] | tuple[str, str, Any]
"""A filter: ``("count", "gt", 10)``, ``("plate", "is_null")`` or the dict the API takes."""

Aggregate = Mapping[str, Any] | tuple[str, str] | tuple[str, str, str]
"""An aggregate: ``("avg", "count", "mean_flow")``, ``("count", "*")`` (rows) or a dict such as
``{"fn": "time_bucket", "column": "minute", "unit": "hour", "as": "hour"}``."""

GroupKey = str | Mapping[str, Any]
"""A group-by key: a column, or ``{"column": "minute", "time_bucket": "hour", "as": "hour"}``."""

Order = str | Mapping[str, Any] | tuple[str, bool]
"""An ordering: ``"minute"``, ``"-mean_flow"`` (descending), ``("minute", True)`` or a dict."""

ACCEPT = {
    "json": "application/json",
    "csv": "text/csv",
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/x-parquet",
}
"""The ``Accept`` header for each answer format of the query API."""


def _where(item: Where) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return dict(item)
    if len(item) == 2:
        return {"column": item[0], "op": item[1]}
    return {"column": item[0], "op": item[1], "value": item[2]}


def _aggregate(item: Aggregate) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return dict(item)
    out: dict[str, Any] = {"fn": item[0]}
    if item[1] not in ("*", ""):  # count(*) counts rows: no column
        out["column"] = item[1]
    if len(item) == 3:
        out["as"] = item[2]
    return out


def _order(item: Order) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return dict(item)
    if isinstance(item, tuple):
        return {"column": item[0], "desc": bool(item[1])}
    if item.startswith("-"):
        return {"column": item[1:], "desc": True}
    return {"column": item, "desc": False}


def query_body(
    select: Sequence[str] | None,
    where: Sequence[Where] | None,
    group_by: Sequence[GroupKey] | None,
    aggregates: Sequence[Aggregate] | None,
    order_by: Sequence[Order] | None,
    limit: int | None,
    cursor: str | None,
    version: int | None,
) -> dict[str, Any]:
    """The JSON body of ``POST /api/v1/products/{handle}/query`` (omitted parts are left out).

    Example:
        >>> query_body(["intersection"], [("count", "gt", 10)], None, None, ["-count"], 5,
        ...            None, None)
        {'select': ['intersection'], 'where': [{'column': 'count', 'op': 'gt', 'value': 10}],
         'order_by': [{'column': 'count', 'desc': True}], 'limit': 5}
    """
    body: dict[str, Any] = {}
    if version is not None:
        body["version"] = version
    if select is not None:
        body["select"] = list(select)
    if where:
        body["where"] = [_where(w) for w in where]
    if group_by:
        body["group_by"] = [g if isinstance(g, str) else dict(g) for g in group_by]
    if aggregates:
        body["aggregates"] = [_aggregate(a) for a in aggregates]
    if order_by:
        body["order_by"] = [_order(o) for o in order_by]
    if limit is not None:
        body["limit"] = limit
    if cursor is not None:
        body["cursor"] = cursor
    return body


@dataclass(frozen=True, slots=True)
class Column:
    """A result column: its name and its Arrow/DuckDB type name."""

    name: str
    type: str


@dataclass(frozen=True)
class QueryResult:
    """One page of a dataset query.

    Attributes:
        columns: The columns, in order (selected or grouped, then the aggregates).
        rows: Each row a list in column order.
        row_count: Rows on this page.
        next_cursor: Pass it as ``cursor`` for the next page; None on the last.
        masked: Columns the platform masked for this caller.
        version: The dataset version read.
        request_id: The call's request id.
        idempotency_key: The key the call was billed under.
        replayed: True when the platform had already billed this key (a retry).

    Example:
        >>> page = cb.datasets.query("environment.air-quality", limit=3)
        >>> page.records()[0]
        {'station': 'S-01', 'hour': '2026-11-01T00:00:00', 'pm25': 31.0, …}
    """

    columns: list[Column]
    rows: list[list[Any]]
    row_count: int
    next_cursor: str | None = None
    masked: list[str] = field(default_factory=list)
    version: int | None = None
    request_id: str | None = None
    idempotency_key: str | None = None
    replayed: bool = False

    @classmethod
    def from_json(
        cls,
        doc: Mapping[str, Any],
        request_id: str | None,
        idempotency_key: str | None,
        replayed: bool = False,
    ) -> QueryResult:
        """Read the query API's JSON answer.

        Example:
            >>> QueryResult.from_json(
            ...     cb.request("POST", "/api/v1/products/x.y/query", json={"limit": 5}), None, None
            ... ).rows
        """
        columns = [Column(str(c["name"]), str(c.get("type", ""))) for c in doc.get("columns", ())]
        rows = [list(r) for r in doc.get("rows", ())]
        return cls(
            columns=columns,
            rows=rows,
            row_count=int(doc.get("row_count", len(rows))),
            next_cursor=doc.get("next_cursor"),
            masked=[str(m) for m in doc.get("masked", ())],
            version=doc.get("version"),
            request_id=request_id,
            idempotency_key=idempotency_key,
            replayed=replayed,
        )

    @property
    def column_names(self) -> list[str]:
        """The column names, in order.

        Example:
            >>> page.column_names
            ['intersection', 'mean_flow']
        """
        return [c.name for c in self.columns]

    def __iter__(self) -> Iterator[list[Any]]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts keyed by column name.

        Example:
            >>> page.records()[0]["intersection"]
            'I-03'
        """
        names = self.column_names
        return [dict(zip(names, row, strict=True)) for row in self.rows]

    def to_pandas(self) -> pandas.DataFrame:
        """The rows as a pandas DataFrame (needs ``pandas``).

        Example:
            >>> df = page.to_pandas()
            >>> df.columns.tolist()
            ['intersection', 'mean_flow']
        """
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError(
                "to_pandas() needs pandas: pip install 'citybrain-sdk[pandas]'"
            ) from e
        return pd.DataFrame(self.rows, columns=self.column_names)

    def to_arrow(self) -> pyarrow.Table:
        """The rows as a pyarrow Table (needs ``pyarrow``), types inferred from the values.

        For the server's exact types, query with :meth:`Datasets.query_arrow` instead.

        Example:
            >>> page.to_arrow().num_rows
            5
        """
        pa = _pyarrow()
        names = self.column_names
        arrays = [pa.array([row[i] for row in self.rows]) for i in range(len(names))]
        return pa.Table.from_arrays(arrays, names=names)


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as e:
        raise ImportError("Arrow results need pyarrow: pip install 'citybrain-sdk[arrow]'") from e
    return pyarrow


def arrow_table(stream: bytes) -> pyarrow.Table:
    """An Arrow IPC stream (``application/vnd.apache.arrow.stream``) as a pyarrow Table.

    Example:
        >>> arrow_table(response.content).num_rows
    """
    pa = _pyarrow()
    import pyarrow.ipc

    table: pyarrow.Table = pyarrow.ipc.open_stream(pa.py_buffer(stream)).read_all()
    return table
