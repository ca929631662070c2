"""The catalog: products, their immutable versions and their listing life cycle.

draft → submitted → published → deprecated. Owners publish ``public`` products themselves;
``restricted`` and ``confidential`` ones reach ``published`` only through operator approval.
``secret`` products never leave their tenant, so no one else could review them: their owner
publishes them for its own systems directly. A tier may be raised by the owner and lowered only
by the operator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, Text, cast, func, literal_column, select
from sqlalchemy.dialects.postgresql import ARRAY, array
from sqlalchemy.orm import Session

from marketplace.audit.service import record_action
from marketplace.catalog import zh
from marketplace.catalog.policy import can_see, visible_clause
from marketplace.constants import Domain, ProductKind, ProductState, Tier
from marketplace.context import Caller, Principal
from marketplace.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from marketplace.tables import Product, ProductVersion, Tenant

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
HANDLE_RE = re.compile(r"^([a-z0-9][a-z0-9-]{1,62})\.([a-z0-9][a-z0-9-]{1,62})$")
MAX_TAGS = 20


@dataclass(slots=True)
class ProductFields:
    """Editable fields of a product; ``None`` means "leave as it is" on update."""

    title: str | None = None
    description: str | None = None
    title_zh: str | None = None
    description_zh: str | None = None
    domain: str | None = None
    tags: list[str] | None = None
    tier: str | None = None
    license: str | None = None
    downloadable: bool | None = None


@dataclass(slots=True)
class ProductFilter:
    kind: str | None = None
    domain: str | None = None
    tier: str | None = None
    owner: str | None = None
    tag: str | None = None
    state: str | None = None
    # Datasets whose newest data version scores at least this (0-1) on its quality rules.
    min_quality: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _not_found(handle: str) -> NotFoundError:
    return NotFoundError(f"product {handle!r} not found")


def _check_choice(value: str, enum: type[Any], what: str) -> str:
    allowed = [m.value for m in enum]
    if value not in allowed:
        raise InvalidInputError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")
    return value


def _clean_tags(tags: list[str]) -> list[str]:
    out: list[str] = []
    for t in tags:
        t = t.strip().lower()
        if not t:
            continue
        if len(t) > 40 or not re.match(r"^[\w-]+$", t):
            raise InvalidInputError(f"invalid tag {t!r}: letters, digits, '_' and '-', ≤ 40")
        if t not in out:
            out.append(t)
    if len(out) > MAX_TAGS:
        raise InvalidInputError(f"at most {MAX_TAGS} tags")
    return out


def index_chinese(product: Product) -> None:
    """Write the product's Chinese search words (``catalog.zh``) from its text."""
    product.search_title_zh = zh.index_text(product.title, product.title_zh)
    product.search_tags_zh = zh.index_text(product.tags_text)
    product.search_description_zh = zh.index_text(product.description, product.description_zh)


def product_handle(product: Product) -> str:
    return f"{product.tenant.slug}.{product.name}"


def create_product(
    session: Session,
    caller: Principal,
    *,
    name: str,
    kind: str,
    title: str,
    description: str = "",
    title_zh: str | None = None,
    description_zh: str | None = None,
    domain: str,
    tags: list[str] | None = None,
    tier: str = Tier.PUBLIC.value,
    license: str = "",
    downloadable: bool = False,
) -> Product:
    if not NAME_RE.match(name):
        raise InvalidInputError(
            f"invalid product name {name!r}: 2-63 characters of a-z, 0-9 and '-'"
        )
    _check_choice(kind, ProductKind, "kind")
    _check_choice(domain, Domain, "domain")
    _check_choice(tier, Tier, "tier")
    exists = session.scalar(
        select(Product.id).where(Product.tenant_id == caller.tenant_id, Product.name == name)
    )
    if exists is not None:
        raise ConflictError(f"product {caller.tenant_slug}.{name} already exists")
    tag_list = _clean_tags(tags or [])
    product = Product(
        tenant_id=caller.tenant_id,
        name=name,
        kind=kind,
        title=title,
        description=description,
        title_zh=title_zh or None,
        description_zh=description_zh or None,
        domain=domain,
        tags=tag_list,
        tags_text=" ".join(tag_list),
        tier=tier,
        license=license,
        downloadable=downloadable,
        state=ProductState.DRAFT.value,
    )
    index_chinese(product)
    product.tenant = session.get_one(Tenant, caller.tenant_id)
    session.add(product)
    session.flush()
    record_action(
        session,
        caller,
        action="product.create",
        target=f"product:{product_handle(product)}",
        detail={"tier": tier, "kind": kind, "downloadable": downloadable},
    )
    return product


