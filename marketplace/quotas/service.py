"""Configured quotas and rate limits, and who may set them.

| who                | may limit                                                       |
|--------------------|-----------------------------------------------------------------|
| the operator       | anything: a tenant, a key, a product, a tenant on a product     |
| a product's owner  | its product: for everyone (a shared limit) or for one tenant    |
| any tenant (admin) | itself and its own keys (a budget of its own), on any product   |

Limits are read unbound by the gateway (``applicable_limits``) and enforced there, before the
runtime, with billing.quotas' stores.
"""

from __future__ import annotations

import secrets

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from billing.quotas import METRICS, WINDOWS, Limit
from marketplace.audit.service import record_action
from marketplace.catalog.service import get_product, product_handle
from marketplace.context import Principal
from marketplace.errors import ForbiddenError, InvalidInputError, NotFoundError
from marketplace.tables import ApiKey, Product, QuotaLimit, Tenant
from marketplace.tenants.service import get_tenant_by_slug


def create_limit(
    session: Session,
    caller: Principal,
    *,
    tenant: str | None,
    key_id: str | None,
    product: str | None,
    metric: str,
    window: str,
    amount: float,
) -> QuotaLimit:
    if metric not in METRICS or window not in WINDOWS:
        raise InvalidInputError(
            f"limits are {' or '.join(METRICS)} per {', '.join(WINDOWS)}; got {metric} per {window}"
        )
    if metric == "units" and window in ("second", "minute"):
        raise InvalidInputError("units are limited per day or month")
    if not amount > 0:
        raise InvalidInputError("a limit must be positive")
    if tenant is None and key_id is None and product is None:
        raise InvalidInputError("say what the limit covers: tenant, key_id and/or product")
    tenant_row = get_tenant_by_slug(session, tenant) if tenant else None
    key = session.get(ApiKey, key_id) if key_id else None
    if key_id and (key is None or (not caller.is_operator and key.tenant_id != caller.tenant_id)):
        raise NotFoundError(f"API key {key_id!r} not found")
    if key is not None and tenant_row is not None and key.tenant_id != tenant_row.id:
        raise InvalidInputError(f"key {key_id} does not belong to tenant {tenant}")
    product_row = get_product(session, caller, product) if product else None
    if not caller.is_operator:
        owns_product = product_row is not None and product_row.tenant_id == caller.tenant_id
        subject = tenant_row.id if tenant_row else (key.tenant_id if key else None)
        if not owns_product and subject != caller.tenant_id:
            raise ForbiddenError(
                "a tenant limits itself and its keys; a product's owner limits its product; "
                "anything else is the operator's"
            )
    row = QuotaLimit(
        id=f"ql_{secrets.token_hex(8)}",
        tenant_id=tenant_row.id if tenant_row else None,
        key_id=key.id if key else None,
        product_id=product_row.id if product_row else None,
        metric=metric,
        window=window,
        amount=float(amount),
        created_by=caller.label,
        created_by_tenant_id=caller.tenant_id,
    )
    session.add(row)
    session.flush()
    record_action(
        session,
        caller,
        action="quota.set",
        target=f"quota:{row.id}",
        detail={
            "tenant": tenant,
            "key": key_id,
            "product": product,
            "limit": f"{amount:g} {metric} per {window}",
        },
    )
    return row


def _readable(caller: Principal) -> object:
    own_products = select(Product.id).where(Product.tenant_id == caller.tenant_id)
    own_keys = select(ApiKey.id).where(ApiKey.tenant_id == caller.tenant_id)
    return or_(
        QuotaLimit.tenant_id == caller.tenant_id,
        QuotaLimit.created_by_tenant_id == caller.tenant_id,
        QuotaLimit.key_id.in_(own_keys),
        QuotaLimit.product_id.in_(own_products),
    )


def list_limits(session: Session, caller: Principal) -> list[QuotaLimit]:
    stmt = select(QuotaLimit).order_by(QuotaLimit.created_at)
    if not caller.is_operator:
        stmt = stmt.where(_readable(caller))  # type: ignore[arg-type]
    return list(session.scalars(stmt))


def get_limit(session: Session, caller: Principal, limit_id: str) -> QuotaLimit:
    stmt = select(QuotaLimit).where(QuotaLimit.id == limit_id)
    if not caller.is_operator:
        stmt = stmt.where(_readable(caller))  # type: ignore[arg-type]
    row = session.scalar(stmt)
    if row is None:
        raise NotFoundError(f"quota {limit_id!r} not found")
    return row


def delete_limit(session: Session, caller: Principal, limit_id: str) -> None:
    row = get_limit(session, caller, limit_id)
    owner = session.get(Product, row.product_id) if row.product_id else None
    may = (
        caller.is_operator
        or row.created_by_tenant_id == caller.tenant_id
        or (owner is not None and owner.tenant_id == caller.tenant_id)
    )
    if not may:
        raise ForbiddenError("only whoever set a limit (or the operator) removes it")
    session.delete(row)
    session.flush()
    record_action(
        session,
        caller,
        action="quota.delete",
        target=f"quota:{limit_id}",
    )


def describe(session: Session, row: QuotaLimit) -> str:
    parts = []
    if row.tenant_id is not None:
        tenant = session.get(Tenant, row.tenant_id)
        parts.append(f"tenant {tenant.slug if tenant else row.tenant_id}")
    if row.key_id is not None:
        parts.append(f"key {row.key_id}")
    if row.product_id is not None:
        product = session.get(Product, row.product_id)
        parts.append(product_handle(product) if product else f"product {row.product_id}")
    return ", ".join(parts)


def applicable_limits(
    session: Session, *, tenant_id: int, key_id: str | None, product_id: int
) -> list[Limit]:
    """Every configured limit that covers a call by this tenant's key on this product."""
    rows = session.scalars(
        select(QuotaLimit).where(
            or_(QuotaLimit.tenant_id.is_(None), QuotaLimit.tenant_id == tenant_id),
            or_(QuotaLimit.key_id.is_(None), QuotaLimit.key_id == key_id),
            or_(QuotaLimit.product_id.is_(None), QuotaLimit.product_id == product_id),
        )
    )
    return [
        Limit(
            bucket=row.id,
            metric=row.metric,  # type: ignore[arg-type]
            window=row.window,  # type: ignore[arg-type]
            amount=row.amount,
            label=describe(session, row),
        )
        for row in rows
    ]
