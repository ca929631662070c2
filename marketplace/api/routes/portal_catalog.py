"""The portal's catalog: browse and search with facets, product pages with the model or dataset
card, "try it", and access requests.

What a visitor sees is what the API would answer them: listings and facet counts from
``catalog.search.search_products`` (the tier table as one SQL clause), single products from
``catalog.service.get_product`` (an invisible product is a 404 page, the same as a missing
one), price plans from the billing service, requests from ``access.service``. A model's "try
it" form goes through the gateway's pipeline with the visitor as its caller (tier policy,
quota, runtime, meter), and a dataset's through the platform's own query API, when the server
has one.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from marketplace.access import service as access
from marketplace.api.deps import UnboundSessionDep
from marketplace.api.errors import SERVICE_ERRORS
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
from marketplace.audit.service import record
from marketplace.billing import service as billing_svc
from marketplace.catalog import service as catalog
from marketplace.catalog.search import search_products
from marketplace.constants import (
    API_PREFIX,
    Domain,
    ProductKind,
    ProductState,
    Scope,
    Tier,
)
from marketplace.context import current_request_id
from marketplace.errors import InvalidInputError
from marketplace.gateway.pipeline import Gateway, InferCall
from marketplace.portal.markdown import render_markdown
from marketplace.portal.tryit import example_request, pretty_json
from marketplace.tables import Product, ProductVersion

router = APIRouter(route_class=PortalRoute, include_in_schema=False)

PER_PAGE = 12
FACETS = ("kind", "domain", "tier")
FACET_VALUES = {
    "kind": [k.value for k in ProductKind],
    "domain": [d.value for d in Domain],
    "tier": [t.value for t in Tier],
}
Filter = Annotated[str | None, Query(max_length=63)]


@router.get("/")
def catalog_page(
    visit: VisitDep,
    unbound: UnboundSessionDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
    kind: Filter = None,
    domain: Filter = None,
    tier: Filter = None,
    owner: Filter = None,
    tag: Filter = None,
    page_no: Annotated[int, Query(alias="page", ge=1, le=10_000)] = 1,
) -> Response:
    """Browse and search the catalog: what the visitor may see, with facet counts."""
    flt = catalog.ProductFilter(kind=kind, domain=domain, tier=tier, owner=owner, tag=tag)
    # search_products applies the tier table itself, outside the tenant role (as the API).
    result = search_products(
        unbound, visit.caller, q, flt, offset=(page_no - 1) * PER_PAGE, limit=PER_PAGE
    )
    chosen = {"kind": kind, "domain": domain, "tier": tier}
    facets = []
    for name in FACETS:
        counts = result.facets.get(name, {})
        values = [v for v in FACET_VALUES[name] if counts.get(v) or chosen[name] == v]
        values += sorted(v for v in counts if v not in FACET_VALUES[name])
        facets.append((name, [(v, counts.get(v, 0)) for v in values]))
    pages = max(1, -(-result.count // PER_PAGE))
    return page(
        visit,
        "catalog.html",
        q=q or "",
        chosen=chosen,
        owner=owner,
        tag=tag,
        facets=facets,
        result=result,
        page_no=page_no,
        pages=pages,
    )


# --------------------------------------------------------------------------- product page


@dataclass
class TryResult:
    ok: bool
    body: str
    request: str


def _price(visit: Visit, product: Product) -> str | None:
    """The plan in force this period, in words (None: no plan, i.e. not billed)."""
    _, versions = billing_svc.plan_versions(visit.db, visit.caller, product.handle)
    today = datetime.now(UTC).date()
    current = next((v for v in versions if v.effective_from <= today), None)
    if current is None:
        return None
    plan = current.plan.to_dict()
    t = visit.t
    unit = t.choice("per_unit", plan["unit"])
    if plan["kind"] == "free":
        return t("price.free")
    if plan["kind"] == "per_unit":
        return t("price.per_unit", price=plan["unit_price"], currency=plan["currency"], unit=unit)
    if plan["kind"] == "subscription":
        return t(
            "price.subscription",
            fee=plan["monthly_fee"],
            included=plan["included_units"],
            overage=plan["overage_price"],
            currency=plan["currency"],
            unit=unit,
            units=t.choice("unit", plan["unit"]),
        )
    first = plan["tiers"][0]["unit_price"] if plan.get("tiers") else "0"
    return t("price.graduated", price=first, currency=plan["currency"], unit=unit)


def _dataset_view(visit: Visit, product: Product, version: ProductVersion) -> Any:
    """What the visitor may see of a dataset version's data (schema with masked columns
    marked, rows, quality report) — from the data service's ``version_data`` when this server
    has data products, the same view the API's version reads give; None otherwise."""
    try:
        data_service = importlib.import_module("marketplace.data.service")
    except ImportError:
        return None
    version_data = getattr(data_service, "version_data", None)
    return version_data(visit.db, visit.caller, product, version) if version_data else None