def by_handle(handle: str, *columns: Any) -> Select[Any] | None:
    """``SELECT columns`` (entities or columns of ``Product`` and ``Tenant``) of the product
    ``handle`` names, or None when the text is no handle. It says nothing about visibility."""
    m = HANDLE_RE.match(handle)
    if not m:
        return None
    slug, name = m.groups()
    return (
        select(*columns)
        .select_from(Product)
        .join(Tenant, Tenant.id == Product.tenant_id)
        .where(Tenant.slug == slug, Product.name == name)
    )


def get_product(session: Session, caller: Caller, handle: str) -> Product:
    """A product the caller may see, else NotFoundError (the same as a missing one)."""
    query = by_handle(handle, Product)
    product: Product | None = session.scalar(query) if query is not None else None
    if product is None or not can_see(caller, product):
        raise _not_found(handle)
    return product


def check_not_mirror(product: Product) -> None:
    """Refuse to change a district hub's mirror of a city listing (403): it is read-only here,
    and the next harvest would undo the change anyway."""
    if product.origin_url is not None:
        raise ForbiddenError(
            f"product {product_handle(product)} is a read-only mirror of {product.origin_handle}"
            f" at {product.origin_url}: change it there"
        )


def get_owned_product(session: Session, caller: Principal, handle: str) -> Product:
    """A product the caller owns. One it can see but not own answers 403; others 404; a
    hub's mirror of a city listing is read-only (403)."""
    product = get_product(session, caller, handle)
    check_not_mirror(product)
    if product.tenant_id != caller.tenant_id:
        raise ForbiddenError(f"only the owner may change product {handle!r}")
    return product


def equal_clauses(flt: ProductFilter, columns: Any) -> list[Any]:
    """``column == value`` for each of kind, domain, tier and state that ``flt`` sets, on
    ``columns`` (``Product``, or the ``.c`` of a table with the same column names)."""
    return [
        getattr(columns, name) == value
        for name in ("kind", "domain", "tier", "state")
        if (value := getattr(flt, name))
    ]


def filtered_query(caller: Caller, flt: ProductFilter, *, dialect: str = "sqlite") -> Any:
    stmt = select(Product).join(Tenant).where(visible_clause(caller), *equal_clauses(flt, Product))
    if flt.owner:
        stmt = stmt.where(Tenant.slug == flt.owner)
    if flt.min_quality is not None:
        stmt = stmt.where(Product.quality_score >= flt.min_quality)
    if flt.tag:
        t = flt.tag.strip().lower()
        if dialect == "postgresql":
            # product.tags_arr: a generated text[] with a GIN index (migration 0001).
            stmt = stmt.where(
                literal_column("product.tags_arr").op("@>")(cast(array([t]), ARRAY(Text)))
            )
        else:
            # Tags are stored space-joined in tags_text; match a whole tag.
            stmt = stmt.where((" " + Product.tags_text + " ").contains(f" {t} ", autoescape=True))
    return stmt


