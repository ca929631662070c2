"""An uploaded file → a typed Parquet snapshot and its quality report, in DuckDB.

The upload is already on disk (streamed there in chunks, never whole in memory) in a staging
folder of its own; a fenced DuckDB (``duckdb_engine.fenced_connection``: that folder only)
reads it as CSV, Parquet or JSON Lines and:

1. matches the file's columns with the schema's, both ways (a declared column missing from the
   file, or a file column the schema does not declare, is refused: every column must say its
   sensitivity);
2. gives each column its type: the declared one, checked against every value (a value that does
   not convert is refused, named with an example), or the type DuckDB infers when none is
   declared; ``geo_point`` values must be ``lat,lon``;
3. writes the snapshot (zstd Parquet, columns in schema order) and runs the quality rules on it
   (``marketplace.data.quality``).

Every failure is a 4xx naming what is wrong (paths on the server never appear in it); the
caller removes the staging folder whatever happens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from marketplace.data.duckdb_engine import fenced_connection
from marketplace.data.errors import InvalidDataError, UnsupportedFormatError
from marketplace.data.quality import QualityReport, run_rules
from marketplace.data.schema import ColumnSpec, DatasetSchema, normalize_type
from model_store import BlobInfo

__all__ = ["FORMATS", "IngestResult", "format_of", "ingest"]

#: Upload formats by file extension.
FORMATS = {
    "csv": "csv",
    "parquet": "parquet",
    "pq": "parquet",
    "jsonl": "jsonl",
    "ndjson": "jsonl",
    "json": "jsonl",
}
_TEXT_SEMANTICS = frozenset(
    {"plate_number", "phone", "id_card", "person_name", "address", "geo_point"}
)
_GEO_RE = r"^\s*-?[0-9]+(\.[0-9]+)?\s*,\s*-?[0-9]+(\.[0-9]+)?\s*$"


@dataclass(frozen=True, slots=True)
class IngestResult:
    """The snapshot written and what the version records about it."""

    path: Path
    columns: list[ColumnSpec]
    rows: int
    quality: QualityReport


def format_of(filename: str | None, declared: str | None) -> str:
    """``csv``, ``parquet`` or ``jsonl``, from an explicit format or the file's extension.

    Raises:
        UnsupportedFormatError: Neither names a supported format (415).
    """
    wanted = (declared or "").strip().lower()
    if not wanted and filename and "." in filename:
        wanted = filename.rsplit(".", 1)[1].lower()
    fmt = FORMATS.get(wanted)
    if fmt is None:
        shown = wanted or "none"
        raise UnsupportedFormatError(
            f"unsupported upload format {shown!r}: send CSV (.csv), Parquet (.parquet) or "
            "JSON Lines (.jsonl), or name it in the 'format' field"
        )
    return fmt


def q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def lit(text: str) -> str:
    """A quoted SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _reader(fmt: str, path: Path, *, typed: bool) -> str:
    p = lit(str(path))
    if fmt == "csv":
        opts = "header=true, delim=',', quote='\"', escape='\"', strict_mode=true"
        return f"read_csv({p}, {opts}{'' if typed else ', all_varchar=true'})"
    if fmt == "parquet":
        return f"read_parquet({p})"
    return f"read_json({p}, format='auto')"


