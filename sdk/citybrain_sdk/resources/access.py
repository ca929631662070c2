"""``cb.access``: ask for a restricted or confidential product, decide requests (owners for
restricted, the operator for confidential), and list or revoke the grants that result."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any

from citybrain_sdk._http import API_PREFIX, AsyncHTTP, Call, SyncHTTP, segment
from citybrain_sdk.types import AccessRequest, Grant, Product

__all__ = ["Access", "AsyncAccess"]

_SCOPE_FOR_KIND = {"model": "infer", "dataset": "data:read"}
_REQUESTS = f"{API_PREFIX}/access-requests"
_GRANTS = f"{API_PREFIX}/grants"


def _product_call(handle: str) -> Call:
    return Call("GET", f"{API_PREFIX}/products/{segment(handle)}")


def _default_scopes(product: Product) -> list[str]:
    return [_SCOPE_FOR_KIND.get(product.kind, "data:read")]


def _request_call(
    product: str,
    purpose: str,
    scopes: Sequence[str],
    duration_days: int,
    conditions: Mapping[str, Any] | None,
) -> Call:
    body = {
        "product": product,
        "purpose": purpose,
        "scopes": list(scopes),
        "duration_days": duration_days,
        "conditions": dict(conditions or {}),
    }
    return Call("POST", _REQUESTS, json=body)


def _decide_call(
    request_id: str, approve: bool, reason: str, conditions: Mapping[str, Any] | None
) -> Call:
    action = "approve" if approve else "reject"
    body = {"reason": reason, "conditions": dict(conditions or {})}
    return Call("POST", f"{_REQUESTS}/{segment(request_id)}/{action}", json=body)


def _requests(doc: Any) -> builtins.list[AccessRequest]:
    return [AccessRequest.from_json(r) for r in doc.get("data", ())]


def _grants(doc: Any) -> builtins.list[Grant]:
    return [Grant.from_json(g) for g in doc.get("data", ())]


class Access:
    """Access requests and grants (``cb.access``)."""

    def __init__(self, http: SyncHTTP) -> None:
        self._http = http

    def request(
        self,
        product: str,
        purpose: str,
        *,
        scopes: Sequence[str] | None = None,
        duration_days: int = 90,
        conditions: Mapping[str, Any] | None = None,
    ) -> AccessRequest:
        """Ask to use a restricted or confidential product.

        Args:
            product: The product's handle.
            purpose: Why: the decider reads it (and the audit log keeps it).
            scopes: ``["infer"]`` and/or ``["data:read"]`` (None: the one the product's kind
                needs).
            duration_days: How long the grant should last (1 to 366).
            conditions: Extra conditions, e.g. ``{"unmasked_columns": ["plate"]}``.

        Returns:
            The pending request.

        Raises:
            Forbidden: Only government tenants may ask for confidential products.
            NotFound: The product is invisible to the caller (secret, or missing).
            Conflict: A request is pending already.

        Example:
            >>> r = cb.access.request("city-management.manhole-covers",
            ...                       purpose="route planning for inspection crews")
            >>> r.state
            'pending'
        """
        if scopes is None:
            scopes = _default_scopes(Product.from_json(self._http.json(_product_call(product))))
        call = _request_call(product, purpose, scopes, duration_days, conditions)
        return AccessRequest.from_json(self._http.json(call))

    def list(self, *, state: str | None = None) -> builtins.list[AccessRequest]:
        """The caller's requests and those it decides.

        Args:
            state: ``pending``, ``approved`` or ``rejected`` (None: all).

        Example:
            >>> inbox = owner.access.list(state="pending")
        """
        return _requests(self._http.json(Call("GET", _REQUESTS, params={"state": state})))

    def get(self, request_id: str) -> AccessRequest:
        """One access request (its requester's or its decider's).

        Example:
            >>> cb.access.get(r.id).state
            'approved'
        """
        return AccessRequest.from_json(
            self._http.json(Call("GET", f"{_REQUESTS}/{segment(request_id)}"))
        )

    def approve(
        self, request_id: str, reason: str, *, conditions: Mapping[str, Any] | None = None
    ) -> AccessRequest:
        """Approve a request (owner for restricted, operator for confidential): a grant is made.

        Example:
            >>> owner.access.approve(r.id, "approved for the pilot").grant_id
            'gr_…'
        """
        return AccessRequest.from_json(
            self._http.json(_decide_call(request_id, True, reason, conditions))
        )

    def reject(self, request_id: str, reason: str) -> AccessRequest:
        """Reject a request, with the reason the requester will read.

        Example:
            >>> owner.access.reject(r.id, "purpose too broad").state
            'rejected'
        """
        return AccessRequest.from_json(
            self._http.json(_decide_call(request_id, False, reason, None))
        )

    def grants(self) -> builtins.list[Grant]:
        """Grants the caller holds or has given (the operator: all).

        Example:
            >>> [(g.product, g.status) for g in cb.access.grants()]
        """
        return _grants(self._http.json(Call("GET", _GRANTS)))

    def revoke(self, grant_id: str) -> Grant:
        """Revoke a grant at once (owner, operator or grantee).

        Example:
            >>> cb.access.revoke(grant.id).status
            'revoked'
        """
        return Grant.from_json(self._http.json(Call("DELETE", f"{_GRANTS}/{segment(grant_id)}")))


class AsyncAccess:
    """Access requests and grants, awaited: the methods of :class:`Access`."""

    def __init__(self, http: AsyncHTTP) -> None:
        self._http = http

    async def request(
        self,
        product: str,
        purpose: str,
        *,
        scopes: Sequence[str] | None = None,
        duration_days: int = 90,
        conditions: Mapping[str, Any] | None = None,
    ) -> AccessRequest:
        """Ask to use a product; see :meth:`Access.request`.

        Example:
            >>> r = await cb.access.request("city-management.manhole-covers", purpose="…")
        """
        if scopes is None:
            doc = await self._http.json(_product_call(product))
            scopes = _default_scopes(Product.from_json(doc))
        call = _request_call(product, purpose, scopes, duration_days, conditions)
        return AccessRequest.from_json(await self._http.json(call))

    async def list(self, *, state: str | None = None) -> builtins.list[AccessRequest]:
        """Requests made and to decide; see :meth:`Access.list`.

        Example:
            >>> inbox = await owner.access.list(state="pending")
        """
        return _requests(await self._http.json(Call("GET", _REQUESTS, params={"state": state})))

    async def get(self, request_id: str) -> AccessRequest:
        """One request; see :meth:`Access.get`.

        Example:
            >>> r = await cb.access.get(r.id)
        """
        doc = await self._http.json(Call("GET", f"{_REQUESTS}/{segment(request_id)}"))
        return AccessRequest.from_json(doc)

    async def approve(
        self, request_id: str, reason: str, *, conditions: Mapping[str, Any] | None = None
    ) -> AccessRequest:
        """Approve; see :meth:`Access.approve`.

        Example:
            >>> await owner.access.approve(r.id, "ok for the pilot")
        """
        doc = await self._http.json(_decide_call(request_id, True, reason, conditions))
        return AccessRequest.from_json(doc)

    async def reject(self, request_id: str, reason: str) -> AccessRequest:
        """Reject; see :meth:`Access.reject`.

        Example:
            >>> await owner.access.reject(r.id, "purpose too broad")
        """
        doc = await self._http.json(_decide_call(request_id, False, reason, None))
        return AccessRequest.from_json(doc)

    async def grants(self) -> builtins.list[Grant]:
        """Grants held or given; see :meth:`Access.grants`.

        Example:
            >>> grants = await cb.access.grants()
        """
        return _grants(await self._http.json(Call("GET", _GRANTS)))

    async def revoke(self, grant_id: str) -> Grant:
        """Revoke a grant; see :meth:`Access.revoke`.

        Example:
            >>> await cb.access.revoke(grant.id)
        """
        doc = await self._http.json(Call("DELETE", f"{_GRANTS}/{segment(grant_id)}"))
        return Grant.from_json(doc)
