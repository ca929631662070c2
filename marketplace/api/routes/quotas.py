"""Quotas and rate limits per key, tenant and product (enforced by the gateway: 429)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from billing.quotas import Metric, Window
from marketplace.api.deps import SessionDep, require
from marketplace.api.schemas import ListPublic, UtcDateTime
from marketplace.catalog.service import product_handle
from marketplace.context import Principal
from marketplace.quotas import service as quotas
from marketplace.tables import Product, QuotaLimit, Tenant

router = APIRouter(prefix="/quotas", tags=["quotas"])
AdminDep = Annotated[Principal, Depends(require("admin"))]


class QuotaCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: str | None = Field(default=None, description="tenant slug the limit covers")
    key_id: str | None = Field(default=None, description="API key id the limit covers")
    product: str | None = Field(default=None, description="product handle the limit covers")
    metric: Metric
    window: Window = Field(description="second, minute (requests only); day, month (either)")
    amount: float = Field(gt=0, strict=True)


class QuotaPublic(BaseModel):
    id: str
    tenant: str | None
    key_id: str | None
    product: str | None
    metric: str
    window: str
    amount: float
    created_by: str
    created_at: UtcDateTime


def _public(session: SessionDep, row: QuotaLimit) -> QuotaPublic:
    tenant = session.get(Tenant, row.tenant_id) if row.tenant_id is not None else None
    product = session.get(Product, row.product_id) if row.product_id is not None else None
    return QuotaPublic(
        id=row.id,
        tenant=tenant.slug if tenant else None,
        key_id=row.key_id,
        product=product_handle(product) if product else None,
        metric=row.metric,
        window=row.window,
        amount=row.amount,
        created_by=row.created_by,
        created_at=row.created_at,
    )


@router.get("", response_model=ListPublic[QuotaPublic])
def list_quotas(session: SessionDep, caller: AdminDep) -> ListPublic[QuotaPublic]:
    """Limits on the caller, its keys and its products (the operator: all)."""
    rows = quotas.list_limits(session, caller)
    return ListPublic(data=[_public(session, r) for r in rows], count=len(rows), per_page=len(rows))


@router.post("", response_model=QuotaPublic, status_code=201)
def create_quota(body: QuotaCreate, session: SessionDep, caller: AdminDep) -> QuotaPublic:
    """Set a limit (applies to new calls within a few seconds)."""
    row = quotas.create_limit(session, caller, **body.model_dump())
    session.commit()
    return _public(session, row)


@router.get("/{quota_id}", response_model=QuotaPublic)
def read_quota(quota_id: str, session: SessionDep, caller: AdminDep) -> QuotaPublic:
    """One limit."""
    return _public(session, quotas.get_limit(session, caller, quota_id))


@router.delete("/{quota_id}", status_code=204)
def delete_quota(quota_id: str, session: SessionDep, caller: AdminDep) -> None:
    """Remove a limit."""
    quotas.delete_limit(session, caller, quota_id)
    session.commit()
