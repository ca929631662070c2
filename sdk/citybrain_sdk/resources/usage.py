"""``cb.usage``: metered usage per product and day (``billing:read``), as the gateway recorded
it: one event per successful call, whatever the retries."""

from __future__ import annotations

import builtins
from datetime import date, datetime

from citybrain_sdk._http import API_PREFIX, Call
from citybrain_sdk.resources._base import AsyncResource, Spec, SyncResource, json_spec, listing
from citybrain_sdk.types import UsageRow

__all__ = ["AsyncUsage", "Usage"]


def _bound(value: date | datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


def _spec(
    start: date | datetime | str | None,
    end: date | datetime | str | None,
    product: str | None,
    group_by: str,
    tenant: str | None,
) -> Spec[builtins.list[UsageRow]]:
    if group_by not in ("day", "product"):
        raise ValueError("group_by must be 'day' or 'product'")
    params = {
        "from": _bound(start),
        "to": _bound(end),
        "product": product,
        "group_by": group_by,
        "tenant": tenant,
    }
    return json_spec(Call("GET", f"{API_PREFIX}/usage", params=params), listing(UsageRow.from_json))


class Usage(SyncResource):
    """Metered usage (``cb.usage``)."""

    def list(
        self,
        *,
        start: date | datetime | str | None = None,
        end: date | datetime | str | None = None,
        product: str | None = None,
        group_by: str = "day",
        tenant: str | None = None,
    ) -> builtins.list[UsageRow]:
        """Usage totals of the caller's tenant, per product and day (or per product).

        Args:
            start: The first day (or instant) counted.
            end: The last day counted (inclusive), or an exclusive instant.
            product: One product's handle.
            group_by: ``"day"`` or ``"product"``.
            tenant: Operator only: another tenant's slug.

        Returns:
            Rows of ``product, day, unit, quantity, events``.

        Example:
            >>> for row in cb.usage.list(product="traffic-police.flow-smoother"):
            ...     print(row.day, row.events, row.unit)
            2026-11-03 12 call
        """
        return self._run(_spec(start, end, product, group_by, tenant))


class AsyncUsage(AsyncResource):
    """Metered usage, awaited: the methods of :class:`Usage`."""

    async def list(
        self,
        *,
        start: date | datetime | str | None = None,
        end: date | datetime | str | None = None,
        product: str | None = None,
        group_by: str = "day",
        tenant: str | None = None,
    ) -> builtins.list[UsageRow]:
        """Usage totals; see :meth:`Usage.list`.

        Example:
            >>> rows = await cb.usage.list(group_by="product")
        """
        return await self._run(_spec(start, end, product, group_by, tenant))
