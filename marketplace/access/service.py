"""Access requests and grants: how a tenant comes to use a restricted or confidential product.

| tier         | who may request        | who decides   |
|--------------|------------------------|---------------|
| public       | nobody needs to        | —             |
| restricted   | any authenticated tenant | the owner    |
| confidential | government tenants     | the operator  |
| secret       | never                  | —             |

A request names a purpose, the scopes wanted (``infer``, ``data:read``) and a duration.
Approval creates a grant (tenant, product, scopes, expires_at, conditions such as columns left
unmasked); grants can be revoked by the owner, the operator or the grantee. Whether a grant is
in force is checked on every call (:func:`grant_conditions`), so an expired or revoked grant stops
working on the very next one. Every decision is audited.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, bindparam, or_, select
from sqlalchemy.orm import Session

from marketplace.audit.service import record_action
from marketplace.catalog.service import get_product, product_handle
from marketplace.constants import ProductState, Scope, Tier
from marketplace.context import Principal
from marketplace.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
)
from marketplace.tables import AccessRequest, Grant, Product, lifetime_status, utcnow

GRANTABLE_SCOPES = (Scope.INFER.value, Scope.DATA_READ.value)
MAX_DURATION_DAYS = 366
PENDING, APPROVED, REJECTED, CANCELLED = "pending", "approved", "rejected", "cancelled"


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def grant_status(grant: Grant, now: datetime | None = None) -> str:
    return lifetime_status(grant.revoked_at, grant.expires_at, now)


def decider_for(product: Product) -> str:
    """Who decides requests for this product: "owner" (restricted) or "operator"."""
    return "operator" if product.tier == Tier.CONFIDENTIAL.value else "owner"


def create_request(
    session: Session,
    caller: Principal,
    *,
    handle: str,
    purpose: str,
    scopes: list[str],
    duration_days: int,
    conditions: dict[str, Any] | None = None,
) -> AccessRequest:
    # Only what the caller can see can be requested: a secret product, or a confidential one
    # asked for by a developer, is "not found" here exactly as everywhere else.
    product = get_product(session, caller, handle)
    if product.tenant_id == caller.tenant_id:
        raise ConflictError(f"{handle} is your own product; owners need no grant")
    if product.tier == Tier.PUBLIC.value:
        raise ConflictError(f"{handle} is public; any key with the right scope may use it")
    if product.tier == Tier.SECRET.value:  # pragma: no cover - invisible above, kept as a wall
        raise NotFoundError(f"product {handle!r} not found")
    if product.tier == Tier.CONFIDENTIAL.value and not caller.is_government:
        raise ForbiddenError("only government tenants may request confidential products")
    if product.state != ProductState.PUBLISHED.value:
        raise ConflictError(f"product {handle} is {product.state}; only published ones are granted")
    if not purpose.strip():
        raise InvalidInputError("a request needs a purpose")
    wanted = sorted(set(scopes))
    bad = [s for s in wanted if s not in GRANTABLE_SCOPES]
    if bad or not wanted:
        raise InvalidInputError(
            f"grantable scopes are {', '.join(GRANTABLE_SCOPES)}; got {', '.join(scopes) or 'none'}"
        )
    if not 1 <= duration_days <= MAX_DURATION_DAYS:
        raise InvalidInputError(f"duration_days must be 1 to {MAX_DURATION_DAYS}")
    pending = session.scalar(
        select(AccessRequest.id).where(
            AccessRequest.tenant_id == caller.tenant_id,
            AccessRequest.product_id == product.id,
            AccessRequest.state == PENDING,
        )
    )
    if pending is not None:
        raise ConflictError(f"request {pending} for {handle} is already pending")
    req = AccessRequest(
        id=_new_id("ar"),
        tenant_id=caller.tenant_id,
        product_id=product.id,
        purpose=purpose.strip(),
        scopes=wanted,
        duration_days=duration_days,
        conditions=conditions or {},
        state=PENDING,
    )
    req.product = product
    session.add(req)
    session.flush()
    record_action(
        session,
        caller,
        action="access.request",
        target=f"product:{handle}",
        detail={"request": req.id, "scopes": wanted, "duration_days": duration_days},
    )
    return req


def _may_decide(caller: Principal, req: AccessRequest) -> bool:
    if decider_for(req.product) == "operator":
        return caller.is_operator
    return caller.tenant_id == req.product.tenant_id


def _may_read_request(caller: Principal, req: AccessRequest) -> bool:
    # The operator oversees every request; it decides only the confidential ones.
    # The owner sees requests for its products even where the operator decides.
    return caller.tenant_id in (req.tenant_id, req.product.tenant_id) or caller.is_operator


def get_request(session: Session, caller: Principal, request_id: str) -> AccessRequest:
    req = session.get(AccessRequest, request_id)
    if req is None or not _may_read_request(caller, req):
        raise NotFoundError(f"access request {request_id!r} not found")
    return req


def _held_or_on_own_products(
    caller: Principal, table: type[AccessRequest] | type[Grant]
) -> ColumnElement[bool]:
    """Rows of ``table`` that belong to the caller's tenant or are on one of its products."""
    return or_(
        table.tenant_id == caller.tenant_id,
        table.product_id.in_(select(Product.id).where(Product.tenant_id == caller.tenant_id)),
    )


