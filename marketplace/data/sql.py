"""Owner-only ad hoc SQL over a dataset's own table: parsed with sqlglot, fenced, masked.

``POST /api/v1/products/{handle}/sql`` with ``{"sql": "SELECT ... FROM data ...", "version"}``.
The text must parse (DuckDB's dialect) as exactly one query — a SELECT, or set operations of
SELECTs — whose every table is ``data`` (the version, read through the same masked view as
plans) or a CTE it defines itself: no other table, no schema-qualified name, no table function
(``read_csv``, ``range``, ``glob``...), no file given as a table, no parameters, no command
(``COPY``, ``ATTACH``, ``SET``, ``PRAGMA``...). What passes is wrapped in a row cap and runs on
the engine like a plan, under its fence (no external access) and limits.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from marketplace.data.compile import OutputColumn
from marketplace.data.masking import SNAPSHOT_TABLE, MaskedView
from marketplace.errors import InvalidInputError

__all__ = ["DATA_TABLE", "arrow_type_name", "compile_sql", "output_columns"]

#: The name a statement reads the dataset by.
DATA_TABLE = "data"
_VIEW = "__masked_data"
MAX_SQL = 20_000

_TYPE_NAMES = {
    pa.string(): "VARCHAR",
    pa.large_string(): "VARCHAR",
    pa.bool_(): "BOOLEAN",
    pa.int8(): "TINYINT",
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.date32(): "DATE",
}


def arrow_type_name(t: pa.DataType) -> str:
    """A result column's type in the platform's (DuckDB's) names."""
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_decimal(t):  # e.g. DuckDB's HUGEINT sums
        return f"DECIMAL({t.precision},{t.scale})"
    return _TYPE_NAMES.get(t, str(t).upper())


def _refuse(reason: str) -> InvalidInputError:
    return InvalidInputError(f"SQL refused: {reason}")


def compile_sql(text: str, view: MaskedView, *, max_rows: int) -> tuple[exp.Expr, dict[str, Any]]:
    """Check ``text`` (see the module docstring) and bind it to the masked view.

    Returns:
        The query (reading ``snapshot`` through the view, at most ``max_rows + 1`` rows) and
        its parameters (the view's key pads).

    Raises:
        InvalidInputError: It does not parse, or is anything but one query over ``data``.
    """
    if len(text) > MAX_SQL:
        raise _refuse(f"at most {MAX_SQL} characters")
    try:
        statements = [s for s in sqlglot.parse(text, read="duckdb") if s is not None]
    except (ParseError, TokenError) as e:  # a TokenError is no ParseError: an open quote
        raise _refuse(f"it does not parse: {str(e).splitlines()[0]}") from None
    if len(statements) != 1:
        raise _refuse("send exactly one statement")
    (query,) = statements
    if not isinstance(query, exp.Query):
        raise _refuse(f"only SELECT queries run here, not {query.key.upper()}")
    if any(True for _ in query.find_all(exp.Placeholder, exp.Parameter)):
        raise _refuse("parameters are not supported; write the values in")
    # Identifiers are case-insensitive in DuckDB: compare them folded.
    ctes = {cte.alias_or_name.lower() for cte in query.find_all(exp.CTE)}
    # The engines bind the name "snapshot" to the raw file: a CTE of that name would be read
    # raw, around the masked view.
    if any(name.startswith("__") or name == SNAPSHOT_TABLE for name in ctes):
        raise _refuse(f"'{SNAPSHOT_TABLE}' and names starting with '__' are reserved")
    for table in query.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            raise _refuse("table functions are not allowed; read the table 'data'")
        if table.args.get("db") or table.args.get("catalog"):
            raise _refuse(f"only the table 'data' is readable, not {table.sql('duckdb')}")
        if table.name.lower() != DATA_TABLE and table.name.lower() not in ctes:
            raise _refuse(f"only the table 'data' is readable, not {table.name!r}")

    def bind(node: exp.Expr) -> exp.Expr:
        if (
            isinstance(node, exp.Table)
            and node.name.lower() == DATA_TABLE
            and DATA_TABLE not in ctes
        ):
            alias = node.args.get("alias") or exp.TableAlias(this=exp.to_identifier(DATA_TABLE))
            return exp.Table(this=exp.to_identifier(_VIEW), alias=alias)
        return node

    bound = query.transform(bind)
    wrapped = (
        exp.select(exp.Star())
        .from_(exp.Subquery(this=bound, alias=exp.TableAlias(this=exp.to_identifier("q"))))
        .limit(max_rows + 1)
        .with_(_VIEW, as_=view.select())
    )
    return wrapped, dict(view.key_params)


def output_columns(table: pa.Table) -> tuple[OutputColumn, ...]:
    return tuple(OutputColumn(f.name, arrow_type_name(f.type)) for f in table.schema)
