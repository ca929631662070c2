"""Query results and downloads in their wire formats: JSON, CSV, Arrow IPC, Parquet, JSON Lines.

A query answers JSON unless ``Accept`` asks for ``text/csv``,
``application/vnd.apache.arrow.stream`` or ``application/x-parquet`` (the same rows and
columns; paging and masking travel in headers then). Downloads stream the whole view as
Parquet, CSV or JSON Lines, one record batch at a time.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

__all__ = [
    "ARROW",
    "CSV",
    "DOWNLOAD_TYPES",
    "JSON",
    "JSONL",
    "PARQUET",
    "encode_table",
    "json_rows",
    "negotiate",
    "stream_batches",
]

JSON = "application/json"
CSV = "text/csv"
ARROW = "application/vnd.apache.arrow.stream"
PARQUET = "application/x-parquet"
JSONL = "application/x-ndjson"
_ALIASES = {"application/vnd.apache.parquet": PARQUET, "application/parquet": PARQUET}
#: Download formats (``?format=``) and their media types.
DOWNLOAD_TYPES = {"parquet": PARQUET, "csv": CSV, "jsonl": JSONL}


def negotiate(accept: str | None) -> str:
    """The result format an ``Accept`` header asks for (JSON by default, and for ``*/*``)."""
    if not accept:
        return JSON
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        media = _ALIASES.get(media, media)
        if media in (CSV, ARROW, PARQUET, JSON):
            return media
    return JSON


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _plain_column(column: pa.Array | pa.ChunkedArray) -> list[Any]:
    """A column's values as :func:`_plain` makes them, by the column's type where it can."""
    t = column.type
    values: list[Any] = column.to_pylist()
    if (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_integer(t)
        or pa.types.is_boolean(t)
        or pa.types.is_null(t)
    ):
        return values  # already plain
    if pa.types.is_float64(t) or pa.types.is_float32(t):
        return [v if v is None or math.isfinite(v) else None for v in values]
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return [None if v is None else v.isoformat() for v in values]
    return [_plain(v) for v in values]


def json_rows(table: pa.Table | pa.RecordBatch) -> list[list[Any]]:
    """The rows as JSON-ready lists, in column order."""
    columns = [_plain_column(col) for col in table.columns]
    return [list(row) for row in zip(*columns, strict=True)] if columns else []


def encode_table(table: pa.Table, media: str) -> bytes:
    """A result table as CSV, an Arrow IPC stream or Parquet."""
    sink = pa.BufferOutputStream()
    if media == CSV:
        pa_csv.write_csv(table, sink)
    elif media == ARROW:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    elif media == PARQUET:
        pq.write_table(table, sink, compression="zstd")
    else:  # pragma: no cover - the route negotiates first
        raise ValueError(f"no binary encoding for {media}")
    return bytes(sink.getvalue().to_pybytes())


class _Collector(io.RawIOBase):
    """A write-only file whose bytes are taken out as they come (a writer's sink)."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        return len(chunk)

    def take(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


def stream_batches(reader: pa.RecordBatchReader, fmt: str) -> Iterator[bytes]:
    """The reader's batches as one file in ``fmt`` (``parquet``, ``csv`` or ``jsonl``), chunk by
    chunk."""
    if fmt == "jsonl":
        for batch in reader:
            names = batch.schema.names
            lines = [
                json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False)
                for row in json_rows(batch)
            ]
            if lines:
                yield ("\n".join(lines) + "\n").encode()
        return
    sink = _Collector()
    writer: Any
    if fmt == "parquet":
        writer = pq.ParquetWriter(sink, reader.schema, compression="zstd")
    else:
        writer = pa_csv.CSVWriter(sink, reader.schema)
    try:
        for batch in reader:
            writer.write_batch(batch)
            chunk = sink.take()
            if chunk:
                yield chunk
    finally:
        writer.close()
    tail = sink.take()
    if tail:
        yield tail