def list_requests(
    session: Session, caller: Principal, *, state: str | None = None
) -> list[AccessRequest]:
    """The caller's own requests and those for its products; the operator sees all."""
    stmt = select(AccessRequest)
    if not caller.is_operator:
        stmt = stmt.where(_held_or_on_own_products(caller, AccessRequest))
    if state:
        stmt = stmt.where(AccessRequest.state == state)
    return list(session.scalars(stmt.order_by(AccessRequest.created_at.desc())))


def decide_request(
    session: Session,
    caller: Principal,
    request_id: str,
    *,
    approve: bool,
    reason: str,
    conditions: dict[str, Any] | None = None,
) -> AccessRequest:
    req = get_request(session, caller, request_id)
    handle = product_handle(req.product)
    if not _may_decide(caller, req):
        who = "the operator" if decider_for(req.product) == "operator" else "the product's owner"
        raise ForbiddenError(f"requests for {handle} are decided by {who}")
    if req.state != PENDING:
        raise ConflictError(f"request {request_id} is already {req.state}")
    if not reason.strip():
        raise InvalidInputError("a decision needs a reason")
    req.state = APPROVED if approve else REJECTED
    req.decided_at = utcnow()
    req.decided_by = caller.label
    req.decided_by_tenant_id = caller.tenant_id
    req.reason = reason.strip()
    grant: Grant | None = None
    if approve:
        grant = Grant(
            id=_new_id("gr"),
            tenant_id=req.tenant_id,
            product_id=req.product_id,
            scopes=list(req.scopes),
            conditions={**req.conditions, **(conditions or {})},
            request_id=req.id,
            expires_at=utcnow() + timedelta(days=req.duration_days),
        )
        session.add(grant)
        req.grant_id = grant.id
    session.flush()
    record_action(
        session,
        caller,
        action="access.approve" if approve else "access.reject",
        target=f"product:{handle}",
        outcome="allow" if approve else "deny",
        detail={
            "request": req.id,
            "requester_tenant": req.tenant_id,
            "grant": grant.id if grant else None,
            "reason": req.reason,
        },
    )
    return req


def _may_read_grant(caller: Principal, grant: Grant) -> bool:
    return caller.tenant_id in (grant.tenant_id, grant.product.tenant_id) or (
        caller.is_operator and grant.product.tier != Tier.SECRET.value
    )


def get_grant(session: Session, caller: Principal, grant_id: str) -> Grant:
    grant = session.get(Grant, grant_id)
    if grant is None or not _may_read_grant(caller, grant):
        raise NotFoundError(f"grant {grant_id!r} not found")
    return grant


def list_grants(session: Session, caller: Principal) -> list[Grant]:
    """Grants the caller holds, grants on its products; the operator sees all."""
    stmt = select(Grant)
    if not caller.is_operator:
        stmt = stmt.where(_held_or_on_own_products(caller, Grant))
    return list(session.scalars(stmt.order_by(Grant.created_at.desc())))


def revoke_grant(session: Session, caller: Principal, grant_id: str, *, reason: str = "") -> Grant:
    grant = get_grant(session, caller, grant_id)
    if grant.revoked_at is None:
        grant.revoked_at = utcnow()
        grant.revoked_by = caller.label
    session.flush()
    record_action(
        session,
        caller,
        action="grant.revoke",
        target=f"product:{product_handle(grant.product)}",
        detail={"grant": grant.id, "grantee_tenant": grant.tenant_id, "reason": reason},
    )
    return grant


def grant_conditions(
    conn: Session | Connection, tenant_id: int, product_id: int, scope: str
) -> dict[str, Any] | None:
    """The conditions of a grant with ``scope`` in force now for (tenant, product), ``{}``
    when it sets none, or None when no such grant is in force. Checked on every call, never
    cached; Core only (no ORM entities, no joined tenant and product): the read paths' hot
    path."""
    rows = conn.execute(
        _GRANT_SCOPES, {"tenant_id": tenant_id, "product_id": product_id, "now": utcnow()}
    )
    for scopes, conditions in rows:
        if scope in scopes:
            return dict(conditions or {})
    return None


def grant_in_force(conn: Session | Connection, tenant_id: int, product_id: int, scope: str) -> bool:
    """Whether a grant with ``scope`` is in force now (see :func:`grant_conditions`)."""
    return grant_conditions(conn, tenant_id, product_id, scope) is not None


# Not revoked and not expired: what ``grant_status`` calls "active".
_GRANT_SCOPES = select(Grant.scopes, Grant.conditions).where(
    Grant.tenant_id == bindparam("tenant_id"),
    Grant.product_id == bindparam("product_id"),
    Grant.revoked_at.is_(None),
    Grant.expires_at > bindparam("now"),
)
