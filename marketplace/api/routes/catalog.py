"""The catalog: products, versions, the listing life cycle and search."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from marketplace.api.convert import listing_public, product_public, version_public
from marketplace.api.deps import (
    Page,
    PageDep,
    SessionDep,
    authenticate_request,
    catalog_reader,
    optional_scope,
    require,
)
from marketplace.api.params import (
    DomainQuery,
    KindQuery,
    OwnerQuery,
    StateQuery,
    TagQuery,
    TierQuery,
    VersionNumber,
)
from marketplace.api.schemas import (
    ListPublic,
    ProductCreate,
    ProductPublic,
    ProductUpdate,
    ReviewDecision,
    SearchPublic,
    VersionCreate,
    VersionPublic,
)
from marketplace.audit.service import record
from marketplace.catalog import service as catalog
from marketplace.catalog.search import SearchResult, search_products
from marketplace.context import Caller, Principal
from marketplace.data.service import version_data
from marketplace.tables import Product, ProductVersion

router = APIRouter(tags=["catalog"])
ReaderDep = Annotated[Caller, Depends(optional_scope("catalog:read"))]
WriterDep = Annotated[Principal, Depends(require("catalog:write"))]
MinQuality = Annotated[
    float | None,
    Query(ge=0, le=1, description="Datasets whose newest version's quality score is at least"),
]


def _latest_versions(session: Session, products: list[Product]) -> dict[int, int]:
    if not products:
        return {}
    rows = session.execute(
        select(ProductVersion.product_id, func.max(ProductVersion.version))
        .where(ProductVersion.product_id.in_([p.id for p in products]))
        .group_by(ProductVersion.product_id)
    )
    return {pid: v for pid, v in rows}


def _public(session: Session, product: Product) -> ProductPublic:
    return product_public(product, _latest_versions(session, [product]).get(product.id))


def _search(
    request: Request, caller: Caller, q: str | None, flt: catalog.ProductFilter, page: Page
) -> SearchResult:
    """Listing and search: the query in one trip to the worker threads (``catalog_reader``;
    the routes are async, and authenticate on the event loop)."""
    with catalog_reader(request) as session:
        return search_products(session, caller, q, flt, offset=page.offset, limit=page.per_page)


@router.get("/products", response_model=ListPublic[ProductPublic])
async def list_products(
    request: Request,
    page: PageDep,
    kind: KindQuery = None,
    domain: DomainQuery = None,
    tier: TierQuery = None,
    owner: OwnerQuery = None,
    tag: TagQuery = None,
    state: StateQuery = None,
    min_quality: MinQuality = None,
) -> ListPublic[ProductPublic]:
    """Products the caller may see, newest first."""
    flt = catalog.ProductFilter(
        kind=kind,
        domain=domain,
        tier=tier,
        owner=owner,
        tag=tag,
        state=state,
        min_quality=min_quality,
    )
    # The same path as search without a query: counts come from the facet table.
    caller = await authenticate_request(request, scope="catalog:read")
    result = await run_in_threadpool(_search, request, caller, None, flt, page)
    return ListPublic(
        data=[listing_public(p) for p in result.products],
        count=result.count,
        page=page.page,
        per_page=page.per_page,
    )


@router.post("/products", response_model=ProductPublic, status_code=201)
def create_product(body: ProductCreate, session: SessionDep, caller: WriterDep) -> ProductPublic:
    """Register a product (a draft) for the caller's tenant."""
    product = catalog.create_product(session, caller, **body.model_dump())
    session.commit()
    return product_public(product)


@router.get("/catalog/search", response_model=SearchPublic)
async def search(
    request: Request,
    page: PageDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
    kind: KindQuery = None,
    domain: DomainQuery = None,
    tier: TierQuery = None,
    owner: OwnerQuery = None,
    tag: TagQuery = None,
    min_quality: MinQuality = None,
) -> SearchPublic:
    """Full-text search over title, description and tags, with facet counts."""
    flt = catalog.ProductFilter(
        kind=kind, domain=domain, tier=tier, owner=owner, tag=tag, min_quality=min_quality
    )
    caller = await authenticate_request(request, scope="catalog:read")
    result = await run_in_threadpool(_search, request, caller, q, flt, page)
    return SearchPublic(
        data=[listing_public(p) for p in result.products],
        count=result.count,
        page=page.page,
        per_page=page.per_page,
        facets=result.facets,
    )