def update_product(
    session: Session, caller: Principal, handle: str, fields: ProductFields
) -> Product:
    product = get_owned_product(session, caller, handle) if not caller.is_operator else None
    if product is None:
        # The operator may edit any product it can see (to lower a tier, for instance).
        product = get_product(session, caller, handle)
        check_not_mirror(product)
    changes: dict[str, Any] = {}
    if product.tenant_id != caller.tenant_id:
        # Not the owner: the operator may only change the tier.
        others = {
            k
            for k in (
                "title",
                "description",
                "title_zh",
                "description_zh",
                "domain",
                "tags",
                "license",
                "downloadable",
            )
            if getattr(fields, k) is not None
        }
        if others:
            raise ForbiddenError(f"only the owner may change {', '.join(sorted(others))}")
    if fields.tier is not None and fields.tier != product.tier:
        new = Tier(_check_choice(fields.tier, Tier, "tier"))
        old = Tier(product.tier)
        if new.rank < old.rank and not caller.is_operator:
            raise ForbiddenError(f"only the operator may lower a tier ({old.value} → {new.value})")
        changes["tier"] = [old.value, new.value]
        product.tier = new.value
    if fields.domain is not None and fields.domain != product.domain:
        changes["domain"] = [product.domain, _check_choice(fields.domain, Domain, "domain")]
        product.domain = fields.domain
    if fields.tags is not None:
        tags = _clean_tags(fields.tags)
        if tags != product.tags:
            changes["tags"] = tags
            product.tags = tags
            product.tags_text = " ".join(tags)
    for attr in ("title", "description", "license"):
        value = getattr(fields, attr)
        if value is not None and value != getattr(product, attr):
            changes[attr] = True
            setattr(product, attr, value)
    for attr in ("title_zh", "description_zh"):
        value = getattr(fields, attr)
        # An empty string clears the Chinese text.
        if value is not None and (value or None) != getattr(product, attr):
            changes[attr] = True
            setattr(product, attr, value or None)
    if changes.keys() & {"title", "description", "title_zh", "description_zh", "tags"}:
        index_chinese(product)
    if fields.downloadable is not None and fields.downloadable != product.downloadable:
        changes["downloadable"] = [product.downloadable, fields.downloadable]
        product.downloadable = fields.downloadable
    if changes:
        session.flush()
        record_action(
            session,
            caller,
            action="product.update",
            target=f"product:{product_handle(product)}",
            detail={"changes": changes, "owner": product.tenant.slug},
        )
    return product


def _transition(
    session: Session,
    caller: Principal,
    product: Product,
    new_state: str,
    action: str,
    note: str | None = None,
) -> Product:
    old = product.state
    product.state = new_state
    if note is not None:
        product.review_note = note
    session.flush()
    record_action(
        session,
        caller,
        action=action,
        target=f"product:{product_handle(product)}",
        detail={"from": old, "to": new_state, "owner": product.tenant.slug, "note": note},
    )
    return product


def check_publishable(session: Session, product: Product) -> None:
    """A dataset whose newest data version fails a blocking quality rule cannot be published
    (nor submitted for review) until a version that passes replaces it."""
    if product.kind != ProductKind.DATASET.value:
        return
    newest = session.execute(
        select(ProductVersion.version, ProductVersion.blocked, ProductVersion.quality)
        .where(ProductVersion.product_id == product.id, ProductVersion.data_digest.is_not(None))
        .order_by(ProductVersion.version.desc())
        .limit(1)
    ).first()
    if newest is not None and newest.blocked:
        failed = [
            f"{r.get('rule')}({r.get('column') or ''})"
            for r in (newest.quality or {}).get("rules", [])
            if r.get("blocking") and not r.get("passed")
        ]
        raise ConflictError(
            f"version {newest.version} of {product_handle(product)} fails blocking quality "
            f"rules ({', '.join(failed)}): upload a version that passes them first"
        )


def submit_product(session: Session, caller: Principal, handle: str) -> Product:
    product = get_owned_product(session, caller, handle)
    if product.state != ProductState.DRAFT.value:
        raise ConflictError(f"product {handle} is {product.state}; only drafts can be submitted")
    check_publishable(session, product)
    return _transition(session, caller, product, ProductState.SUBMITTED.value, "product.submit")


def publish_product(session: Session, caller: Principal, handle: str) -> Product:
    """The owner publishes a public (or its own secret) product without review."""
    product = get_owned_product(session, caller, handle)
    if product.tier not in (Tier.PUBLIC.value, Tier.SECRET.value):
        raise ForbiddenError(
            f"a {product.tier} product is published by operator approval: submit it for review"
        )
    if product.state not in (ProductState.DRAFT.value, ProductState.SUBMITTED.value):
        raise ConflictError(f"product {handle} is {product.state}; it cannot be published")
    check_publishable(session, product)
    return _transition(session, caller, product, ProductState.PUBLISHED.value, "product.publish")


