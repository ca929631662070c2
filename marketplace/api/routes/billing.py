"""Price plans, subscriptions, usage summaries, invoices and chargeback statements."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from billing.invoices import Document
from billing.periods import Period
from billing.plan_store import PlanVersion, SubscriptionRecord
from marketplace.api.deps import PageDep, SessionDep, optional_scope, require
from marketplace.api.params import PeriodQuery, RowId, TenantQuery
from marketplace.api.schemas import ListPublic, UtcDateTime
from marketplace.billing import service as svc
from marketplace.context import Caller, Principal
from marketplace.tables import Product

router = APIRouter(tags=["billing"])
BillingReadDep = Annotated[Principal, Depends(require("billing:read"))]
CatalogWriteDep = Annotated[Principal, Depends(require("catalog:write"))]
AdminDep = Annotated[Principal, Depends(require("admin"))]
ReaderDep = Annotated[Caller, Depends(optional_scope("catalog:read"))]

_AMOUNT = re.compile(r"^[0-9]+(\.[0-9]+)?$")


def _amount(value: object) -> object:
    # What the schema below says, no more: pydantic's Decimal would also take "1e3", " 1" or
    # "-1" (a negative amount is refused by the plan's rules anyway, as 422).
    if isinstance(value, bool) or (isinstance(value, str) and not _AMOUNT.match(value)):
        raise ValueError('an amount is a non-negative decimal, e.g. "0.05"')
    if isinstance(value, int | float) and value < 0:
        raise ValueError("an amount is not negative")
    return value


Amount = Annotated[
    Decimal,
    BeforeValidator(_amount),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": _AMOUNT.pattern},
            ]
        }
    ),
    Field(description="A non-negative decimal amount; send it as a string"),
]


class PlanTierIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    up_to: Amount | None = Field(description="Cumulative units in this tier; null for the last")
    unit_price: Amount


class PlanCreate(BaseModel):
    """A price plan: free, per_unit, graduated (tiers) or subscription (fee + included units)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["free", "per_unit", "graduated", "subscription"]
    unit: str = Field(
        default="call",
        pattern=r"^[a-z0-9-]*[a-z0-9][a-z0-9-]*$",
        max_length=50,
        description="call, audio-second, row, mb (per 10^6 bytes)",
    )
    currency: Literal["CNY", "USD", "EUR", "HKD"] = "CNY"
    unit_price: Amount | None = None
    tiers: list[PlanTierIn] = Field(default_factory=list)
    monthly_fee: Amount | None = None
    included_units: Amount | None = None
    overage_price: Amount | None = None

    def spec(self) -> dict[str, Any]:
        data = self.model_dump(exclude_none=True)
        for key in ("unit_price", "monthly_fee", "included_units", "overage_price"):
            if key in data:
                data[key] = str(data[key])
        data["tiers"] = [
            {"up_to": None if t.up_to is None else str(t.up_to), "unit_price": str(t.unit_price)}
            for t in self.tiers
        ]
        return data


class PlanVersionPublic(BaseModel):
    product: str
    version: int
    effective_from: date
    plan: dict[str, Any]
    created_at: UtcDateTime | None


class PlanPublic(BaseModel):
    product: str
    current: PlanVersionPublic | None = Field(description="The version in force this period")
    versions: list[PlanVersionPublic]


class SubscriptionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    product: str = Field(description="The product handle, <tenant-slug>.<product-name>")
    tenant: str | None = Field(
        default=None, description="Owner only: the consumer tenant (slug) to subscribe"
    )


class SubscriptionPublic(BaseModel):
    id: int
    tenant: str
    product: str
    state: str
    started_at: UtcDateTime
    cancelled_at: UtcDateTime | None


class UsagePublic(BaseModel):
    tenant: str
    day: str
    product: str
    unit: str
    events: int
    quantity: str


class LinePublic(BaseModel):
    product: str
    domain: str
    description: str
    quantity: str
    unit: str
    unit_price: str
    amount: str
    usage_period: str
    late: bool


