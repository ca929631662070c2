"""Data quality rules, run in DuckDB on a new snapshot at upload.

| rule             | passes when                                                     |
|------------------|-----------------------------------------------------------------|
| ``not_null``     | no value of the column is null                                  |
| ``unique``       | no non-null value occurs twice                                  |
| ``range``        | every non-null value lies within ``min``..``max`` (either bound)  |
| ``pattern``      | every non-null text value matches ``pattern`` (whole value, RE2)|
| ``allowed_values`` | every non-null value is one of ``values``                     |
| ``freshness``    | the newest timestamp is at most ``max_age_hours`` old at upload |
| ``min_rows``     | the dataset has at least ``min`` rows                           |

Each rule reports ``{"rule", "column", "passed", "failing_rows", "sample", "blocking"}``
(``sample``: up to five failing values). The score is the mean over rules of the share of rows
that pass (1 or 0 for the two whole-dataset rules); no rules, no score. A failing rule marked
``blocking`` keeps the version from being published (``blocked``). Timestamps without a time
zone are taken as UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from marketplace.data.schema import NUMERIC_TYPES, TEMPORAL_TYPES, ColumnSpec, QualityRule
from marketplace.errors import InvalidInputError

__all__ = ["QualityReport", "run_rules"]

SAMPLE = 5


@dataclass(frozen=True, slots=True)
class QualityReport:
    score: float | None
    rules: list[dict[str, Any]]
    blocked: bool

    def public(self) -> dict[str, Any]:
        return {"score": self.score, "rules": self.rules, "blocked": self.blocked}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sample(values: list[Any] | None) -> list[str]:
    return [str(v)[:100] for v in (values or [])[:SAMPLE]]


def _bound(value: Any, col: ColumnSpec, rule: QualityRule) -> tuple[str, Any]:
    """A range bound as (SQL with a placeholder, parameter), in the column's type."""
    t = col.type or "VARCHAR"
    if t in NUMERIC_TYPES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInputError(f"rule range on {col.name}: bounds must be numbers")
        return "CAST(? AS DOUBLE)", value
    if t in TEMPORAL_TYPES:
        return f"CAST(? AS {t})", str(value)
    raise InvalidInputError(
        f"rule {rule.rule} on {col.name}: needs a number, date or timestamp column, not {t}"
    )


def _count_and_sample(
    conn: duckdb.DuckDBPyConnection, snapshot: str, col: str, bad: str, params: list[Any]
) -> tuple[int, list[str]]:
    row = conn.execute(
        f"SELECT count(*), list(CAST({col} AS VARCHAR))[1:{SAMPLE}] "
        f"FROM (SELECT {col} FROM {snapshot} WHERE {bad})",
        params,
    ).fetchone()
    assert row is not None
    return int(row[0]), _sample(row[1])


def _row_rule(
    conn: duckdb.DuckDBPyConnection, snapshot: str, rule: QualityRule, col: ColumnSpec
) -> tuple[int, list[str]]:
    c = _q(col.name)
    t = col.type or "VARCHAR"
    if rule.rule == "not_null":
        return _count_and_sample(conn, snapshot, c, f"{c} IS NULL", [])[0], []
    if rule.rule == "unique":
        row = conn.execute(
            f"SELECT coalesce(sum(n), 0), list(CAST(v AS VARCHAR))[1:{SAMPLE}] FROM "
            f"(SELECT {c} AS v, count(*) AS n FROM {snapshot} WHERE {c} IS NOT NULL "
            f"GROUP BY 1 HAVING count(*) > 1 ORDER BY 2 DESC, 1)"
        ).fetchone()
        assert row is not None
        return int(row[0]), _sample(row[1])
    if rule.rule == "range":
        checks, params = [], []
        if rule.min is not None:
            sql, value = _bound(rule.min, col, rule)
            checks.append(f"{c} < {sql}")
            params.append(value)
        if rule.max is not None:
            sql, value = _bound(rule.max, col, rule)
            checks.append(f"{c} > {sql}")
            params.append(value)
        return _count_and_sample(conn, snapshot, c, " OR ".join(checks), params)
    if rule.rule == "pattern":
        if t != "VARCHAR":
            raise InvalidInputError(f"rule pattern on {col.name}: needs a text column, not {t}")
        bad = f"{c} IS NOT NULL AND NOT regexp_full_match({c}, ?)"
        return _count_and_sample(conn, snapshot, c, bad, [rule.pattern])
    assert rule.rule == "allowed_values" and rule.values is not None
    allowed = [str(v).lower() if isinstance(v, bool) else str(v) for v in rule.values]
    bad = f"{c} IS NOT NULL AND NOT list_contains(?, CAST({c} AS VARCHAR))"
    return _count_and_sample(conn, snapshot, c, bad, [allowed])


def _freshness(
    conn: duckdb.DuckDBPyConnection,
    snapshot: str,
    rule: QualityRule,
    col: ColumnSpec,
    now: datetime,
) -> tuple[bool, list[str]]:
    t = col.type or "VARCHAR"
    if t not in TEMPORAL_TYPES:
        raise InvalidInputError(f"rule freshness on {col.name}: needs a timestamp, not {t}")
    row = conn.execute(f"SELECT max({_q(col.name)}) FROM {snapshot}").fetchone()
    newest = row[0] if row else None
    if newest is None:
        return False, []
    assert rule.max_age_hours is not None
    oldest_allowed = now - timedelta(hours=rule.max_age_hours)
    if isinstance(newest, datetime):
        aware = newest if newest.tzinfo is not None else newest.replace(tzinfo=UTC)
        passed = aware >= oldest_allowed
    else:  # a DATE: fresh if its day reaches into the window
        passed = newest >= oldest_allowed.date()
    return passed, [newest.isoformat()]


def run_rules(
    conn: duckdb.DuckDBPyConnection,
    snapshot: str,
    columns: list[ColumnSpec],
    rules: list[QualityRule],
    *,
    rows: int,
    now: datetime,
) -> QualityReport:
    """Run ``rules`` over ``snapshot`` (a DuckDB table expression) whose columns are typed.

    Raises:
        InvalidInputError: A rule does not apply to its column's type, or its pattern is not a
            regular expression DuckDB (RE2) accepts (422).
    """
    by_name = {c.name: c for c in columns}
    results: list[dict[str, Any]] = []
    shares: list[float] = []
    for rule in rules:
        col = by_name.get(rule.column) if rule.column else None
        if rule.rule == "min_rows":
            assert isinstance(rule.min, int)
            passed = rows >= rule.min
            failing, sample = max(rule.min - rows, 0), [str(rows)]
            shares.append(1.0 if passed else 0.0)
        elif rule.rule == "freshness":
            assert col is not None
            passed, sample = _freshness(conn, snapshot, rule, col, now)
            failing = 0 if passed else rows
            shares.append(1.0 if passed else 0.0)
        else:
            assert col is not None
            try:
                failing, sample = _row_rule(conn, snapshot, rule, col)
            except duckdb.Error as e:
                message = str(e).splitlines()[0]
                raise InvalidInputError(f"rule {rule.rule} on {col.name}: {message}") from e
            passed = failing == 0
            shares.append(1.0 - failing / rows if rows else 1.0)
        results.append(
            {
                "rule": rule.rule,
                "column": rule.column,
                "passed": passed,
                "failing_rows": failing,
                "sample": sample if not passed else [],
                "blocking": rule.blocking,
            }
        )
    score = round(sum(shares) / len(shares), 4) if shares else None
    blocked = any(r["blocking"] and not r["passed"] for r in results)
    return QualityReport(score=score, rules=results, blocked=blocked)