@router.get("/products/{handle}", response_model=ProductPublic)
def read_product(handle: str, session: SessionDep, caller: ReaderDep) -> ProductPublic:
    """One product, by handle ``<tenant-slug>.<product-name>``."""
    product = catalog.get_product(session, caller, handle)
    if caller is not None and product.tenant_id != caller.tenant_id and product.tier != "public":
        # Reading another tenant's non-public listing is an access decision: audit the allow.
        record(
            session,
            actor=caller.label,
            tenant_id=caller.tenant_id,
            action="access.allow",
            target=f"product:{handle}",
            outcome="allow",
            detail={"tier": product.tier, "owner": product.tenant.slug, "read": "listing"},
        )
        session.commit()
    return _public(session, product)


@router.patch("/products/{handle}", response_model=ProductPublic)
def update_product(
    handle: str, body: ProductUpdate, session: SessionDep, caller: WriterDep
) -> ProductPublic:
    """Change a product's fields; a tier is raised by its owner, lowered only by the operator."""
    product = catalog.update_product(
        session, caller, handle, catalog.ProductFields(**body.model_dump())
    )
    session.commit()
    return _public(session, product)


@router.delete("/products/{handle}", status_code=204)
def delete_product(handle: str, session: SessionDep, caller: WriterDep) -> None:
    """Delete a product that is not published (deprecate a published one first)."""
    catalog.delete_product(session, caller, handle)
    session.commit()


@router.post("/products/{handle}/submit", response_model=ProductPublic)
def submit_product(handle: str, session: SessionDep, caller: WriterDep) -> ProductPublic:
    """Send a draft to the operator's review queue."""
    product = catalog.submit_product(session, caller, handle)
    session.commit()
    return _public(session, product)


@router.post("/products/{handle}/publish", response_model=ProductPublic)
def publish_product(handle: str, session: SessionDep, caller: WriterDep) -> ProductPublic:
    """Publish a public product without review (other tiers: submit for review)."""
    product = catalog.publish_product(session, caller, handle)
    session.commit()
    return _public(session, product)


@router.post("/products/{handle}/approve", response_model=ProductPublic)
def approve_product(
    handle: str, body: ReviewDecision, session: SessionDep, caller: WriterDep
) -> ProductPublic:
    """Operator: approve a submitted listing (it becomes published)."""
    product = catalog.review_product(session, caller, handle, approve=True, note=body.note)
    session.commit()
    return _public(session, product)


@router.post("/products/{handle}/reject", response_model=ProductPublic)
def reject_product(
    handle: str, body: ReviewDecision, session: SessionDep, caller: WriterDep
) -> ProductPublic:
    """Operator: send a submitted listing back to draft, with a reason."""
    product = catalog.review_product(session, caller, handle, approve=False, note=body.note)
    session.commit()
    return _public(session, product)


@router.post("/products/{handle}/deprecate", response_model=ProductPublic)
def deprecate_product(handle: str, session: SessionDep, caller: WriterDep) -> ProductPublic:
    """Mark a published product deprecated (still listed, no new versions)."""
    product = catalog.deprecate_product(session, caller, handle)
    session.commit()
    return _public(session, product)


def _version_public(
    session: Session, caller: Caller, product: Product, handle: str, v: ProductVersion
) -> VersionPublic:
    return version_public(handle, v, version_data(session, caller, product, v))


@router.get("/products/{handle}/versions", response_model=ListPublic[VersionPublic])
def list_versions(handle: str, session: SessionDep, caller: ReaderDep) -> ListPublic[VersionPublic]:
    """A product's versions, oldest first."""
    product = catalog.get_product(session, caller, handle)
    rows = catalog.list_versions(session, caller, handle)
    return ListPublic(
        data=[_version_public(session, caller, product, handle, v) for v in rows],
        count=len(rows),
        per_page=max(len(rows), 1),
    )


@router.post("/products/{handle}/versions", response_model=VersionPublic, status_code=201)
def create_version(
    handle: str, body: VersionCreate, session: SessionDep, caller: WriterDep
) -> VersionPublic:
    """Add an immutable version carrying metadata."""
    version = catalog.create_version(session, caller, handle, notes=body.notes, meta=body.metadata)
    session.commit()
    return version_public(handle, version)


@router.get("/products/{handle}/versions/{version:int}", response_model=VersionPublic)
def read_version(
    handle: str, version: VersionNumber, session: SessionDep, caller: ReaderDep
) -> VersionPublic:
    """One version of a product (a dataset's: its schema, rows, bytes, sha256 and quality)."""
    product = catalog.get_product(session, caller, handle)
    row = catalog.get_version(session, caller, handle, version)
    return _version_public(session, caller, product, handle, row)
