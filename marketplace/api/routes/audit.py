"""The audit log: tenants read their own entries, the operator reads everyone's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from marketplace.api.deps import PageDep, SessionDep, UnboundSessionDep, require
from marketplace.api.schemas import AuditEntryPublic, ListPublic
from marketplace.audit.service import list_entries
from marketplace.catalog.service import secret_handles
from marketplace.context import Principal
from marketplace.tables import Tenant
from marketplace.tenants.service import get_tenant_by_slug

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=ListPublic[AuditEntryPublic])
def read_audit(
    session: SessionDep,
    unbound: UnboundSessionDep,
    page: PageDep,
    principal: Annotated[Principal, Depends(require("admin"))],
    action: str | None = None,
    tenant: Annotated[str | None, Query(description="operator only")] = None,
) -> ListPublic[AuditEntryPublic]:
    """Audit entries, newest first."""
    tenant_id: int | None = principal.tenant_id
    if principal.is_operator:
        tenant_id = get_tenant_by_slug(session, tenant).id if tenant else None
    elif tenant and tenant != principal.tenant_slug:
        # Another tenant's log reads as an empty one, never as "forbidden".
        return ListPublic(data=[], count=0, page=page.page, per_page=page.per_page)
    rows, total = list_entries(
        session, tenant_id=tenant_id, action=action, offset=page.offset, limit=page.per_page
    )
    slugs = {t.id: t.slug for t in session.scalars(select(Tenant))}
    # Secret products never leave their tenant, not even by name through the operator's view.
    hidden: list[str] = []
    if principal.is_operator:
        # Row-level security hides secret products from the operator's own session, which is
        # right for reads but would leave nothing to redact: look the names up unbound.
        hidden = secret_handles(unbound, except_tenant=principal.tenant_id)
    data = []
    for e in rows:
        target, detail = e.target, e.detail
        if hidden and e.tenant_id != principal.tenant_id and any(h in target for h in hidden):
            target, detail = "product:[secret]", {}
        data.append(
            AuditEntryPublic(
                seq=e.seq,
                at=e.at,
                request_id=e.request_id,
                actor=e.actor,
                tenant=slugs.get(e.tenant_id) if e.tenant_id is not None else None,
                action=e.action,
                target=target,
                outcome=e.outcome,
                detail=detail,
                hash=e.hash,
            )
        )
    return ListPublic(data=data, count=total, page=page.page, per_page=page.per_page)
