"""Access requests and grants for restricted and confidential products."""

from __future__ import annotations

from fastapi import APIRouter

from marketplace.access import service as access
from marketplace.api.deps import PrincipalDep, SessionDep
from marketplace.api.schemas import (
    AccessDecision,
    AccessRequestCreate,
    AccessRequestPublic,
    GrantPublic,
    ListPublic,
)
from marketplace.catalog.service import product_handle
from marketplace.tables import AccessRequest, Grant

router = APIRouter(tags=["access"])


def request_public(r: AccessRequest) -> AccessRequestPublic:
    return AccessRequestPublic(
        id=r.id,
        tenant=r.tenant.slug,
        product=product_handle(r.product),
        tier=r.product.tier,
        purpose=r.purpose,
        scopes=list(r.scopes),
        duration_days=r.duration_days,
        conditions=dict(r.conditions),
        state=r.state,
        decided_by=r.decided_by,
        decided_at=r.decided_at,
        reason=r.reason,
        grant_id=r.grant_id,
        created_at=r.created_at,
    )


def grant_public(g: Grant) -> GrantPublic:
    return GrantPublic(
        id=g.id,
        tenant=g.tenant.slug,
        product=product_handle(g.product),
        scopes=list(g.scopes),
        conditions=dict(g.conditions),
        status=access.grant_status(g),
        request_id=g.request_id,
        created_at=g.created_at,
        expires_at=g.expires_at,
        revoked_at=g.revoked_at,
    )


@router.post("/access-requests", response_model=AccessRequestPublic, status_code=201)
def create_access_request(
    body: AccessRequestCreate, session: SessionDep, caller: PrincipalDep
) -> AccessRequestPublic:
    """Ask to use a restricted or confidential product (purpose, scopes, duration)."""
    req = access.create_request(
        session,
        caller,
        handle=body.product,
        purpose=body.purpose,
        scopes=[str(s) for s in body.scopes],
        duration_days=body.duration_days,
        conditions=body.conditions,
    )
    session.commit()
    return request_public(req)


@router.get("/access-requests", response_model=ListPublic[AccessRequestPublic])
def list_access_requests(
    session: SessionDep, caller: PrincipalDep, state: str | None = None
) -> ListPublic[AccessRequestPublic]:
    """The caller's requests and those it decides."""
    rows = access.list_requests(session, caller, state=state)
    return ListPublic(data=[request_public(r) for r in rows], count=len(rows), per_page=len(rows))


@router.get("/access-requests/{request_id}", response_model=AccessRequestPublic)
def read_access_request(
    request_id: str, session: SessionDep, caller: PrincipalDep
) -> AccessRequestPublic:
    """One access request (its requester or its decider)."""
    return request_public(access.get_request(session, caller, request_id))


def _decide(
    request_id: str, body: AccessDecision, session: SessionDep, caller: PrincipalDep, approve: bool
) -> AccessRequestPublic:
    req = access.decide_request(
        session,
        caller,
        request_id,
        approve=approve,
        reason=body.reason,
        conditions=body.conditions,
    )
    session.commit()
    return request_public(req)


@router.post("/access-requests/{request_id}/approve", response_model=AccessRequestPublic)
def approve_access_request(
    request_id: str, body: AccessDecision, session: SessionDep, caller: PrincipalDep
) -> AccessRequestPublic:
    """Approve (owner for restricted, operator for confidential): creates a grant."""
    return _decide(request_id, body, session, caller, approve=True)


@router.post("/access-requests/{request_id}/reject", response_model=AccessRequestPublic)
def reject_access_request(
    request_id: str, body: AccessDecision, session: SessionDep, caller: PrincipalDep
) -> AccessRequestPublic:
    """Reject, with a reason."""
    return _decide(request_id, body, session, caller, approve=False)


@router.get("/grants", response_model=ListPublic[GrantPublic])
def list_grants(session: SessionDep, caller: PrincipalDep) -> ListPublic[GrantPublic]:
    """Grants the caller holds or has given; the operator sees all."""
    rows = access.list_grants(session, caller)
    return ListPublic(data=[grant_public(g) for g in rows], count=len(rows), per_page=len(rows))


@router.get("/grants/{grant_id}", response_model=GrantPublic)
def read_grant(grant_id: str, session: SessionDep, caller: PrincipalDep) -> GrantPublic:
    """One grant."""
    return grant_public(access.get_grant(session, caller, grant_id))


@router.delete("/grants/{grant_id}", response_model=GrantPublic)
def revoke_grant(grant_id: str, session: SessionDep, caller: PrincipalDep) -> GrantPublic:
    """Revoke a grant at once (owner, operator or grantee)."""
    grant = access.revoke_grant(session, caller, grant_id)
    session.commit()
    return grant_public(grant)
