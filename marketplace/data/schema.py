"""A dataset's declared schema: columns (type, semantic, sensitivity) and quality rules.

The owner sends it with an upload as JSON::

    {"columns": [{"name": "plate", "type": "VARCHAR", "semantic": "plate_number",
                  "sensitivity": "personal", "description": "Plate number"}, ...],
     "quality": [{"rule": "not_null", "column": "plate", "blocking": true}, ...]}

``type`` is optional (then the type inferred from the file is kept); when given it is checked
against the file's values. Types are DuckDB's names (aliases such as ``string``, ``int64`` or
``datetime`` are accepted and normalised), the vocabulary every engine renders through sqlglot.
Engine-neutral: nothing here runs a query.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from marketplace.errors import InvalidInputError

__all__ = [
    "IDENTIFIER_RE",
    "NUMERIC_TYPES",
    "SEMANTICS",
    "SUPPORTED_TYPES",
    "TEMPORAL_TYPES",
    "ColumnSpec",
    "DatasetSchema",
    "QualityRule",
    "normalize_type",
    "parse_schema",
]

#: Column names and output names: a letter or underscore (any script), then word characters.
IDENTIFIER_RE = re.compile(r"^[^\W\d]\w{0,62}$", re.UNICODE)

SUPPORTED_TYPES = (
    "VARCHAR",
    "BOOLEAN",
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "FLOAT",
    "DOUBLE",
    "DATE",
    "TIMESTAMP",
    "TIMESTAMPTZ",
)
INTEGER_TYPES = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT"})
NUMERIC_TYPES = INTEGER_TYPES | {"FLOAT", "DOUBLE"}
TEMPORAL_TYPES = frozenset({"DATE", "TIMESTAMP", "TIMESTAMPTZ"})

_ALIASES = {
    "STRING": "VARCHAR",
    "TEXT": "VARCHAR",
    "STR": "VARCHAR",
    "UTF8": "VARCHAR",
    "BOOL": "BOOLEAN",
    "INT8": "TINYINT",
    "INT16": "SMALLINT",
    "INT": "INTEGER",
    "INT32": "INTEGER",
    "INT4": "INTEGER",
    "LONG": "BIGINT",
    "INT64": "BIGINT",
    "REAL": "FLOAT",
    "FLOAT32": "FLOAT",
    "FLOAT4": "FLOAT",
    "FLOAT64": "DOUBLE",
    "FLOAT8": "DOUBLE",
    "DATETIME": "TIMESTAMP",
    "TIMESTAMP_NS": "TIMESTAMP",
    "TIMESTAMP_MS": "TIMESTAMP",
    "TIMESTAMP_S": "TIMESTAMP",
    "TIMESTAMP_US": "TIMESTAMP",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ",
}

SEMANTICS = (
    "plate_number",
    "phone",
    "id_card",
    "person_name",
    "geo_point",
    "address",
    "timestamp",
)
#: Semantics with a partial mask (the others are pseudonymised when personal).
PARTIAL_SEMANTICS = ("plate_number", "phone", "id_card", "person_name", "address", "timestamp")
Semantic = Literal[
    "plate_number", "phone", "id_card", "person_name", "geo_point", "address", "timestamp"
]
Sensitivity = Literal["public", "personal", "sensitive"]
RuleName = Literal[
    "not_null", "unique", "range", "pattern", "allowed_values", "freshness", "min_rows"
]
MAX_COLUMNS = 500
MAX_RULES = 100


def normalize_type(name: str) -> str | None:
    """The canonical type for ``name`` (any case, aliases allowed), or None if unsupported."""
    upper = " ".join(name.strip().upper().split())
    upper = _ALIASES.get(upper, upper)
    return upper if upper in SUPPORTED_TYPES else None


class ColumnSpec(BaseModel):
    """One column of a dataset: what the owner declares, and (once stored) its type."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: str | None = None
    semantic: Semantic | None = None
    sensitivity: Sensitivity = "public"
    description: str = Field(default="", max_length=2000)
    # How a personal column is masked: a partial mask by semantic (plates, phones, id cards,
    # names) or a keyed pseudonym (the default for other semantics).
    mask: Literal["partial", "pseudonym"] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not IDENTIFIER_RE.match(value):
            raise ValueError(
                f"invalid column name {value!r}: a letter or '_' then letters, digits or '_', "
                "at most 63"
            )
        return value

    @field_validator("type")
    @classmethod
    def _type(cls, value: str | None) -> str | None:
        if value is None:
            return None
        canonical = normalize_type(value)
        if canonical is None:
            raise ValueError(f"unsupported type {value!r}; supported: {', '.join(SUPPORTED_TYPES)}")
        return canonical

    @model_validator(mode="after")
    def _consistent(self) -> ColumnSpec:
        if self.semantic == "geo_point" and self.type not in (None, "VARCHAR"):
            raise ValueError(f"column {self.name}: a geo_point is VARCHAR text 'lat,lon'")
        if self.mask == "partial" and self.semantic not in PARTIAL_SEMANTICS:
            raise ValueError(
                f"column {self.name}: a partial mask needs a semantic of "
                f"{', '.join(PARTIAL_SEMANTICS)} (or use mask 'pseudonym')"
            )
        return self