class DocumentPublic(BaseModel):
    id: int
    number: str
    kind: str
    tenant: str
    period: str
    status: str
    currency: str
    total: str
    issued_at: UtcDateTime | None
    paid_at: UtcDateTime | None


class DocumentDetail(DocumentPublic):
    lines: list[LinePublic]
    allocation_by_domain: dict[str, str] = Field(
        default_factory=dict, description="Statements: cost by product domain"
    )
    allocation_by_publisher: dict[str, str] = Field(
        default_factory=dict, description="Statements: cost by publishing tenant"
    )


def _version(handle: str, v: PlanVersion) -> PlanVersionPublic:
    return PlanVersionPublic(
        product=handle,
        version=v.version,
        effective_from=v.effective_from,
        plan=v.plan.to_dict(),
        created_at=v.created_at,
    )


def _plan(product: Product, versions: list[PlanVersion]) -> PlanPublic:
    handle = svc.product_info(product).handle
    today = Period.of(svc.now_utc()).first_day
    current = next((v for v in versions if v.effective_from <= today), None)
    return PlanPublic(
        product=handle,
        current=_version(handle, current) if current else None,
        versions=[_version(handle, v) for v in versions],
    )


def _period(text: str | None) -> Period | None:
    return Period.parse(text) if text else None


def _num(d: Decimal) -> str:
    return format(d.normalize(), "f") if d != d.to_integral() else str(int(d))


def _doc(session: SessionDep, d: Document, *, detail: bool) -> DocumentPublic:
    catalog = svc.load_catalog(session)
    base: dict[str, Any] = {
        "id": d.id,
        "number": d.number,
        "kind": d.kind,
        "tenant": catalog.tenant_slug(d.tenant_id),
        "period": d.period,
        "status": d.status,
        "currency": d.currency,
        "total": f"{d.total:.2f}",
        "issued_at": d.issued_at,
        "paid_at": d.paid_at,
    }
    if not detail:
        return DocumentPublic(**base)
    lines = [
        LinePublic(
            product=x.product,
            domain=x.domain,
            description=x.description,
            quantity=_num(x.quantity),
            unit=x.unit,
            unit_price=_num(x.unit_price),
            amount=f"{x.amount:.2f}",
            usage_period=x.usage_period,
            late=x.late,
        )
        for x in d.lines
    ]
    extra: dict[str, Any] = {}
    if d.kind == "statement":
        extra["allocation_by_domain"] = {k: f"{v:.2f}" for k, v in d.allocation("domain").items()}
        extra["allocation_by_publisher"] = {
            catalog.tenant_slug(int(k)): f"{v:.2f}" for k, v in d.allocation("publisher").items()
        }
    return DocumentDetail(**base, lines=lines, **extra)


def _sub(session: SessionDep, s: SubscriptionRecord) -> SubscriptionPublic:
    catalog = svc.load_catalog(session)
    product = catalog.products.get(s.product_id)
    return SubscriptionPublic(
        id=s.id,
        tenant=catalog.tenant_slug(s.tenant_id),
        product=product.handle if product else f"product-{s.product_id}",
        state=s.state,
        started_at=s.started_at,
        cancelled_at=s.cancelled_at,
    )


@router.get("/products/{handle}/plan", response_model=PlanPublic)
def read_plan(handle: str, caller: ReaderDep, session: SessionDep) -> PlanPublic:
    """A product's price plan: the version in force and every version."""
    product, versions = svc.plan_versions(session, caller, handle)
    return _plan(product, versions)


@router.put("/products/{handle}/plan", response_model=PlanPublic)
def set_plan(
    handle: str, body: PlanCreate, principal: CatalogWriteDep, session: SessionDep
) -> PlanPublic:
    """Owner: set the price plan (a first plan applies now, a change from the next period)."""
    product, _ = svc.set_plan(session, principal, handle, body.spec(), now=svc.now_utc())
    session.commit()
    _, versions = svc.plan_versions(session, principal, handle)
    return _plan(product, versions)


