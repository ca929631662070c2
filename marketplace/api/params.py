"""Query parameter types shared by the routes, each with its real format in the OpenAPI
document: a billing period's pattern, days and instants, the catalog's enums."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated

from fastapi import Path, Query
from pydantic import BeforeValidator, TypeAdapter

from marketplace.constants import Domain, ProductKind, ProductState, Tier

PERIOD_PATTERN = r"^(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])$"
"""A billing period: a month, ``YYYY-MM``, from 1970-01 to 2999-12 (so the month after it
is a date too)."""

PeriodQuery = Annotated[
    str | None, Query(pattern=PERIOD_PATTERN, description="A month, e.g. 2026-11")
]
TenantQuery = Annotated[
    str | None, Query(max_length=63, description="Operator only: one tenant's (slug)")
]

_INSTANT: TypeAdapter[datetime] = TypeAdapter(datetime)
# RFC 3339's date-time: the offset is required (pydantic alone would take a naive time, or a
# number of seconds since 1970).
_RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


def _day_or_instant(value: object) -> object:
    # A day is exactly YYYY-MM-DD; anything else must be an RFC 3339 instant (pydantic would
    # read a bare day as midnight, and midnight as a day).
    if isinstance(value, str):
        if len(value) == 10:
            return date.fromisoformat(value)
        if not _RFC3339.match(value):
            raise ValueError("not a day (YYYY-MM-DD) or an RFC 3339 date-time with an offset")
        return _INSTANT.validate_python(value)
    return value


DayOrInstant = Annotated[datetime | date, BeforeValidator(_day_or_instant)]
"""A day (``YYYY-MM-DD``) or an RFC 3339 instant (with its offset, ``Z`` for UTC)."""


def _instant(value: object) -> object:
    if isinstance(value, str) and not _RFC3339.match(value):
        raise ValueError("not an RFC 3339 date-time with an offset (Z for UTC)")
    if isinstance(value, int | float):
        raise ValueError("not an RFC 3339 date-time with an offset (Z for UTC)")
    return value


Instant = Annotated[datetime, BeforeValidator(_instant)]
"""An RFC 3339 instant, its offset required (``Z`` for UTC)."""

KindQuery = Annotated[ProductKind | None, Query()]
DomainQuery = Annotated[Domain | None, Query()]
TierQuery = Annotated[Tier | None, Query()]
StateQuery = Annotated[ProductState | None, Query()]
OwnerQuery = Annotated[str | None, Query(max_length=63, description="The owner tenant's slug")]
TagQuery = Annotated[str | None, Query(max_length=100)]

RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]
"""A numeric id in a path (a database row id: a signed 64-bit integer)."""

VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1)]
"""A product version's number in a path, routed as ``{version:int}`` so that
``/versions/model`` and the like are other routes (405 for methods they lack)."""


def _json_integer(value: object) -> object:
    # JSON Schema's integer: a number without a fraction (1.0 is one), never a string or a
    # boolean, which pydantic's lax mode would take.
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON integer")
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
"""An integer in a JSON body, as JSON Schema's ``integer`` reads it."""
