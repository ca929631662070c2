"""The signed-in visitor's own pages: the access inbox (requests to decide, one's own requests,
grants), API keys (create with the secret shown once, rotate, revoke) and usage charts.

Each page calls the domain service the API calls, with the same scope the API's route
requires: ``admin`` for keys, ``billing:read`` for usage. Who may decide a request is
``access.service``'s rule (``decider_for``: the owner for restricted products, the operator for
confidential ones), and ``decide_request`` enforces it again on every decision.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from markupsafe import Markup

from billing.periods import Period
from marketplace.access import service as access
from marketplace.api.routes.portal_common import (
    FormDep,
    PortalRoute,
    Visit,
    VisitDep,
    field_list,
    field_text,
    page,
    redirect,
)
from marketplace.billing import service as billing_svc
from marketplace.constants import ALL_SCOPES, Scope
from marketplace.context import Principal
from marketplace.errors import InvalidInputError
from marketplace.keys import service as keys
from marketplace.portal.charts import daily_bars
from marketplace.tables import AccessRequest, Tenant
from marketplace.tenants.service import list_tenants

router = APIRouter(route_class=PortalRoute, include_in_schema=False)

KEY_LIFETIMES = ("", "30d", "90d", "365d")
DEFAULT_KEY_SCOPES = (
    Scope.CATALOG_READ.value,
    Scope.INFER.value,
    Scope.DATA_READ.value,
    Scope.BILLING_READ.value,
)
PeriodQuery = Annotated[str | None, Query(max_length=7)]


def _decides(principal: Principal, req: AccessRequest) -> bool:
    """Whether ``principal`` decides ``req`` (``access.decider_for``'s rule, for the buttons)."""
    if access.decider_for(req.product) == "operator":
        return principal.is_operator
    return principal.tenant_id == req.product.tenant_id


# ----------------------------------------------------------------------------- access


@router.get("/access")
def access_page(visit: VisitDep) -> Response:
    """The approval inbox, the visitor's own requests, and grants held or given."""
    principal = visit.signed_in()
    rows = access.list_requests(visit.db, principal)
    inbox = [r for r in rows if r.state == access.PENDING and _decides(principal, r)]
    mine = [r for r in rows if r.tenant_id == principal.tenant_id]
    others = [r for r in rows if r not in inbox and r not in mine]
    grants = access.list_grants(visit.db, principal)
    return page(
        visit,
        "access.html",
        inbox=inbox,
        mine=mine,
        others=others,
        grants=[(g, access.grant_status(g)) for g in grants],
    )


@router.post("/access/{request_id}/decide")
def decide(visit: VisitDep, form: FormDep, request_id: str) -> Response:
    """Approve or reject a request, with a reason."""
    principal = visit.signed_in(back="/access")
    decision = field_text(form, "decision")
    if decision not in ("approve", "reject"):
        raise InvalidInputError(visit.t("access.bad_decision"))
    req = access.decide_request(
        visit.db,
        principal,
        request_id,
        approve=decision == "approve",
        reason=field_text(form, "reason"),
    )
    visit.db.commit()
    visit.web.flash("ok", visit.t(f"access.{req.state}", id=req.id))
    return redirect(visit, "/access")


@router.post("/access/grants/{grant_id}/revoke")
def revoke_grant(visit: VisitDep, form: FormDep, grant_id: str) -> Response:
    """Revoke a grant (its holder, the product's owner or the operator)."""
    principal = visit.signed_in(back="/access")
    grant = access.revoke_grant(visit.db, principal, grant_id, reason=field_text(form, "reason"))
    visit.db.commit()
    visit.web.flash("ok", visit.t("access.revoked", id=grant.id))
    return redirect(visit, "/access")


# ------------------------------------------------------------------------------- keys


def _keys_page(visit: Visit, principal: Principal, issued: keys.IssuedKey | None) -> Response:
    if issued is not None:
        # The page holds a secret: never cached, never kept in the session.
        visit.headers["Cache-Control"] = "no-store"
    rows = keys.list_keys(visit.db, tenant_id=principal.tenant_id)
    return page(
        visit,
        "keys.html",
        keys=[(k, keys.key_status(k)) for k in rows],
        issued=issued,
        all_scopes=ALL_SCOPES,
        default_scopes=DEFAULT_KEY_SCOPES,
        lifetimes=KEY_LIFETIMES,
    )


@router.get("/keys")
def keys_page(visit: VisitDep) -> Response:
    """The tenant's API keys (by prefix), and a form to make one."""
    return _keys_page(visit, visit.require(Scope.ADMIN.value), None)


@router.post("/keys")
def create_key(visit: VisitDep, form: FormDep) -> Response:
    """Create a key; its secret is on this one page and nowhere else."""
    principal = visit.require(Scope.ADMIN.value, back="/keys")
    lifetime = field_text(form, "expires_in")
    issued = keys.create_key(
        visit.db,
        tenant=visit.db.get_one(Tenant, principal.tenant_id),
        scopes=field_list(form, "scopes"),
        name=field_text(form, "name")[:200],
        expires_in=keys.parse_duration(lifetime) if lifetime else None,
        actor=principal.label,
    )
    visit.db.commit()
    return _keys_page(visit, principal, issued)


@router.post("/keys/{key_id}/rotate")
def rotate_key(visit: VisitDep, form: FormDep, key_id: str) -> Response:
    """A new secret; the old one keeps working for the grace period."""
    principal = visit.require(Scope.ADMIN.value, back="/keys")
    key = keys.get_key(visit.db, key_id, tenant_id=principal.tenant_id)
    grace = timedelta(seconds=visit.state.settings.key_rotation_grace_s)
    issued = keys.rotate_key(visit.db, key, grace=grace, actor=principal.label)
    visit.db.commit()
    return _keys_page(visit, principal, issued)


@router.post("/keys/{key_id}/revoke")
def revoke_key(visit: VisitDep, form: FormDep, key_id: str) -> Response:
    """Revoke a key at once."""
    principal = visit.require(Scope.ADMIN.value, back="/keys")
    key = keys.get_key(visit.db, key_id, tenant_id=principal.tenant_id)
    keys.revoke_key(visit.db, key, actor=principal.label)
    visit.db.commit()
    visit.web.flash("ok", visit.t("keys.revoked", id=key_id))
    return redirect(visit, "/keys")


# ------------------------------------------------------------------------------ usage


def period_of(text: str | None, default: Period) -> Period:
    """The month a page shows (``YYYY-MM``; a malformed one is billing's 422)."""
    return Period.parse(text) if text else default


@router.get("/usage")
def usage_page(
    visit: VisitDep,
    period: PeriodQuery = None,
    tenant: Annotated[str | None, Query(max_length=63)] = None,
) -> Response:
    """Usage per day and product for a month, as a chart and a table."""
    principal = visit.require(Scope.BILLING_READ.value)
    month = period_of(period, Period.of(billing_svc.now_utc()))
    rows = billing_svc.usage_summary(visit.db, principal, month, tenant_slug=tenant or None)
    days = month.days()
    series: dict[str, dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    totals: dict[tuple[str, str, str], list[Decimal]] = {}
    for r in rows:
        day = date.fromisoformat(str(r.day))
        series[r.product][day] += Decimal(r.events)
        total = totals.setdefault((r.tenant, r.product, r.unit), [Decimal(0), Decimal(0)])
        total[0] += r.events
        total[1] += r.quantity
    t = visit.t
    chart = daily_bars(
        days,
        series,
        title=t("usage.chart_title", period=str(month)),
        description=t("usage.chart_desc", products=len(series), calls=sum(r.events for r in rows)),
    )
    return page(
        visit,
        "usage.html",
        period=month,
        prev=month.prev(),
        next=month.next() if month < Period.of(billing_svc.now_utc()) else None,
        chart=Markup(chart) if rows else None,  # built with every text escaped
        totals=sorted(totals.items()),
        tenant=tenant or "",
        tenants=[x.slug for x in list_tenants(visit.db)] if principal.is_operator else [],
    )
