"""``cb.quotas``: quotas and rate limits on one's tenant, keys and products (``admin``): calls
beyond them answer 429 with ``Retry-After`` and are never billed."""

from __future__ import annotations

import builtins
from typing import Any

from citybrain_sdk._http import API_PREFIX, AsyncHTTP, Call, SyncHTTP, segment
from citybrain_sdk.types import Quota

__all__ = ["AsyncQuotas", "Quotas"]

_QUOTAS = f"{API_PREFIX}/quotas"


def _create_call(
    metric: str,
    window: str,
    amount: float,
    tenant: str | None,
    key_id: str | None,
    product: str | None,
) -> Call:
    body: dict[str, Any] = {"metric": metric, "window": window, "amount": amount}
    for name, value in (("tenant", tenant), ("key_id", key_id), ("product", product)):
        if value is not None:
            body[name] = value
    return Call("POST", _QUOTAS, json=body)


def _quotas(doc: Any) -> builtins.list[Quota]:
    return [Quota.from_json(q) for q in doc.get("data", ())]


class Quotas:
    """Quotas and rate limits (``cb.quotas``)."""

    def __init__(self, http: SyncHTTP) -> None:
        self._http = http

    def list(self) -> builtins.list[Quota]:
        """Limits on the caller, its keys and its products (the operator: all).

        Example:
            >>> [(q.metric, q.window, q.amount) for q in cb.quotas.list()]
        """
        return _quotas(self._http.json(Call("GET", _QUOTAS)))

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
        call = _create_call(metric, window, amount, tenant, key_id, product)
        return Quota.from_json(self._http.json(call))

    def delete(self, quota_id: str) -> None:
        """Remove a limit.

        Example:
            >>> cb.quotas.delete(quota.id)
        """
        self._http.send(Call("DELETE", f"{_QUOTAS}/{segment(quota_id)}"))


class AsyncQuotas:
    """Quotas, awaited: the methods of :class:`Quotas`."""

    def __init__(self, http: AsyncHTTP) -> None:
        self._http = http

    async def list(self) -> builtins.list[Quota]:
        """Limits; see :meth:`Quotas.list`.

        Example:
            >>> quotas = await cb.quotas.list()
        """
        return _quotas(await self._http.json(Call("GET", _QUOTAS)))

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
        call = _create_call(metric, window, amount, tenant, key_id, product)
        return Quota.from_json(await self._http.json(call))

    async def delete(self, quota_id: str) -> None:
        """Remove a limit; see :meth:`Quotas.delete`.

        Example:
            >>> await cb.quotas.delete(quota.id)
        """
        await self._http.send(Call("DELETE", f"{_QUOTAS}/{segment(quota_id)}"))