class QualityRule(BaseModel):
    """One data quality rule, run at upload (``marketplace.data.quality``)."""

    model_config = ConfigDict(extra="forbid")

    rule: RuleName
    column: str | None = None
    # A failing blocking rule keeps the version from being published.
    blocking: bool = False
    # range: min and/or max (numbers, or ISO dates/timestamps for temporal columns);
    # min_rows: min.
    min: float | int | str | None = None
    max: float | int | str | None = None
    pattern: str | None = Field(default=None, max_length=500)
    values: list[str | int | float | bool] | None = Field(default=None, max_length=1000)
    max_age_hours: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _fields(self) -> QualityRule:
        needs_column = self.rule != "min_rows"
        if needs_column and not self.column:
            raise ValueError(f"rule {self.rule} needs a column")
        if not needs_column and self.column:
            raise ValueError("rule min_rows applies to the whole dataset: no column")
        if self.rule == "range" and self.min is None and self.max is None:
            raise ValueError("rule range needs min and/or max")
        if self.rule == "min_rows" and not isinstance(self.min, int):
            raise ValueError("rule min_rows needs min, an integer")
        if self.rule == "pattern":
            if not self.pattern:
                raise ValueError("rule pattern needs a pattern (a regular expression)")
            try:
                re.compile(self.pattern)
            except re.error as e:
                raise ValueError(f"invalid pattern: {e}") from None
        if self.rule == "allowed_values" and not self.values:
            raise ValueError("rule allowed_values needs values")
        if self.rule == "freshness" and self.max_age_hours is None:
            raise ValueError("rule freshness needs max_age_hours")
        return self


class DatasetSchema(BaseModel):
    """The columns of a dataset version and the quality rules its data must meet."""

    model_config = ConfigDict(extra="forbid")

    columns: list[ColumnSpec] = Field(min_length=1, max_length=MAX_COLUMNS)
    quality: list[QualityRule] = Field(default_factory=list, max_length=MAX_RULES)

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSchema:
        seen: set[str] = set()
        for col in self.columns:
            if col.name in seen:
                raise ValueError(f"column {col.name!r} is declared twice")
            seen.add(col.name)
        for rule in self.quality:
            if rule.column is not None and rule.column not in seen:
                raise ValueError(f"rule {rule.rule} names column {rule.column!r}, not declared")
        return self

    def column(self, name: str) -> ColumnSpec:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)


def parse_schema(raw: str | bytes | dict[str, Any] | None) -> DatasetSchema:
    """The schema from its JSON text (or parsed JSON); 422 naming what is wrong."""
    if raw is None or raw in ("", b""):
        raise InvalidInputError(
            "a data version needs its schema: a JSON 'schema' field with 'columns'"
        )
    try:
        if isinstance(raw, dict):
            return DatasetSchema.model_validate(raw)
        return DatasetSchema.model_validate_json(raw)
    except ValidationError as e:
        problems = []
        for err in e.errors()[:10]:
            loc = ".".join(str(p) for p in err.get("loc", ()))
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            problems.append(f"{loc}: {msg}" if loc else msg)
        raise InvalidInputError("invalid schema: " + "; ".join(problems)) from None