def _has_query_api(visit: Visit) -> bool:
    path = f"{API_PREFIX}/products/{{handle}}/query"
    return any(getattr(r, "path", None) == path for r in visit.request.app.routes)


def _access_state(visit: Visit, product: Product) -> dict[str, Any]:
    """The visitor's requests and grants for this product, and whether they may ask."""
    caller = visit.caller
    needs_grant = product.tier in (Tier.RESTRICTED.value, Tier.CONFIDENTIAL.value)
    if caller is None or caller.tenant_id == product.tenant_id or not needs_grant:
        return {"needs_grant": needs_grant and caller is None, "requests": [], "grant": None}
    requests = [
        r
        for r in access.list_requests(visit.db, caller)
        if r.product_id == product.id and r.tenant_id == caller.tenant_id
    ]
    grant = next(
        (
            g
            for g in access.list_grants(visit.db, caller)
            if g.product_id == product.id
            and g.tenant_id == caller.tenant_id
            and access.grant_status(g) == "active"
        ),
        None,
    )
    pending = any(r.state == access.PENDING for r in requests)
    may_ask = (
        grant is None
        and not pending
        and product.state == ProductState.PUBLISHED.value
        and (product.tier == Tier.RESTRICTED.value or caller.is_government)
    )
    return {
        "needs_grant": True,
        "requests": requests,
        "grant": grant,
        "may_ask": may_ask,
        "decider": access.decider_for(product),
        "scopes": access.GRANTABLE_SCOPES,
    }


def _product_context(visit: Visit, handle: str) -> dict[str, Any]:
    caller = visit.caller
    product = catalog.get_product(visit.db, caller, handle)
    if caller is not None and product.tenant_id != caller.tenant_id and product.tier != "public":
        # Reading another tenant's non-public listing is an access decision, audited as the
        # API's product read audits it.
        record(
            visit.db,
            actor=caller.label,
            tenant_id=caller.tenant_id,
            action="access.allow",
            target=f"product:{handle}",
            outcome="allow",
            detail={"tier": product.tier, "owner": product.tenant.slug, "read": "listing"},
        )
        visit.db.commit()
    versions = catalog.list_versions(visit.db, caller, handle)
    latest = versions[-1] if versions else None
    manifest = (latest.manifest or {}) if latest is not None else {}
    meta = latest.meta if latest is not None else {}
    metrics = dict(manifest.get("metrics") or meta.get("metrics") or {})
    card = manifest.get("model_card") or (latest.notes if latest is not None else "")
    data = None
    if product.kind == ProductKind.DATASET.value and latest is not None:
        data = _dataset_view(visit, product, latest)
    is_model = product.kind == ProductKind.MODEL.value
    return {
        "product": product,
        "handle": handle,
        "versions": list(reversed(versions)),
        "latest": latest,
        "manifest": manifest,
        "metrics": metrics,
        "card": render_markdown(card) if card else None,
        "data": data,
        "quality": getattr(product, "quality_score", None),
        "price": _price(visit, product),
        "access": _access_state(visit, product),
        "try_model": is_model and bool(manifest.get("inputs")),
        "try_dataset": not is_model and _has_query_api(visit),
        "example": example_request(manifest) if is_model else "",
        "try_result": None,
    }