def _clean(e: Exception, folder: Path) -> str:
    """A DuckDB error's first line, without server paths."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    text = text.replace(str(folder) + "/", "").replace(str(folder), "")
    return re.sub(r"^[A-Za-z ]+ Error: ", "", text)[:500]


def _file_types(conn: duckdb.DuckDBPyConnection, source: str) -> dict[str, str]:
    return {row[0]: row[1] for row in conn.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}


def _check_columns(schema: DatasetSchema, found: dict[str, str]) -> None:
    declared = [c.name for c in schema.columns]
    missing = [n for n in declared if n not in found]
    if missing:
        raise InvalidDataError(
            f"schema column {missing[0]!r} is missing from the file "
            f"(the file has: {', '.join(list(found)[:50])})"
        )
    extra = [n for n in found if n not in declared]
    if extra:
        raise InvalidDataError(
            f"file column {extra[0]!r} is not in the schema: declare every column "
            "(its sensitivity defaults to public)"
        )


def _target_types(schema: DatasetSchema, inferred: dict[str, str]) -> list[ColumnSpec]:
    out: list[ColumnSpec] = []
    for col in schema.columns:
        target = col.type
        if target is None and col.semantic in _TEXT_SEMANTICS:
            target = "VARCHAR"  # 0571 phone numbers and 3301...X id cards are not numbers
        if target is None:
            target = normalize_type(inferred[col.name])
            if target is None:
                raise InvalidDataError(
                    f"column {col.name!r} is {inferred[col.name]} in the file, which datasets "
                    "do not hold; declare a type (VARCHAR, BIGINT, DOUBLE, TIMESTAMP...)"
                )
        if col.semantic == "geo_point" and target != "VARCHAR":
            raise InvalidDataError(f"column {col.name!r}: a geo_point is text 'lat,lon'")
        out.append(col.model_copy(update={"type": target}))
    return out


def _check_values(
    conn: duckdb.DuckDBPyConnection,
    source: str,
    columns: list[ColumnSpec],
    source_types: dict[str, str],
    inferred: dict[str, str],
    declared: dict[str, str | None],
) -> None:
    """Every value converts to its column's type; geo points parse."""
    probes: list[tuple[ColumnSpec, str, str]] = []
    for col in columns:
        name, target = q(col.name), col.type or "VARCHAR"
        if normalize_type(source_types[col.name]) != target:
            probes.append(
                (col, f"{name} IS NOT NULL AND TRY_CAST({name} AS {target}) IS NULL", "type")
            )
        if col.semantic == "geo_point":
            bad = f"{name} IS NOT NULL AND NOT regexp_full_match({name}, {lit(_GEO_RE)})"
            probes.append((col, bad, "geo"))
    if not probes:
        return
    parts = []
    for col, bad, _ in probes:
        parts.append(f"count(*) FILTER (WHERE {bad})")
        parts.append(f"any_value(CAST({q(col.name)} AS VARCHAR)) FILTER (WHERE {bad})")
    row = conn.execute(f"SELECT {', '.join(parts)} FROM {source}").fetchone()
    assert row is not None
    for i, (col, _, kind) in enumerate(probes):
        failing, sample = row[2 * i], row[2 * i + 1]
        if not failing:
            continue
        example = str(sample)[:100]
        if kind == "geo":
            raise InvalidDataError(
                f"column {col.name!r} is a geo_point: {failing} values are not 'lat,lon' "
                f"(e.g. {example!r})"
            )
        origin = "declared" if declared.get(col.name) else "inferred from the first rows"
        raise InvalidDataError(
            f"column {col.name!r}: {failing} values are not {col.type} ({origin}), "
            f"e.g. {example!r}; the file's look like {inferred[col.name]}"
        )


def ingest(
    upload: Path,
    fmt: str,
    schema: DatasetSchema,
    *,
    now: datetime,
    memory_limit: str = "1GB",
    threads: int = 2,
) -> IngestResult:
    """Convert ``upload`` (in a staging folder of its own) into ``snapshot.parquet`` beside it.

    Raises:
        InvalidDataError: The file cannot be read as ``fmt``, or does not fit ``schema`` (422).
        InvalidInputError: A quality rule does not apply to its column's type (422).
    """
    folder = upload.parent
    out = folder / "snapshot.parquet"
    conn = fenced_connection([str(folder) + "/"], memory_limit=memory_limit, threads=threads)
    try:
        try:
            typed_source = _reader(fmt, upload, typed=True)
            source = _reader(fmt, upload, typed=False)
            source_types = _file_types(conn, source)
            inferred = source_types if fmt != "csv" else _file_types(conn, typed_source)
            _check_columns(schema, source_types)
            columns = _target_types(schema, inferred)
            declared = {c.name: c.type for c in schema.columns}
            _check_values(conn, source, columns, source_types, inferred, declared)
            select = ", ".join(f"CAST({q(c.name)} AS {c.type}) AS {q(c.name)}" for c in columns)
            conn.execute(
                f"COPY (SELECT {select} FROM {source}) TO {lit(str(out))} "
                "(FORMAT parquet, COMPRESSION zstd)"
            )
        except duckdb.Error as e:
            if isinstance(e, duckdb.OutOfMemoryException):
                raise InvalidDataError("the file needs more memory to convert than allowed") from e
            raise InvalidDataError(
                f"the file could not be read as {fmt}: {_clean(e, folder)}"
            ) from e
        snapshot = f"read_parquet({lit(str(out))})"
        count = conn.execute(f"SELECT count(*) FROM {snapshot}").fetchone()
        rows = int(count[0]) if count else 0
        quality = run_rules(conn, snapshot, columns, schema.quality, rows=rows, now=now)
    finally:
        conn.close()
    return IngestResult(path=out, columns=columns, rows=rows, quality=quality)


def describe(result: IngestResult) -> dict[str, Any]:
    """The schema part of a version record: columns with their stored types."""
    return {"columns": [c.model_dump(mode="json", exclude_none=True) for c in result.columns]}


def version_fields(result: IngestResult, info: BlobInfo) -> dict[str, Any]:
    """The version row's data columns for a snapshot stored as ``info``."""
    return {
        "data_digest": info.digest,
        "data_rows": result.rows,
        "data_bytes": info.size,
        "data_schema": describe(result),
        "quality": result.quality.public(),
        "blocked": result.quality.blocked,
    }
