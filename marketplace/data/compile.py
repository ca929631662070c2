"""Query plan + masked view → one sqlglot expression tree, its bound parameters, its columns.

Nothing the caller wrote reaches SQL as text: every column name must be a column of the
caller's view (a ``sensitive`` column the caller may not see is "unknown", exactly like a
column that does not exist), output names match :data:`~marketplace.data.schema.IDENTIFIER_RE`
and are quoted, and every value is a named placeholder (``p0``, ``p1``...) cast to the column's
type. The tree reads the masked view (a CTE over :data:`~marketplace.data.masking.SNAPSHOT_TABLE`),
so any engine renders the same plan in its own dialect (``CompiledQuery.sql``).

Paging: a page holds ``limit`` rows (the settings' default when omitted, never more than the
row cap); the query fetches one more to know whether ``next_cursor`` is due. A cursor is the
next offset with a fingerprint of the plan and version, so it only continues its own query.
Orders are completed with tie-breakers (the remaining keys or selected columns) so that pages
neither repeat nor skip rows; an unordered plain selection keeps the snapshot's row order.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from marketplace.data.masking import VIEW_NAME, MaskedView, ViewColumn
from marketplace.data.plan import Aggregate, Filter, GroupKey, QueryPlan
from marketplace.data.schema import INTEGER_TYPES, NUMERIC_TYPES, TEMPORAL_TYPES
from marketplace.errors import InvalidInputError

__all__ = [
    "CompiledQuery",
    "OutputColumn",
    "compile_plan",
    "decode_cursor",
    "encode_cursor",
    "whole_view",
]

_LIKE_ESCAPE = "\\"
_UNITS = {"minute": "MINUTE", "hour": "HOUR", "day": "DAY"}


@dataclass(frozen=True, slots=True)
class OutputColumn:
    name: str
    type: str


@dataclass(frozen=True, slots=True)
class CompiledQuery:
    """A plan ready for an engine.

    Attributes:
        expression: ``WITH v AS (<masked view>) SELECT ... FROM v ...``, reading the table
            ``snapshot`` and the named placeholders in ``params``.
        params: Placeholder name → value (key pads, as hex, included when the view needs them).
        columns: The result's columns, in order.
        masked: Masked columns the plan reads.
        offset: The first row of the page.
        page_size: Rows in a full page (the query asks for one more).
    """

    expression: exp.Select
    params: dict[str, Any]
    columns: tuple[OutputColumn, ...]
    masked: tuple[str, ...]
    offset: int
    page_size: int

    def sql(self, dialect: str) -> str:
        return self.expression.sql(dialect=dialect)


def _fingerprint(plan: QueryPlan, version: int) -> str:
    data = json.dumps([version, plan.fingerprint_data()], sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def encode_cursor(plan: QueryPlan, version: int, offset: int) -> str:
    raw = json.dumps({"o": offset, "v": version, "f": _fingerprint(plan, version)})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(plan: QueryPlan, version: int) -> int:
    """The offset a plan's cursor continues at (0 without one); 422 for another query's."""
    if not plan.cursor:
        return 0
    try:
        padded = plan.cursor + "=" * (-len(plan.cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        offset, fingerprint = int(data["o"]), str(data["f"])
        cursor_version = int(data["v"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidInputError("invalid cursor: pass next_cursor as it was returned") from None
    if offset < 0 or cursor_version != version or fingerprint != _fingerprint(plan, version):
        raise InvalidInputError("the cursor belongs to another query (or version)")
    return offset


@dataclass
class _Builder:
    view: MaskedView
    params: dict[str, Any] = field(default_factory=dict)
    used: list[str] = field(default_factory=list)

    def column(self, name: str) -> ViewColumn:
        col = self.view.get(name)
        if col is None:
            # The same answer for a column hidden from the caller and one that does not exist.
            raise InvalidInputError(f"unknown column {name!r}")
        if name not in self.used:
            self.used.append(name)
        return col

    def bind(self, value: Any, col: ViewColumn, what: str) -> exp.Expr:
        """A placeholder for ``value``, cast to a type it can be compared with ``col`` in."""
        t = col.type
        if isinstance(value, bool):
            if t != "BOOLEAN":
                raise InvalidInputError(f"{what}: {col.name} is {t}, not BOOLEAN")
            target = "BOOLEAN"
        elif isinstance(value, int | float):
            if t not in NUMERIC_TYPES:
                raise InvalidInputError(f"{what}: {col.name} is {t}; compare it with {_kind(t)}")
            # A fraction compared with an integer column stays a fraction (3 < 3.5).
            target = t if isinstance(value, int) or t not in INTEGER_TYPES else "DOUBLE"
        elif isinstance(value, str):
            if t in NUMERIC_TYPES or t == "BOOLEAN":
                raise InvalidInputError(f"{what}: {col.name} is {t}; compare it with {_kind(t)}")
            target = t
        else:  # pragma: no cover - the plan's model admits scalars only
            raise InvalidInputError(f"{what}: unsupported value")
        name = f"p{len(self.params)}"
        self.params[name] = value
        return exp.Cast(
            this=exp.Placeholder(this=name), to=exp.DataType.build(target, dialect="duckdb")
        )


def _kind(t: str) -> str:
    """What a JSON value compared with a ``t`` column must be."""
    if t == "BOOLEAN":
        return "true or false"
    return "a number" if t in NUMERIC_TYPES else "a string"


def _ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def _ref(name: str) -> exp.Column:
    return exp.column(name, quoted=True)


def _like_pattern(value: str, *, prefix: bool) -> str:
    escaped = value.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2).replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%" if prefix else f"%{escaped}%"


def _condition(b: _Builder, flt: Filter) -> exp.Expr:
    col = b.column(flt.column)
    ref = _ref(col.name)
    what = f"where {flt.column} {flt.op}"
    op, v = flt.op, flt.value
    if op == "is_null":
        return exp.Is(this=ref, expression=exp.Null())
    if op == "not_null":
        return exp.Not(this=exp.Is(this=ref, expression=exp.Null()))
    if op in ("prefix", "contains"):
        if col.type != "VARCHAR":
            raise InvalidInputError(f"{what}: {col.name} is {col.type}, not text")
        assert isinstance(v, str)
        name = f"p{len(b.params)}"
        b.params[name] = _like_pattern(v, prefix=op == "prefix")
        like = exp.Like(this=ref, expression=exp.Placeholder(this=name))
        return exp.Escape(this=like, expression=exp.Literal.string(_LIKE_ESCAPE))
    if op in ("in", "not_in"):
        assert isinstance(v, list)
        cond: exp.Expr = exp.In(this=ref, expressions=[b.bind(x, col, what) for x in v])
        return exp.Not(this=cond) if op == "not_in" else cond
    if op == "between":
        assert isinstance(v, list)
        return exp.Between(this=ref, low=b.bind(v[0], col, what), high=b.bind(v[1], col, what))
    compare = {
        "eq": exp.EQ,
        "ne": exp.NEQ,
        "lt": exp.LT,
        "le": exp.LTE,
        "gt": exp.GT,
        "ge": exp.GTE,
    }[op]
    return compare(this=ref, expression=b.bind(v, col, what))


def _bucket(col: ViewColumn, unit: str, ref: exp.Expr) -> exp.Expr:
    if col.type not in TEMPORAL_TYPES:
        raise InvalidInputError(f"time_bucket needs a date or timestamp; {col.name} is {col.type}")
    if col.type == "DATE" and unit != "day":
        raise InvalidInputError(f"{col.name} is a DATE: only day buckets apply")
    truncated = exp.TimestampTrunc(this=ref, unit=exp.var(_UNITS[unit]))
    return exp.Cast(this=truncated, to=exp.DataType.build(col.type, dialect="duckdb"))


def _aggregate(b: _Builder, agg: Aggregate) -> tuple[str, str, exp.Expr]:
    """(output name, type, expression) of an aggregate."""
    if agg.column is None:  # count(*)
        return agg.as_ or "count", "BIGINT", exp.Count(this=exp.Star())
    col = b.column(agg.column)
    ref = _ref(col.name)
    name = agg.as_ or f"{agg.fn}_{col.name}"
    if agg.fn == "count":
        return name, "BIGINT", exp.Count(this=ref)
    if agg.fn == "count_distinct":
        return name, "BIGINT", exp.Count(this=exp.Distinct(expressions=[ref]))
    if agg.fn == "time_bucket":
        assert agg.unit is not None
        return agg.as_ or f"{col.name}_{agg.unit}", col.type, _bucket(col, agg.unit, ref)
    if agg.fn in ("sum", "avg"):
        if col.type not in NUMERIC_TYPES:
            masked = " (masked)" if col.masked else ""
            raise InvalidInputError(f"{agg.fn} needs a number; {col.name} is {col.type}{masked}")
        t = "BIGINT" if agg.fn == "sum" and col.type in INTEGER_TYPES else "DOUBLE"
        fn = exp.Sum(this=ref) if agg.fn == "sum" else exp.Avg(this=ref)
        return name, t, exp.Cast(this=fn, to=exp.DataType.build(t))
    fn2 = exp.Min(this=ref) if agg.fn == "min" else exp.Max(this=ref)
    return name, col.type, fn2


def _unique(names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InvalidInputError(f"output column {name!r} appears twice; name one with 'as'")
        seen.add(name)


def compile_plan(
    plan: QueryPlan, view: MaskedView, version: int, *, default_limit: int, max_rows: int
) -> CompiledQuery:
    """Check ``plan`` against ``view`` and build its query (see the module docstring).

    Raises:
        InvalidInputError: An unknown column, a value or function that does not fit a column's
            type, a duplicate output name, an invalid cursor (422).
    """
    b = _Builder(view)
    offset = decode_cursor(plan, version)
    page = min(plan.limit or default_limit, max_rows)
    for name in plan.select:  # checked (and named in "masked") even when grouping
        b.column(name)
    conditions = [_condition(b, flt) for flt in plan.where]

    outputs: list[tuple[str, str, exp.Expr]] = []
    group_exprs: list[exp.Expr] = []
    key_names: list[str] = []
    if plan.grouped:
        for item in plan.group_by:
            key = item if isinstance(item, GroupKey) else GroupKey(column=item)
            col = b.column(key.column)
            expr: exp.Expr = _ref(col.name)
            t, name = col.type, key.as_ or col.name
            if key.time_bucket is not None:
                expr = _bucket(col, key.time_bucket, expr)
                name = key.as_ or f"{col.name}_{key.time_bucket}"
            outputs.append((name, t, expr))
            group_exprs.append(expr)
            key_names.append(name)
        for agg in plan.aggregates:
            name, t, expr = _aggregate(b, agg)
            outputs.append((name, t, expr))
            if agg.fn == "time_bucket":
                group_exprs.append(expr)
                key_names.append(name)
    else:
        names = plan.select or [c.name for c in view.columns]
        for name in names:
            col = b.column(name)
            outputs.append((col.name, col.type, _ref(col.name)))
    _unique([name for name, _, _ in outputs])
    output_names = [name for name, _, _ in outputs]

    order: list[exp.Ordered] = []
    ordered: list[str] = []
    for by in plan.order_by:
        if plan.grouped and by.column not in output_names:
            raise InvalidInputError(
                f"order_by {by.column!r}: a grouped query orders by its output columns "
                f"({', '.join(output_names)})"
            )
        if not plan.grouped:
            b.column(by.column)
        order.append(exp.Ordered(this=_ref(by.column), desc=by.desc, nulls_first=False))
        ordered.append(by.column)
    tie_breakers = key_names if plan.grouped else (output_names if order else [])
    for name in tie_breakers:
        if name not in ordered:
            order.append(exp.Ordered(this=_ref(name), desc=False, nulls_first=False))

    query = exp.select(*(exp.alias_(e, _ident(n)) for n, _, e in outputs)).from_(
        exp.to_table(VIEW_NAME)
    )
    if conditions:
        query = query.where(exp.and_(*conditions))
    if group_exprs:
        query = query.group_by(*group_exprs)
    if order:
        query = query.order_by(*order)
    query = query.limit(page + 1)
    if offset:
        query = query.offset(offset)
    query = query.with_(VIEW_NAME, as_=view.select())
    params = dict(b.params)
    if view.needs_key:
        params.update(view.key_params)
    masked = tuple(c.name for c in view.columns if c.masked and c.name in b.used)
    return CompiledQuery(
        expression=query,
        params=params,
        columns=tuple(OutputColumn(n, t) for n, t, _ in outputs),
        masked=masked,
        offset=offset,
        page_size=page,
    )


def whole_view(view: MaskedView) -> tuple[exp.Select, dict[str, Any]]:
    """Every row and column of the view (downloads): the query and its parameters."""
    query = exp.select(*(_ref(c.name) for c in view.columns)).from_(exp.to_table(VIEW_NAME))
    return query.with_(VIEW_NAME, as_=view.select()), dict(view.key_params)