@router.get("/catalog/{handle}")
def product_page(visit: VisitDep, handle: str) -> Response:
    """A product's page: its card, versions, price, access and "try it"."""
    return page(visit, "product.html", **_product_context(visit, handle))


def _gateway(visit: Visit) -> Gateway:
    gateway: Gateway | None = getattr(visit.request.app.state, "gateway", None)
    if gateway is None:
        raise InvalidInputError(visit.t("try.unavailable"))
    return gateway


@router.post("/catalog/{handle}/try")
async def try_model(visit: VisitDep, form: FormDep, handle: str) -> Response:
    """Run the model once with the form's v2 JSON request, through the gateway (metered)."""
    principal = visit.require(Scope.INFER.value, back=f"/catalog/{handle}")
    context = await run_in_threadpool(_product_context, visit, handle)
    body = field_text(form, "request")
    try:
        reply = await _gateway(visit).infer(
            InferCall(
                name=handle,
                version=None,
                credential=None,
                body=body.encode(),
                header_length=None,
                idempotency_key=None,
                request_id=current_request_id(),
                principal=principal,
            )
        )
        result = TryResult(True, pretty_json(reply.body), body)
    except SERVICE_ERRORS as e:
        # The call's own error (a bad tensor, no grant, a quota): shown beside the form.
        result = TryResult(False, f"{getattr(e, 'status', 500)} {getattr(e, 'message', e)}", body)
    context.update(try_result=result, example=body)
    return page(visit, "product.html", **context)


@router.post("/catalog/{handle}/query")
async def try_dataset(visit: VisitDep, form: FormDep, handle: str) -> Response:
    """Query the dataset with a small plan, through the platform's own query API."""
    visit.require(Scope.DATA_READ.value, back=f"/catalog/{handle}")
    context = await run_in_threadpool(_product_context, visit, handle)
    columns = [c for c in field_text(form, "select").replace(",", " ").split() if c]
    try:
        limit = max(1, min(int(field_text(form, "limit", "10") or 10), 50))
    except ValueError:
        limit = 10
    plan: dict[str, Any] = {"limit": limit}
    if columns:
        plan["select"] = columns
    if not context["try_dataset"] or visit.web.credential is None:
        result = TryResult(False, visit.t("try.query_unavailable"), json.dumps(plan))
    else:
        # In process, through the app's own routes: the API's checks, masking and metering.
        transport = httpx.ASGITransport(app=visit.request.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://portal.local") as c:
            answer = await c.post(
                f"{API_PREFIX}/products/{handle}/query",
                json=plan,
                headers={"Authorization": f"Bearer {visit.web.credential}"},
            )
        result = TryResult(answer.status_code == 200, pretty_json(answer.content), json.dumps(plan))
    context.update(try_result=result)
    return page(visit, "product.html", **context)


@router.post("/catalog/{handle}/request-access")
def request_access(visit: VisitDep, form: FormDep, handle: str) -> Response:
    """Ask for a grant on a restricted or confidential product, with a purpose."""
    principal = visit.signed_in(back=f"/catalog/{handle}")
    try:
        days = int(field_text(form, "duration_days", "90"))
    except ValueError as e:
        raise InvalidInputError(visit.t("access.bad_duration")) from e
    req = access.create_request(
        visit.db,
        principal,
        handle=handle,
        purpose=field_text(form, "purpose"),
        scopes=field_list(form, "scopes"),
        duration_days=days,
    )
    visit.db.commit()
    visit.web.flash("ok", visit.t("access.requested", id=req.id))
    return redirect(visit, f"/catalog/{handle}")
