"""DuckDB's semantics in Spark SQL: the rewrites a compiled query needs before Spark runs it.

Plans and masked views are built once, as sqlglot trees with DuckDB's meaning
(``marketplace.data.compile``, ``marketplace.data.masking``). sqlglot renders most of a tree in
Spark's dialect unchanged in meaning: comparisons, ``LIKE ... ESCAPE``, ``IN``, ``BETWEEN``,
``DATE_TRUNC`` (with the session in UTC, as DuckDB's is), ``LEFT``/``RIGHT``/``LENGTH`` (code
points on both), ``SHA2`` over ``UNHEX``/``ENCODE`` bytes (the HMAC pseudonyms), ``NULLS
LAST`` orders, ``LIMIT``/``OFFSET``, ``TIMESTAMP`` as ``TIMESTAMP_NTZ``. Where Spark's
function means something else, this module rewrites the tree:

* ``TRY_CAST`` stays a ``TRY_CAST`` (sqlglot writes a plain ``CAST``, which fails on malformed
  input under Spark's ANSI mode instead of giving NULL).
* The geo grid (``CAST(ROUND(<double>, d) AS VARCHAR)`` over ``TRY_CAST`` of text): Spark's
  decimal literals stay DECIMAL where DuckDB's meet a DOUBLE and become one, its ``FLOOR``
  returns a BIGINT, its ``ROUND`` rounds the decimal text of a double (``ROUND(0.285, 2)`` is
  0.29 there, 0.28 in DuckDB, which rounds ``x * 10^d``), its double-to-text prints Java's
  digits, and it parses ``5d`` or ``0x1p3`` as numbers. The rewrite computes in doubles,
  floors in doubles, rounds ``x * 10^d`` to an integer (exact on both) and prints that integer
  with its decimal point put back, as DuckDB prints such a double (its shortest digits), and
  parses only decimal and exponent notation (with DuckDB's ``1_000`` digit separators).

Identical results are therefore proved (``tests/integration/test_spark_engine.py``) for what a
geo point is: decimal coordinates, rounded values from 0.0001 up to 10^10 in magnitude (grid
cells of ~25 m and more). Outside that, and for text DuckDB alone reads as a number (``inf``,
``nan``, ``+-1``), the engines may print differently; ``COS`` may differ in its last bit
(Java's and C's), which moves a snapped point only if it lies within ~10^-12 degrees of a cell
edge.

The same module fences the Spark engine in: Spark SQL can call Java (``reflect``,
``java_method``) and name files, so a rendered query that calls a function sqlglot does not
know as a standard one is refused (:func:`check_functions`), and the table ``snapshot`` is
bound to a temporary view of the version's snapshot, the only table a query can read.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from marketplace.data.masking import SNAPSHOT_TABLE
from marketplace.errors import InvalidInputError

__all__ = ["check_functions", "to_spark_sql"]

_DOUBLE = exp.DataType.build("DOUBLE")
_TEXT_TYPES = {exp.DataType.Type.VARCHAR, exp.DataType.Type.TEXT, exp.DataType.Type.NVARCHAR}
_FLOAT_TYPES = {exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT}
# The variable a Spark lambda binds a value to (see _let).
_BOUND = "__cb_x"
# Doubles at or past 2^52 in magnitude are integers already: FLOOR leaves them as they are.
_INTEGRAL_DOUBLE = 2**52
# DuckDB prints a double in plain digits from 1e-4 up to 1e16; an integer below 1e15 written
# with its decimal point put back is its shortest representation (15 digits at most).
_MAX_PLAIN = 10**15
# Decimal or exponent notation, digits optionally separated by single underscores, spaces
# around (what both engines read alike; DuckDB reads a few more spellings).
_NUMBER_RE = r"^\s*[+-]?(\d+(_\d+)*(\.(\d+(_\d+)*)?)?|\.\d+(_\d+)*)([eE][+-]?\d+)?\s*$"


def _lit(text: str) -> exp.Literal:
    return exp.Literal.string(text)


def _num(value: int) -> exp.Expr:
    return exp.Literal.number(value)


def _case(condition: exp.Expr, then: exp.Expr, default: exp.Expr | None = None) -> exp.Case:
    return exp.Case(ifs=[exp.If(this=condition, true=then)], default=default)


def _is_text(dtype: exp.DataType) -> bool:
    return dtype.this in _TEXT_TYPES


def _parse_double(text: exp.Expr) -> exp.Expr:
    """DuckDB's ``TRY_CAST(text AS DOUBLE)`` for the notations both engines read alike."""
    matches = exp.RegexpLike(this=text.copy(), expression=_lit(_NUMBER_RE))
    digits = exp.RegexpReplace(this=text.copy(), expression=_lit("_"), replacement=_lit(""))
    return exp.TryCast(this=_case(matches, digits), to=_DOUBLE.copy(), safe=True)


