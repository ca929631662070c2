"""``cb.quotas``: quotas and rate limits on one's tenant, keys and products (``admin``): calls
beyond them answer 429 with ``Retry-After`` and are never billed."""

from __future__ import annotations

import builtins
from typing import Any

from citybrain_sdk._http import API_PREFIX, Call, segment
from citybrain_sdk.resources._base import (
    AsyncResource,
    Spec,
    SyncResource,
    json_spec,
    listing,
    no_answer,
)
from citybrain_sdk.types import Quota

__all__ = ["AsyncQuotas", "Quotas"]

_QUOTAS = f"{API_PREFIX}/quotas"


def _create(
    metric: str,
    window: str,
    amount: float,
    tenant: str | None,
    key_id: str | None,
    product: str | None,
) -> Spec[Quota]:
    body: dict[str, Any] = {"metric": metric, "window": window, "amount": amount}
    for name, value in (("tenant", tenant), ("key_id", key_id), ("product", product)):
        if value is not None:
            body[name] = value
    return json_spec(Call("POST", _QUOTAS, json=body), Quota.from_json)


_LIST = json_spec(Call("GET", _QUOTAS), listing(Quota.from_json))


def _delete(quota_id: str) -> Spec[None]:
    return no_answer(Call("DELETE", f"{_QUOTAS}/{segment(quota_id)}"))


class Quotas(SyncResource):
    """Quotas and rate limits (``cb.quotas``)."""

    def list(self) -> builtins.list[Quota]:
        """Limits on the caller, its keys and its products (the operator: all).

        Example:
            >>> [(q.metric, q.window, q.amount) for q in cb.quotas.list()]
        """
        return self._run(_LIST)

    def create(
        self,
        *,
        metric: str,
        window: str,
        amount: float,
        tenant: str | None = None,
        key_id: str | None = None,
        product: str | None = None,
    ) -> Quota:
        """Set a limit: ``requests`` per ``second``/``minute``/``day``/``month``, or metered
        ``units`` per ``day``/``month``, on a tenant, a key and/or a product.

        Example:
            >>> cb.quotas.create(metric="requests", window="minute", amount=600,
            ...                  key_id=issued.key.id)
        """
        return self._run(_create(metric, window, amount, tenant, key_id, product))

    def delete(self, quota_id: str) -> None:
        """Remove a limit.

        Example:
            >>> cb.quotas.delete(quota.id)
        """
        self._run(_delete(quota_id))


class AsyncQuotas(AsyncResource):
    """Quotas, awaited: the methods of :class:`Quotas`."""

    async def list(self) -> builtins.list[Quota]:
        """Limits; see :meth:`Quotas.list`.

        Example:
            >>> quotas = await cb.quotas.list()
        """
        return await self._run(_LIST)

    async def create(
        self,
        *,
        metric: str,
        window: str,
        amount: float,
        tenant: str | None = None,
        key_id: str | None = None,
        product: str | None = None,
    ) -> Quota:
        """Set a limit; see :meth:`Quotas.create`.

        Example:
            >>> await cb.quotas.create(metric="units", window="day", amount=1e6)
        """
        return await self._run(_create(metric, window, amount, tenant, key_id, product))

    async def delete(self, quota_id: str) -> None:
        """Remove a limit; see :meth:`Quotas.delete`.

        Example:
            >>> await cb.quotas.delete(quota.id)
        """
        await self._run(_delete(quota_id))
