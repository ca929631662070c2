"""Who am I, and the city's directory of tenants."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from marketplace.api.convert import tenant_public
from marketplace.api.deps import PrincipalDep, SessionDep, require
from marketplace.api.schemas import ListPublic, MePublic, TenantCreate, TenantPublic
from marketplace.context import Principal
from marketplace.errors import ForbiddenError
from marketplace.tables import Tenant
from marketplace.tenants.service import create_tenant, list_tenants

router = APIRouter(tags=["tenants"])


@router.get("/me", response_model=MePublic)
def read_me(principal: PrincipalDep, session: SessionDep) -> MePublic:
    """The tenant and scopes of the presented API key."""
    tenant = session.get_one(Tenant, principal.tenant_id)
    return MePublic(
        tenant=tenant_public(tenant), key_id=principal.key_id, scopes=sorted(principal.scopes)
    )


@router.get("/tenants", response_model=ListPublic[TenantPublic])
def read_tenants(principal: PrincipalDep, session: SessionDep) -> ListPublic[TenantPublic]:
    """The city's directory of tenants (authenticated callers)."""
    rows = list_tenants(session)
    return ListPublic(data=[tenant_public(t) for t in rows], count=len(rows), per_page=len(rows))


@router.post("/tenants", response_model=TenantPublic, status_code=201)
def create_tenant_route(
    body: TenantCreate,
    session: SessionDep,
    principal: Annotated[Principal, Depends(require("admin"))],
) -> TenantPublic:
    """Onboard a tenant (operator with the admin scope)."""
    if not principal.is_operator:
        raise ForbiddenError("only the operator onboards tenants")
    tenant = create_tenant(
        session,
        slug=body.slug,
        name=body.name,
        kind=body.kind,
        domain=body.domain,
        actor=principal.label,
    )
    session.commit()
    return tenant_public(tenant)
