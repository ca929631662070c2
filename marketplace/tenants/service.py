"""Tenants: the city's agencies, district hubs, developer companies and the operator."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.audit.service import record
from marketplace.constants import Domain, TenantKind
from marketplace.errors import ConflictError, InvalidInputError, NotFoundError
from marketplace.tables import Tenant

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


def create_tenant(
    session: Session, *, slug: str, name: str, kind: str, domain: str | None, actor: str
) -> Tenant:
    if not SLUG_RE.match(slug):
        raise InvalidInputError(
            f"invalid tenant slug {slug!r}: 2-63 characters of a-z, 0-9 and '-'"
        )
    if kind not in {k.value for k in TenantKind}:
        raise InvalidInputError(f"unknown tenant kind {kind!r}")
    if domain is not None and domain not in {d.value for d in Domain}:
        raise InvalidInputError(f"unknown domain {domain!r}")
    if session.scalar(select(Tenant.id).where(Tenant.slug == slug)) is not None:
        raise ConflictError(f"tenant {slug!r} already exists")
    tenant = Tenant(slug=slug, name=name, kind=kind, domain=domain)
    session.add(tenant)
    session.flush()
    record(
        session,
        actor=actor,
        tenant_id=tenant.id,
        action="tenant.create",
        target=f"tenant:{slug}",
        detail={"kind": kind, "domain": domain},
    )
    return tenant


def get_tenant_by_slug(session: Session, slug: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.slug == slug))
    if tenant is None:
        raise NotFoundError(f"tenant {slug!r} not found")
    return tenant


def list_tenants(session: Session) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.slug)))
