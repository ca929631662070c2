"""The platform's answers as typed, immutable values.

Each class reads the JSON the REST API returns (``from_json``) and keeps only what it names;
fields a newer server adds are ignored, fields an older one lacks take their defaults. Times
are :class:`~datetime.datetime` values as the server sent them (UTC; without a zone from a
platform on SQLite); money is :class:`~decimal.Decimal`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Generic, Self, TypeVar

__all__ = [
    "AccessRequest",
    "ApiKey",
    "Document",
    "DocumentDetail",
    "DocumentLine",
    "Grant",
    "IssuedKey",
    "Me",
    "Page",
    "Product",
    "Progress",
    "Quota",
    "SearchResult",
    "Tenant",
    "UsageRow",
    "Version",
]

T = TypeVar("T")

Progress = Callable[[int, int | None], None]
"""A transfer's progress callback: ``(bytes_done, bytes_total_or_None)``, called per chunk."""


def _dt(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _req_dt(value: Any) -> datetime:
    parsed = _dt(value)
    if parsed is None:
        raise ValueError("the server sent no timestamp where one is required")
    return parsed


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


def _strs(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value or ())


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: iterate it, or read ``data`` and ``count``.

    Attributes:
        data: The items on this page.
        count: How many items match in all (every page together).
        page: This page's number, from 1.
        per_page: The page size asked for.

    Example:
        >>> page = cb.invoices.list()
        >>> page.count, [inv.number for inv in page]
    """

    data: list[T]
    count: int
    page: int = 1
    per_page: int = 20

    def __iter__(self) -> Iterator[T]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @classmethod
    def parse(cls, doc: Mapping[str, Any], item: Callable[[Mapping[str, Any]], T]) -> Page[T]:
        """A page of ``item(row)`` for each row of ``doc["data"]``.

        Example:
            >>> Page.parse(cb.request("GET", "/api/v1/invoices"), Document.from_json).count
            0
        """
        data = [item(row) for row in doc.get("data", ())]
        return Page(
            data=data,
            count=int(doc.get("count", len(data))),
            page=int(doc.get("page", 1)),
            per_page=int(doc.get("per_page", len(data))),
        )


@dataclass(frozen=True, slots=True)
class Product:
    """A catalog listing: a dataset or a model.

    Attributes:
        handle: ``<tenant-slug>.<product-name>``, the name every call uses.
        kind: ``"dataset"`` or ``"model"``.
        tier: ``public``, ``restricted``, ``confidential`` or ``secret``.
        state: ``draft``, ``submitted``, ``published`` or ``deprecated``.
        latest_version: The newest version's number, or None before the first.
    """

    handle: str
    name: str
    owner: str
    kind: str
    title: str
    description: str
    domain: str
    tags: tuple[str, ...]
    tier: str
    license: str
    state: str
    review_note: str | None
    latest_version: int | None
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        """Read a product as the API returns it.

        Example:
            >>> Product.from_json(cb.request("GET", "/api/v1/products/environment.air-quality"))
        """
        return cls(
            handle=str(d["handle"]),
            name=str(d.get("name", "")),
            owner=str(d.get("owner", "")),
            kind=str(d.get("kind", "")),
            title=str(d.get("title", "")),
            description=str(d.get("description", "")),
            domain=str(d.get("domain", "")),
            tags=_strs(d.get("tags")),
            tier=str(d.get("tier", "")),
            license=str(d.get("license", "")),
            state=str(d.get("state", "")),
            review_note=d.get("review_note"),
            latest_version=d.get("latest_version"),
            created_at=_dt(d.get("created_at")),
            updated_at=_dt(d.get("updated_at")),
        )


@dataclass(frozen=True)
class SearchResult(Page[Product]):
    """A page of search hits with facet counts over everything the caller may see.

    Attributes:
        facets: ``{"kind": {"dataset": 7, …}, "domain": {…}, "tier": {…}}``.

    Example:
        >>> hits = cb.catalog.search("air", domain="environment")
        >>> hits.count, hits.facets["tier"], hits.data[0].handle
    """

    facets: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SearchResult:
        """Read a search answer.

        Example:
            >>> SearchResult.from_json(
            ...     cb.request("GET", "/api/v1/catalog/search", params={"q": "air"})
            ... )
        """
        page = Page.parse(d, Product.from_json)
        facets = {
            str(k): {str(v): int(n) for v, n in counts.items()}
            for k, counts in (d.get("facets") or {}).items()
        }
        return cls(
            data=page.data, count=page.count, page=page.page, per_page=page.per_page, facets=facets
        )


@dataclass(frozen=True, slots=True)
class Version:
    """An immutable version of a product.

    Attributes:
        version: The version number, from 1.
        artifact_digest: A model version's ``sha256:<hex>``, else None.
        manifest: A model version's manifest (signature, format, runtime), else None.
        schema: A dataset version's columns (``{"columns": [{"name", "type", …}]}``), else None.
        rows: A dataset version's row count, else None.
        size_bytes: A dataset snapshot's size, else None.
        sha256: A dataset snapshot's digest, else None.
        quality: A dataset version's quality report, else None.
    """

    product: str
    version: int
    notes: str
    metadata: dict[str, Any]
    artifact_digest: str | None
    manifest: dict[str, Any] | None
    created_at: datetime | None
    schema: dict[str, Any] | None = None
    rows: int | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    quality: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        """Read a version as the API returns it.

        Example:
            >>> Version.from_json(cb.request("GET", "/api/v1/products/x.y/versions/1"))
        """
        return cls(
            product=str(d.get("product", "")),
            version=int(d["version"]),
            notes=str(d.get("notes", "")),
            metadata=dict(d.get("metadata") or {}),
            artifact_digest=d.get("artifact_digest"),
            manifest=d.get("manifest"),
            created_at=_dt(d.get("created_at")),
            schema=d.get("schema"),
            rows=d.get("rows"),
            size_bytes=d.get("bytes"),
            sha256=d.get("sha256"),
            quality=d.get("quality"),
        )


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant of the city: an agency, a district hub, a developer company or the operator."""

    slug: str
    name: str
    kind: str
    domain: str | None
    government: bool

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        """Read a tenant.

        Example:
            >>> Tenant.from_json(cb.request("GET", "/api/v1/tenants")["data"][0])
        """
        return cls(
            slug=str(d["slug"]),
            name=str(d.get("name", "")),
            kind=str(d.get("kind", "")),
            domain=d.get("domain"),
            government=bool(d.get("government", False)),
        )


@dataclass(frozen=True, slots=True)
class Me:
    """Who the client's credentials belong to, and what they may do."""

    tenant: Tenant
    key_id: str | None
    scopes: tuple[str, ...]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        """Read ``GET /api/v1/me``.

        Example:
            >>> Me.from_json(cb.request("GET", "/api/v1/me")).tenant.slug
        """
        return cls(
            tenant=Tenant.from_json(d["tenant"]),
            key_id=d.get("key_id"),
            scopes=_strs(d.get("scopes")),
        )


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as listed: its prefix, never its secret."""

    id: str
    prefix: str
    tenant: str
    name: str
    scopes: tuple[str, ...]
    status: str
    created_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    rotated_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        """Read a key.

        Example:
            >>> ApiKey.from_json(cb.request("GET", "/api/v1/keys")["data"][0])
        """
        return cls(
            id=str(d["id"]),
            prefix=str(d.get("prefix", "")),
            tenant=str(d.get("tenant", "")),
            name=str(d.get("name", "")),
            scopes=_strs(d.get("scopes")),
            status=str(d.get("status", "")),
            created_at=_dt(d.get("created_at")),
            expires_at=_dt(d.get("expires_at")),
            revoked_at=_dt(d.get("revoked_at")),
            rotated_at=_dt(d.get("rotated_at")),
            last_used_at=_dt(d.get("last_used_at")),
        )


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created or rotated. ``token`` is shown this once: store it now."""

    key: ApiKey
    token: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        """Read a create or rotate answer.

        Example:
            >>> IssuedKey.from_json(cb.request("POST", "/api/v1/keys", json={"scopes": ["infer"]}))
        """
        return cls(key=ApiKey.from_json(d), token=str(d["token"]))


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """A request to use a restricted or confidential product, and its decision."""

    id: str
    tenant: str
    product: str
    tier: str
    purpose: str
    scopes: tuple[str, ...]
    duration_days: int
    conditions: dict[str, Any]
    state: str
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    grant_id: str | None
    created_at: datetime | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        """Read an access request.

        Example:
            >>> AccessRequest.from_json(cb.request("GET", "/api/v1/access-requests")["data"][0])
        """
        return cls(
            id=str(d["id"]),
            tenant=str(d.get("tenant", "")),
            product=str(d.get("product", "")),
            tier=str(d.get("tier", "")),
            purpose=str(d.get("purpose", "")),
            scopes=_strs(d.get("scopes")),
            duration_days=int(d.get("duration_days", 0)),
            conditions=dict(d.get("conditions") or {}),
            state=str(d.get("state", "")),
            decided_by=d.get("decided_by"),
            decided_at=_dt(d.get("decided_at")),
            reason=d.get("reason"),
            grant_id=d.get("grant_id"),
            created_at=_dt(d.get("created_at")),
        )


@dataclass(frozen=True, slots=True)
class Grant:
    """Permission to use a product, created by an approved access request."""

    id: str
    tenant: str
    product: str
    scopes: tuple[str, ...]
    conditions: dict[str, Any]
    status: str
    request_id: str | None
    created_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        """Read a grant.

        Example:
            >>> Grant.from_json(cb.request("GET", "/api/v1/grants")["data"][0])
        """
        return cls(
            id=str(d["id"]),
            tenant=str(d.get("tenant", "")),
            product=str(d.get("product", "")),
            scopes=_strs(d.get("scopes")),
            conditions=dict(d.get("conditions") or {}),
            status=str(d.get("status", "")),
            request_id=d.get("request_id"),
            created_at=_dt(d.get("created_at")),
            expires_at=_dt(d.get("expires_at")),
            revoked_at=_dt(d.get("revoked_at")),
        )


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Metered usage of one product (on one day, unless grouped by product)."""

    product: str
    day: date | None
    unit: str
    quantity: Decimal
    events: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        """Read a usage row.

        Example:
            >>> UsageRow.from_json(cb.request("GET", "/api/v1/usage")["data"][0])
        """
        day = d.get("day")
        return cls(
            product=str(d["product"]),
            day=date.fromisoformat(str(day)) if day else None,
            unit=str(d.get("unit", "")),
            quantity=_dec(d.get("quantity")),
            events=int(d.get("events", 0)),
        )


@dataclass(frozen=True, slots=True)
class Quota:
    """A quota or rate limit on a tenant, a key or a product (429 beyond it)."""

    id: str
    tenant: str | None
    key_id: str | None
    product: str | None
    metric: str
    window: str
    amount: float
    created_by: str
    created_at: datetime | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        """Read a quota.

        Example:
            >>> Quota.from_json(cb.request("GET", "/api/v1/quotas")["data"][0])
        """
        return cls(
            id=str(d["id"]),
            tenant=d.get("tenant"),
            key_id=d.get("key_id"),
            product=d.get("product"),
            metric=str(d.get("metric", "")),
            window=str(d.get("window", "")),
            amount=float(d.get("amount", 0)),
            created_by=str(d.get("created_by", "")),
            created_at=_dt(d.get("created_at")),
        )


@dataclass(frozen=True, slots=True)
class Document:
    """An invoice (developer tenants) or a chargeback statement (government tenants)."""

    id: int
    number: str
    kind: str
    tenant: str
    period: str
    status: str
    currency: str
    total: Decimal
    issued_at: datetime | None
    paid_at: datetime | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        """Read an invoice or statement as listed.

        Example:
            >>> Document.from_json(cb.request("GET", "/api/v1/invoices")["data"][0])
        """
        return cls(
            id=int(d["id"]),
            number=str(d.get("number", "")),
            kind=str(d.get("kind", "")),
            tenant=str(d.get("tenant", "")),
            period=str(d.get("period", "")),
            status=str(d.get("status", "")),
            currency=str(d.get("currency", "")),
            total=_dec(d.get("total")),
            issued_at=_dt(d.get("issued_at")),
            paid_at=_dt(d.get("paid_at")),
        )


@dataclass(frozen=True, slots=True)
class DocumentLine:
    """One line of an invoice or statement."""

    product: str
    domain: str
    description: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal
    usage_period: str
    late: bool

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        """Read a line.

        Example:
            >>> DocumentLine.from_json(cb.request("GET", "/api/v1/invoices/3")["lines"][0])
        """
        return cls(
            product=str(d.get("product", "")),
            domain=str(d.get("domain", "")),
            description=str(d.get("description", "")),
            quantity=_dec(d.get("quantity")),
            unit=str(d.get("unit", "")),
            unit_price=_dec(d.get("unit_price")),
            amount=_dec(d.get("amount")),
            usage_period=str(d.get("usage_period", "")),
            late=bool(d.get("late", False)),
        )


@dataclass(frozen=True, slots=True)
class DocumentDetail:
    """An invoice or statement with its lines (and a statement's cost allocation)."""

    document: Document
    lines: tuple[DocumentLine, ...]
    allocation_by_domain: dict[str, Decimal]
    allocation_by_publisher: dict[str, Decimal]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        """Read an invoice or statement in detail.

        Example:
            >>> DocumentDetail.from_json(cb.request("GET", "/api/v1/invoices/3"))
        """
        return cls(
            document=Document.from_json(d),
            lines=tuple(DocumentLine.from_json(line) for line in d.get("lines", ())),
            allocation_by_domain={
                k: _dec(v) for k, v in (d.get("allocation_by_domain") or {}).items()
            },
            allocation_by_publisher={
                k: _dec(v) for k, v in (d.get("allocation_by_publisher") or {}).items()
            },
        )


def as_list(values: str | Sequence[str] | None) -> list[str] | None:
    """A comma-separated string or a sequence as a list (None stays None).

    Example:
        >>> as_list("catalog:read, infer")
        ['catalog:read', 'infer']
    """
    if values is None:
        return None
    if isinstance(values, str):
        return [v.strip() for v in values.split(",") if v.strip()]
    return list(values)