def _let(value: exp.Expr, body: Callable[[exp.Expr], exp.Expr]) -> exp.Expr:
    """``body(x)`` with ``x`` bound to ``value`` once (a Spark lambda over a one-element
    array), so that a large argument is neither written nor computed several times."""
    name = exp.to_identifier(_BOUND)
    lam = exp.Lambda(this=body(exp.column(_BOUND)), expressions=[name])
    return exp.Bracket(
        this=exp.Transform(this=exp.Array(expressions=[value]), expression=lam),
        expressions=[_num(0)],
    )


def _floor(value: exp.Expr) -> exp.Expr:
    """DuckDB's FLOOR of a double: a double (Spark's is a BIGINT, saturating when huge)."""

    def body(x: exp.Expr) -> exp.Expr:
        small = exp.LT(this=exp.Abs(this=x.copy()), expression=_num(_INTEGRAL_DOUBLE))
        floored = exp.Cast(this=exp.Floor(this=x.copy()), to=_DOUBLE.copy())
        return _case(small, floored, x.copy())

    return _let(value, body)


def _bottom_up(node: exp.Expr, fn: Callable[[exp.Expr], exp.Expr]) -> exp.Expr:
    """``fn`` applied to every node of ``node`` (modified in place), children first."""
    for key, value in list(node.args.items()):
        if isinstance(value, exp.Expr):
            node.set(key, _bottom_up(value, fn))
        elif isinstance(value, list):
            node.set(key, [_bottom_up(v, fn) if isinstance(v, exp.Expr) else v for v in value])
    return fn(node)


def _in_doubles(tree: exp.Expr) -> exp.Expr:
    """The geo grid's arithmetic as DuckDB evaluates it: in doubles throughout."""

    def fix(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Literal) and node.is_number and not node.is_int:
            return exp.Cast(this=node, to=_DOUBLE.copy())
        if isinstance(node, exp.Floor) and node.args.get("decimals") is None:
            return _floor(node.this)
        if isinstance(node, exp.TryCast) and node.to.this in _FLOAT_TYPES:
            return _parse_double(node.this)
        return node

    return _bottom_up(tree, fix)


