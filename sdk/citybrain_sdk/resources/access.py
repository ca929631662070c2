"""``cb.access``: ask for a restricted or confidential product, decide requests (owners for
restricted, the operator for confidential), and list or revoke the grants that result."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any

from citybrain_sdk._http import API_PREFIX, Call, segment
from citybrain_sdk.resources._base import (
    AsyncResource,
    Spec,
    SyncResource,
    json_spec,
    listing,
    product_path,
)
from citybrain_sdk.types import AccessRequest, Grant, Product

__all__ = ["Access", "AsyncAccess"]

_SCOPE_FOR_KIND = {"model": "infer", "dataset": "data:read"}
_REQUESTS = f"{API_PREFIX}/access-requests"
_GRANTS = f"{API_PREFIX}/grants"


def _scopes_for(product: str) -> Spec[builtins.list[str]]:
    """The scope a product's kind needs (``infer`` for a model, ``data:read`` for a dataset)."""

    def scopes(doc: Any) -> builtins.list[str]:
        return [_SCOPE_FOR_KIND.get(Product.from_json(doc).kind, "data:read")]

    return json_spec(Call("GET", product_path(product)), scopes)


def _request(
    product: str,
    purpose: str,
    scopes: Sequence[str],
    duration_days: int,
    conditions: Mapping[str, Any] | None,
) -> Spec[AccessRequest]:
    body = {
        "product": product,
        "purpose": purpose,
        "scopes": list(scopes),
        "duration_days": duration_days,
        "conditions": dict(conditions or {}),
    }
    return json_spec(Call("POST", _REQUESTS, json=body), AccessRequest.from_json)


def _list(state: str | None) -> Spec[builtins.list[AccessRequest]]:
    call = Call("GET", _REQUESTS, params={"state": state})
    return json_spec(call, listing(AccessRequest.from_json))


def _get(request_id: str) -> Spec[AccessRequest]:
    return json_spec(Call("GET", f"{_REQUESTS}/{segment(request_id)}"), AccessRequest.from_json)


def _decide(
    request_id: str, approve: bool, reason: str, conditions: Mapping[str, Any] | None
) -> Spec[AccessRequest]:
    action = "approve" if approve else "reject"
    body = {"reason": reason, "conditions": dict(conditions or {})}
    call = Call("POST", f"{_REQUESTS}/{segment(request_id)}/{action}", json=body)
    return json_spec(call, AccessRequest.from_json)


_GRANTS_LIST = json_spec(Call("GET", _GRANTS), listing(Grant.from_json))


def _revoke(grant_id: str) -> Spec[Grant]:
    return json_spec(Call("DELETE", f"{_GRANTS}/{segment(grant_id)}"), Grant.from_json)


class Access(SyncResource):
    """Access requests and grants (``cb.access``)."""

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
            scopes = self._run(_scopes_for(product))
        return self._run(_request(product, purpose, scopes, duration_days, conditions))

    def list(self, *, state: str | None = None) -> builtins.list[AccessRequest]:
        """The caller's requests and those it decides.

        Args:
            state: ``pending``, ``approved`` or ``rejected`` (None: all).

        Example:
            >>> inbox = owner.access.list(state="pending")
        """
        return self._run(_list(state))

    def get(self, request_id: str) -> AccessRequest:
        """One access request (its requester's or its decider's).

        Example:
            >>> cb.access.get(r.id).state
            'approved'
        """
        return self._run(_get(request_id))

    def approve(
        self, request_id: str, reason: str, *, conditions: Mapping[str, Any] | None = None
    ) -> AccessRequest:
        """Approve a request (owner for restricted, operator for confidential): a grant is made.

        Example:
            >>> owner.access.approve(r.id, "approved for the pilot").grant_id
            'gr_…'
        """
        return self._run(_decide(request_id, True, reason, conditions))

    def reject(self, request_id: str, reason: str) -> AccessRequest:
        """Reject a request, with the reason the requester will read.

        Example:
            >>> owner.access.reject(r.id, "purpose too broad").state
            'rejected'
        """
        return self._run(_decide(request_id, False, reason, None))

    def grants(self) -> builtins.list[Grant]:
        """Grants the caller holds or has given (the operator: all).

        Example:
            >>> [(g.product, g.status) for g in cb.access.grants()]
        """
        return self._run(_GRANTS_LIST)

    def revoke(self, grant_id: str) -> Grant:
        """Revoke a grant at once (owner, operator or grantee).

        Example:
            >>> cb.access.revoke(grant.id).status
            'revoked'
        """
        return self._run(_revoke(grant_id))


class AsyncAccess(AsyncResource):
    """Access requests and grants, awaited: the methods of :class:`Access`."""

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
            scopes = await self._run(_scopes_for(product))
        return await self._run(_request(product, purpose, scopes, duration_days, conditions))

    async def list(self, *, state: str | None = None) -> builtins.list[AccessRequest]:
        """Requests made and to decide; see :meth:`Access.list`.

        Example:
            >>> inbox = await owner.access.list(state="pending")
        """
        return await self._run(_list(state))

    async def get(self, request_id: str) -> AccessRequest:
        """One request; see :meth:`Access.get`.

        Example:
            >>> r = await cb.access.get(r.id)
        """
        return await self._run(_get(request_id))

    async def approve(
        self, request_id: str, reason: str, *, conditions: Mapping[str, Any] | None = None
    ) -> AccessRequest:
        """Approve; see :meth:`Access.approve`.

        Example:
            >>> await owner.access.approve(r.id, "ok for the pilot")
        """
        return await self._run(_decide(request_id, True, reason, conditions))

    async def reject(self, request_id: str, reason: str) -> AccessRequest:
        """Reject; see :meth:`Access.reject`.

        Example:
            >>> await owner.access.reject(r.id, "purpose too broad")
        """
        return await self._run(_decide(request_id, False, reason, None))

    async def grants(self) -> builtins.list[Grant]:
        """Grants held or given; see :meth:`Access.grants`.

        Example:
            >>> grants = await cb.access.grants()
        """
        return await self._run(_GRANTS_LIST)

    async def revoke(self, grant_id: str) -> Grant:
        """Revoke a grant; see :meth:`Access.revoke`.

        Example:
            >>> await cb.access.revoke(grant.id)
        """
        return await self._run(_revoke(grant_id))