def review_product(
    session: Session, caller: Principal, handle: str, *, approve: bool, note: str
) -> Product:
    if not caller.is_operator:
        raise ForbiddenError("only the operator reviews listings")
    product = get_product(session, caller, handle)
    if product.state != ProductState.SUBMITTED.value:
        raise ConflictError(
            f"product {handle} is {product.state}; only submitted ones are reviewed"
        )
    if approve:
        check_publishable(session, product)
        return _transition(
            session, caller, product, ProductState.PUBLISHED.value, "product.approve", note
        )
    if not note.strip():
        raise InvalidInputError("a rejection needs a reason")
    return _transition(session, caller, product, ProductState.DRAFT.value, "product.reject", note)


def deprecate_product(session: Session, caller: Principal, handle: str) -> Product:
    product = get_owned_product(session, caller, handle)
    if product.state != ProductState.PUBLISHED.value:
        raise ConflictError(
            f"product {handle} is {product.state}; only published ones are deprecated"
        )
    return _transition(session, caller, product, ProductState.DEPRECATED.value, "product.deprecate")


def delete_product(session: Session, caller: Principal, handle: str) -> None:
    product = get_owned_product(session, caller, handle)
    if product.state == ProductState.PUBLISHED.value:
        raise ConflictError(f"product {handle} is published: deprecate it first")
    target = f"product:{product_handle(product)}"
    session.delete(product)
    session.flush()
    record_action(
        session,
        caller,
        action="product.delete",
        target=target,
    )


def create_version(
    session: Session,
    caller: Principal,
    handle: str,
    *,
    notes: str = "",
    meta: dict[str, Any] | None = None,
    artifact_digest: str | None = None,
    manifest: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> ProductVersion:
    """A new immutable version. ``data``: a dataset version's snapshot columns
    (``data_digest``, ``data_rows``, ``data_bytes``, ``data_schema``, ``quality``,
    ``blocked``; see ``marketplace.data``)."""
    product = get_owned_product(session, caller, handle)
    if product.state == ProductState.DEPRECATED.value:
        raise ConflictError(f"product {handle} is deprecated; it takes no new versions")
    # Lock the product row so two concurrent uploads cannot take the same number.
    session.execute(select(Product.id).where(Product.id == product.id).with_for_update())
    latest = session.scalar(
        select(func.max(ProductVersion.version)).where(ProductVersion.product_id == product.id)
    )
    version = ProductVersion(
        product_id=product.id,
        version=(latest or 0) + 1,
        notes=notes,
        meta=meta or {},
        artifact_digest=artifact_digest,
        manifest=manifest,
        created_by_key=caller.key_id,
        **(data or {}),
    )
    session.add(version)
    session.flush()
    record_action(
        session,
        caller,
        action="version.create",
        target=f"product:{product_handle(product)}:{version.version}",
        detail={"artifact": artifact_digest or (data or {}).get("data_digest")},
    )
    return version


def list_versions(session: Session, caller: Caller, handle: str) -> list[ProductVersion]:
    product = get_product(session, caller, handle)
    return list(
        session.scalars(
            select(ProductVersion)
            .where(ProductVersion.product_id == product.id)
            .order_by(ProductVersion.version)
        )
    )


def get_version(session: Session, caller: Caller, handle: str, version: int) -> ProductVersion:
    product = get_product(session, caller, handle)
    row = session.scalar(
        select(ProductVersion).where(
            ProductVersion.product_id == product.id, ProductVersion.version == version
        )
    )
    if row is None:
        raise NotFoundError(f"version {version} of product {handle!r} not found")
    return row


def secret_handles(session: Session, *, except_tenant: int) -> list[str]:
    """Handles of other tenants' secret products (for redacting them where they might show)."""
    rows = session.execute(
        select(Tenant.slug, Product.name)
        .join(Tenant)
        .where(Product.tier == Tier.SECRET.value, Product.tenant_id != except_tenant)
    )
    return [f"{slug}.{name}" for slug, name in rows]