def _rounded_text(value: exp.Expr, decimals: int) -> exp.Expr:
    """``CAST(ROUND(value, decimals) AS VARCHAR)`` as DuckDB computes it for a double.

    DuckDB rounds ``value * 10^d`` to the nearest integer (halves away from zero), divides by
    ``10^d`` and prints the shortest digits. Spark's ``ROUND(x)`` without decimals rounds a
    double to the same integer; that integer, printed with its point put back and trailing
    zeros dropped (one kept), is DuckDB's text.
    """
    scale = 10**decimals
    scaled = exp.Round(
        this=exp.Mul(
            this=exp.paren(value, copy=False),
            expression=exp.Cast(this=_num(scale), to=_DOUBLE.copy()),
        )
    )

    def text(r: exp.Expr) -> exp.Expr:
        magnitude = exp.Abs(this=exp.Cast(this=r.copy(), to=exp.DataType.build("BIGINT")))
        integer_part = exp.Cast(
            this=exp.IntDiv(this=magnitude.copy(), expression=_num(scale)),
            to=exp.DataType.build("VARCHAR"),
        )
        digits = exp.Pad(
            this=exp.Cast(
                this=exp.Mod(this=magnitude.copy(), expression=_num(scale)),
                to=exp.DataType.build("VARCHAR"),
            ),
            expression=_num(decimals),
            fill_pattern=_lit("0"),
            is_left=True,
        )
        fraction = exp.Trim(this=digits, expression=_lit("0"), position="TRAILING")
        sign = _case(exp.LT(this=r.copy(), expression=_num(0)), _lit("-"), _lit(""))
        plain = _concat(
            sign,
            integer_part,
            _lit("."),
            _case(exp.EQ(this=fraction, expression=_lit("")), _lit("0"), fraction.copy()),
        )
        in_plain_range = exp.and_(
            exp.GTE(this=exp.Abs(this=r.copy()), expression=_num(10 ** max(decimals - 4, 0))),
            exp.LT(this=exp.Abs(this=r.copy()), expression=_num(_MAX_PLAIN)),
        )
        # Outside the plain range (and for NaN and infinities) Spark prints its own way.
        fallback = exp.Cast(
            this=exp.Div(this=r.copy(), expression=exp.Cast(this=_num(scale), to=_DOUBLE.copy())),
            to=exp.DataType.build("VARCHAR"),
        )
        return exp.Case(
            ifs=[
                exp.If(this=exp.Is(this=r.copy(), expression=exp.Null()), true=exp.Null()),
                exp.If(this=in_plain_range, true=plain),
            ],
            default=fallback,
        )

    return _let(scaled, text)


def _concat(*parts: exp.Expr) -> exp.Expr:
    out = parts[0]
    for part in parts[1:]:
        out = exp.DPipe(this=out, expression=part, safe=True)
    return out


def _rounded_double_as_text(node: exp.Cast) -> tuple[exp.Expr, int] | None:
    """``(value, d)`` when ``node`` is ``CAST(ROUND(value, d) AS text)`` over parsed text."""
    inner = node.this
    if not (isinstance(inner, exp.Round) and _is_text(node.to)):
        return None
    decimals = inner.args.get("decimals")
    if not (isinstance(decimals, exp.Literal) and decimals.is_int):
        return None
    if not any(c.to.this in _FLOAT_TYPES for c in inner.this.find_all(exp.TryCast)):
        return None
    return inner.this, int(decimals.to_py())


def to_spark_sql(query: exp.Expr, table: str) -> str:
    """``query`` in Spark SQL with DuckDB's meaning, reading ``table`` for ``snapshot``.

    Raises:
        InvalidInputError: The query calls a function Spark must not run (see
            :func:`check_functions`).
    """

    def rewrite(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Table) and node.name == SNAPSHOT_TABLE and not node.db:
            bound = exp.to_table(table)
            if node.args.get("alias") is not None:
                bound.set("alias", node.args["alias"])
            return bound
        if isinstance(node, exp.Cast) and not isinstance(node, exp.TryCast):
            found = _rounded_double_as_text(node)
            if found is not None:
                value, decimals = found
                return _rounded_text(_in_doubles(value), decimals)
        if isinstance(node, exp.TryCast) and not node.args.get("safe"):
            node.set("safe", True)
        return node

    sql = _bottom_up(query.copy(), rewrite).sql(dialect="spark", comments=False)
    check_functions(sql)
    return sql


#: Functions the rewrites above write that sqlglot reads back as unknown ones.
_OWN_FUNCTIONS = frozenset[str]()


def check_functions(sql: str) -> None:
    """Refuse Spark SQL that calls a function sqlglot does not know as a standard one.

    Spark runs Java by name (``reflect``, ``java_method``, ``try_reflect``) and reports files
    (``input_file_name``): a query reaches Spark only when every function in it, read back
    from the text Spark will parse, is one sqlglot types (string, math, date, aggregate...).

    Raises:
        InvalidInputError: Another function is called, or the text does not read back.
    """
    try:
        tree = sqlglot.parse_one(sql, read="spark")
    except ParseError as e:  # pragma: no cover - sqlglot wrote it
        raise InvalidInputError("the query cannot run on the Spark engine") from e
    for fn in tree.find_all(exp.Anonymous):
        name = str(fn.this).lower()
        if name not in _OWN_FUNCTIONS:
            raise InvalidInputError(f"function {name}() is not available on the Spark engine")
