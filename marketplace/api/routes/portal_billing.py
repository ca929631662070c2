"""The portal's money and oversight pages: invoices and chargeback statements (with PDF), the
audit log, and the operator's billing run and period report.

Documents come from ``marketplace.billing.service`` with the API's rules (a tenant reads its
own, the operator everyone's; another tenant's document is a 404 page). The audit view is the
API's own ``GET /api/v1/audit`` route function, called with the visitor as its principal, so
secret products are redacted from the operator's view exactly as there. Closing a period is
``run_billing`` (idempotent; periods close in order, and only once they are over), and the
period report is ``billing.reports`` in PDF, HTML or CSV.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy import select

from billing.errors import BillingConflictError
from billing.invoices import RunConfig
from billing.periods import Period
from marketplace.api.deps import Page, UnboundSessionDep
from marketplace.api.routes.audit import read_audit
from marketplace.api.routes.portal_account import PeriodQuery, period_of
from marketplace.api.routes.portal_common import (
    FormDep,
    PortalRoute,
    Visit,
    VisitDep,
    field_text,
    finish,
    page,
    platform_session,
)
from marketplace.billing import service as billing_svc
from marketplace.constants import Scope
from marketplace.portal.documents import document_pdf
from marketplace.tables import Tenant

router = APIRouter(route_class=PortalRoute, include_in_schema=False)

Kind = Literal["invoice", "statement"]
REPORT_TYPES = {"pdf": "application/pdf", "html": "text/html; charset=utf-8", "csv": "text/csv"}
AUDIT_PER_PAGE = 25


def _tenant_names(visit: Visit) -> dict[int, tuple[str, str]]:
    return {t.id: (t.slug, t.name) for t in visit.db.scalars(select(Tenant))}


@router.get("/billing")
def billing_page(visit: VisitDep, period: PeriodQuery = None) -> Response:
    """Invoices and chargeback statements (the operator: everyone's)."""
    principal = visit.require(Scope.BILLING_READ.value)
    month = Period.parse(period) if period else None
    docs = {}
    for kind in ("invoice", "statement"):
        rows, _ = billing_svc.list_documents(
            visit.db, principal, kind=kind, period=month, tenant_slug=None, limit=100, offset=0
        )
        docs[kind] = rows
    return page(
        visit,
        "billing.html",
        invoices=docs["invoice"],
        statements=docs["statement"],
        tenants=_tenant_names(visit),
        period=str(month) if month else "",
    )


@router.get("/billing/{kind}/{document_id}")
def document_page(visit: VisitDep, kind: Kind, document_id: int) -> Response:
    """One invoice or statement with its lines (and a statement's cost allocation)."""
    principal = visit.require(Scope.BILLING_READ.value)
    doc = billing_svc.get_document(visit.db, principal, document_id, kind=kind)
    tenants = _tenant_names(visit)
    return page(visit, "document.html", doc=doc, tenants=tenants)


@router.get("/billing/{kind}/{document_id}/pdf")
def document_pdf_download(visit: VisitDep, kind: Kind, document_id: int) -> Response:
    """The invoice or statement as PDF, in the visitor's language."""
    principal = visit.require(Scope.BILLING_READ.value)
    doc = billing_svc.get_document(visit.db, principal, document_id, kind=kind)
    tenants = _tenant_names(visit)
    slug, name = tenants.get(doc.tenant_id, (str(doc.tenant_id), ""))
    body = document_pdf(
        doc,
        tenant=f"{name} ({slug})" if name else slug,
        publishers={i: s for i, (s, _) in tenants.items()},
        t=visit.t,
    )
    headers = {"Content-Disposition": f'attachment; filename="{doc.number}.pdf"'}
    return finish(visit, Response(body, media_type="application/pdf", headers=headers))


# ----------------------------------------------------------------------------- audit


@router.get("/audit")
def audit_page(
    visit: VisitDep,
    unbound: UnboundSessionDep,
    action: Annotated[str | None, Query(max_length=100)] = None,
    tenant: Annotated[str | None, Query(max_length=63)] = None,
    page_no: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
) -> Response:
    """The audit log: the tenant's own entries; the operator's, everyone's."""
    principal = visit.require(Scope.ADMIN.value)
    entries = read_audit(
        visit.db,
        unbound,
        Page(page_no, AUDIT_PER_PAGE),
        principal,
        action=action or None,
        tenant=tenant or None,
    )
    return page(
        visit,
        "audit.html",
        entries=entries.data,
        count=entries.count,
        page_no=page_no,
        pages=max(1, -(-entries.count // AUDIT_PER_PAGE)),
        action=action or "",
        tenant=tenant or "",
        tenants=[s for s, _ in _tenant_names(visit).values()] if principal.is_operator else [],
    )


# -------------------------------------------------------------------------- operator


def _closable(now_period: Period) -> Period:
    """The month a run closes by default: the last one that is over."""
    return now_period.prev()


@router.get("/operator")
def operator_page(visit: VisitDep, period: PeriodQuery = None) -> Response:
    """The operator's billing run and period reports."""
    visit.operator()
    month = period_of(period, _closable(Period.of(billing_svc.now_utc())))
    return page(visit, "operator.html", period=month, run=None, tenants={})


@router.post("/operator/billing-run")
def billing_run(visit: VisitDep, form: FormDep) -> Response:
    """Close a month: rate its usage, issue invoices and chargeback statements."""
    principal = visit.operator()
    month = period_of(field_text(form, "period"), _closable(Period.of(billing_svc.now_utc())))
    config = RunConfig(commission_rate=visit.state.settings.billing.commission_rate)
    # The run writes billing's tables, which every tenant role (the operator's too) may only
    # read under row-level security: it is the platform's own job, run as the CLI runs it,
    # outside the tenant role, once the caller is known to be the operator.
    try:
        with platform_session(visit) as session:
            result = billing_svc.run_billing(
                session, month, now=billing_svc.now_utc(), config=config, actor=principal.label
            )
            session.commit()
    except BillingConflictError as e:
        # Not over yet, or out of order: say why beside the form.
        visit.db.rollback()
        visit.web.flash("error", e.message)
        return page(visit, "operator.html", status=409, period=month, run=None, tenants={})
    visit.web.flash(
        "ok",
        visit.t.plural(
            "operator.closed" if result.created else "operator.already_closed",
            len(result.documents),
            period=str(month),
        ),
    )
    return page(visit, "operator.html", period=month, run=result, tenants=_tenant_names(visit))


@router.get("/operator/report/{period}.{fmt}")
def period_report(visit: VisitDep, period: str, fmt: str) -> Response:
    """The period report (totals, top consumers, revenue share, chargeback, trend)."""
    visit.operator()
    month = Period.parse(period)
    if fmt not in REPORT_TYPES:
        fmt = "pdf"
    body = billing_svc.report(visit.db, month, fmt)
    headers = {"Content-Disposition": f'attachment; filename="citybrain-{month}.{fmt}"'}
    return finish(visit, Response(body, media_type=REPORT_TYPES[fmt], headers=headers))
