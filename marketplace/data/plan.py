"""The query plan a caller sends to ``POST /api/v1/products/{handle}/query``.

A plan is data, never SQL: column names are checked against the caller's view of the schema
(``marketplace.data.compile``) and values travel as bound parameters. Shape::

    {"version": 2, "select": ["intersection", "minute", "count"],
     "where": [{"column": "intersection", "op": "in", "value": ["I-03", "I-07"]}],
     "group_by": ["intersection", {"column": "minute", "time_bucket": "hour", "as": "hour"}],
     "aggregates": [{"fn": "avg", "column": "count", "as": "mean_flow"}],
     "order_by": [{"column": "mean_flow", "desc": true}], "limit": 100, "cursor": null}

Without ``group_by`` and ``aggregates`` the rows are the selected columns (all visible ones
when ``select`` is empty); with them, the group-by keys then the aggregates. A time bucket
may be a group-by key (above) or an aggregate ``{"fn": "time_bucket", "column": "minute",
"unit": "hour", "as": "hour"}``: either way the rows are grouped by it.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from marketplace.data.schema import IDENTIFIER_RE

__all__ = [
    "AGGREGATE_FNS",
    "OPS",
    "TIME_UNITS",
    "Aggregate",
    "Filter",
    "GroupKey",
    "Order",
    "QueryPlan",
]

Op = Literal[
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "in",
    "not_in",
    "between",
    "is_null",
    "not_null",
    "prefix",
    "contains",
]
AggregateFn = Literal["count", "count_distinct", "sum", "avg", "min", "max", "time_bucket"]
TimeUnit = Literal["minute", "hour", "day"]
# The same names as tuples, from the one list each (the Literal types above).
OPS: tuple[str, ...] = get_args(Op)
AGGREGATE_FNS: tuple[str, ...] = get_args(AggregateFn)
TIME_UNITS: tuple[str, ...] = get_args(TimeUnit)
Scalar = str | int | float | bool | None

MAX_IN_VALUES = 1000
MAX_FILTERS = 50
MAX_ITEMS = 100
MAX_STRING = 1000


def _check_output_name(value: str | None) -> str | None:
    if value is not None and not IDENTIFIER_RE.match(value):
        raise ValueError(f"invalid output name {value!r}: a letter or '_' then word characters")
    return value


class Filter(BaseModel):
    """``column op value``; ``in``/``not_in`` take a list, ``between`` [low, high],
    ``is_null``/``not_null`` no value, ``prefix``/``contains`` a string."""

    model_config = ConfigDict(extra="forbid")

    column: str = Field(max_length=200)
    op: Op
    value: Scalar | list[Scalar] = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> Filter:
        v = self.value
        if self.op in ("is_null", "not_null"):
            if v is not None:
                raise ValueError(f"op {self.op} takes no value")
        elif self.op in ("in", "not_in"):
            if not isinstance(v, list) or not 1 <= len(v) <= MAX_IN_VALUES:
                raise ValueError(f"op {self.op} needs a list of 1 to {MAX_IN_VALUES} values")
            if any(x is None for x in v):
                raise ValueError(f"op {self.op} compares values, not null (use is_null)")
        elif self.op == "between":
            if not isinstance(v, list) or len(v) != 2 or None in v:
                raise ValueError("op between needs [low, high]")
        elif self.op in ("prefix", "contains"):
            if not isinstance(v, str) or not v:
                raise ValueError(f"op {self.op} needs a non-empty string")
        elif v is None or isinstance(v, list):
            raise ValueError(f"op {self.op} needs one value (use is_null for null)")
        for item in v if isinstance(v, list) else [v]:
            if isinstance(item, str) and len(item) > MAX_STRING:
                raise ValueError(f"values are at most {MAX_STRING} characters")
        return self


class GroupKey(BaseModel):
    """A group-by key given as an object: a column, optionally truncated to a time bucket."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    column: str = Field(max_length=200)
    time_bucket: TimeUnit | None = None
    as_: str | None = Field(default=None, alias="as")

    @field_validator("as_")
    @classmethod
    def _output_name(cls, value: str | None) -> str | None:
        return _check_output_name(value)


class Aggregate(BaseModel):
    """``fn(column) AS as``; ``count`` without a column counts rows."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    fn: AggregateFn
    column: str | None = Field(default=None, max_length=200)
    as_: str | None = Field(default=None, alias="as")
    # time_bucket only: the bucket width.
    unit: TimeUnit | None = None

    @field_validator("as_")
    @classmethod
    def _output_name(cls, value: str | None) -> str | None:
        return _check_output_name(value)

    @model_validator(mode="after")
    def _fields(self) -> Aggregate:
        if self.fn != "count" and self.column is None:
            raise ValueError(f"aggregate {self.fn} needs a column")
        if self.fn == "time_bucket" and self.unit is None:
            raise ValueError("time_bucket needs a unit: minute, hour or day")
        if self.fn != "time_bucket" and self.unit is not None:
            raise ValueError("only time_bucket takes a unit")
        return self


class Order(BaseModel):
    model_config = ConfigDict(extra="forbid")

    column: str = Field(max_length=200)
    desc: bool = False


class QueryPlan(BaseModel):
    """One query over one version of a dataset (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(default=None, ge=1)
    select: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    where: list[Filter] = Field(default_factory=list, max_length=MAX_FILTERS)
    group_by: list[str | GroupKey] = Field(default_factory=list, max_length=MAX_ITEMS)
    aggregates: list[Aggregate] = Field(default_factory=list, max_length=MAX_ITEMS)
    order_by: list[Order] = Field(default_factory=list, max_length=MAX_ITEMS)
    limit: int | None = Field(default=None, ge=1)
    cursor: str | None = Field(default=None, max_length=500)

    @property
    def grouped(self) -> bool:
        return bool(self.group_by or self.aggregates)

    def fingerprint_data(self) -> dict[str, Any]:
        """What identifies the query's rows (everything but the page and the cursor)."""
        return self.model_dump(mode="json", by_alias=True, exclude={"cursor", "limit"})
