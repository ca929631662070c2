"""The caller's own API keys (``admin`` scope). Keys are listed by prefix only."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends

from marketplace.api.convert import key_public
from marketplace.api.deps import SessionDep, SettingsDep, require
from marketplace.api.schemas import KeyCreate, KeyIssued, KeyPublic, ListPublic
from marketplace.context import Principal
from marketplace.keys import service as keys
from marketplace.tables import Tenant

router = APIRouter(prefix="/keys", tags=["keys"])
AdminDep = Annotated[Principal, Depends(require("admin"))]


def _issued(issued: keys.IssuedKey) -> KeyIssued:
    return KeyIssued(**key_public(issued.key).model_dump(), token=issued.token)


@router.get("", response_model=ListPublic[KeyPublic])
def list_keys(principal: AdminDep, session: SessionDep) -> ListPublic[KeyPublic]:
    """The tenant's API keys, by prefix."""
    rows = keys.list_keys(session, tenant_id=principal.tenant_id)
    return ListPublic(data=[key_public(k) for k in rows], count=len(rows), per_page=len(rows))


@router.post("", response_model=KeyIssued, status_code=201)
def create_key(body: KeyCreate, principal: AdminDep, session: SessionDep) -> KeyIssued:
    """Create a key for the caller's tenant; the token in the answer is shown only once."""
    expires = keys.parse_duration(body.expires_in) if body.expires_in else None
    issued = keys.create_key(
        session,
        tenant=session.get_one(Tenant, principal.tenant_id),
        scopes=[str(s) for s in body.scopes],
        name=body.name,
        expires_in=expires,
        actor=principal.label,
    )
    session.commit()
    return _issued(issued)


@router.get("/{key_id}", response_model=KeyPublic)
def read_key(key_id: str, principal: AdminDep, session: SessionDep) -> KeyPublic:
    """One of the tenant's keys."""
    return key_public(keys.get_key(session, key_id, tenant_id=principal.tenant_id))


@router.post("/{key_id}/rotate", response_model=KeyIssued)
def rotate_key(
    key_id: str, principal: AdminDep, session: SessionDep, settings: SettingsDep
) -> KeyIssued:
    """New secret; the old one keeps working for the configured grace period (24 h default)."""
    key = keys.get_key(session, key_id, tenant_id=principal.tenant_id)
    issued = keys.rotate_key(
        session, key, grace=timedelta(seconds=settings.key_rotation_grace_s), actor=principal.label
    )
    session.commit()
    return _issued(issued)


@router.delete("/{key_id}", response_model=KeyPublic)
def revoke_key(key_id: str, principal: AdminDep, session: SessionDep) -> KeyPublic:
    """Revoke a key at once."""
    key = keys.revoke_key(
        session, keys.get_key(session, key_id, tenant_id=principal.tenant_id), actor=principal.label
    )
    session.commit()
    return key_public(key)