@router.post("/subscriptions", response_model=SubscriptionPublic, status_code=201)
def create_subscription(
    body: SubscriptionCreate, principal: AdminDep, session: SessionDep
) -> SubscriptionPublic:
    """Subscribe to a product (public: self-service; other tiers: by grant or by the owner)."""
    sub = svc.subscribe(
        session, principal, body.product, tenant_slug=body.tenant, now=svc.now_utc()
    )
    session.commit()
    return _sub(session, sub)


@router.get("/subscriptions", response_model=ListPublic[SubscriptionPublic])
def list_subscriptions(
    principal: BillingReadDep, session: SessionDep
) -> ListPublic[SubscriptionPublic]:
    """The caller's subscriptions and those to its products (the operator: all)."""
    subs = svc.list_subscriptions(session, principal)
    return ListPublic(data=[_sub(session, s) for s in subs], count=len(subs), per_page=len(subs))


@router.delete("/subscriptions/{subscription_id}", response_model=SubscriptionPublic)
def cancel_subscription(
    subscription_id: RowId, principal: AdminDep, session: SessionDep
) -> SubscriptionPublic:
    """Cancel a subscription now (its fee stays due for the current period)."""
    sub = svc.cancel_subscription(session, principal, subscription_id, now=svc.now_utc())
    session.commit()
    return _sub(session, sub)


@router.get("/billing/usage", response_model=ListPublic[UsagePublic])
def usage_summary(
    principal: BillingReadDep,
    session: SessionDep,
    period: PeriodQuery = None,
    tenant: TenantQuery = None,
) -> ListPublic[UsagePublic]:
    """Usage by day and product for a period (default: this month)."""
    rows = svc.usage_summary(
        session, principal, _period(period) or Period.of(svc.now_utc()), tenant_slug=tenant
    )
    data = [
        UsagePublic(
            tenant=r.tenant,
            day=r.day,
            product=r.product,
            unit=r.unit,
            events=r.events,
            quantity=_num(r.quantity),
        )
        for r in rows
    ]
    return ListPublic(data=data, count=len(data), per_page=len(data))


def _list(
    kind: Literal["invoice", "statement"],
    principal: Principal,
    session: SessionDep,
    page: PageDep,
    period: str | None,
    tenant: str | None,
) -> ListPublic[DocumentPublic]:
    docs, count = svc.list_documents(
        session,
        principal,
        kind=kind,
        period=_period(period),
        tenant_slug=tenant,
        limit=page.per_page,
        offset=page.offset,
    )
    return ListPublic(
        data=[_doc(session, d, detail=False) for d in docs],
        count=count,
        page=page.page,
        per_page=page.per_page,
    )


@router.get("/invoices", response_model=ListPublic[DocumentPublic])
def list_invoices(
    principal: BillingReadDep,
    session: SessionDep,
    page: PageDep,
    period: PeriodQuery = None,
    tenant: TenantQuery = None,
) -> ListPublic[DocumentPublic]:
    """The caller's invoices (the operator: everyone's), newest period first."""
    return _list("invoice", principal, session, page, period, tenant)


@router.get("/invoices/{invoice_id}", response_model=DocumentDetail)
def read_invoice(invoice_id: RowId, principal: BillingReadDep, session: SessionDep) -> Any:
    """One invoice with its lines."""
    return _doc(
        session, svc.get_document(session, principal, invoice_id, kind="invoice"), detail=True
    )


@router.get("/statements", response_model=ListPublic[DocumentPublic])
def list_statements(
    principal: BillingReadDep,
    session: SessionDep,
    page: PageDep,
    period: PeriodQuery = None,
    tenant: TenantQuery = None,
) -> ListPublic[DocumentPublic]:
    """The caller's chargeback statements (the operator: everyone's)."""
    return _list("statement", principal, session, page, period, tenant)


@router.get("/statements/{statement_id}", response_model=DocumentDetail)
def read_statement(statement_id: RowId, principal: BillingReadDep, session: SessionDep) -> Any:
    """One chargeback statement with its lines and its cost allocation."""
    doc = svc.get_document(session, principal, statement_id, kind="statement")
    return _doc(session, doc, detail=True)
