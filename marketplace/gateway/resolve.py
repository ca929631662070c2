"""From a model name (a product handle) and an optional version to what the gateway serves.

Resolution is caller-independent (who may see or use the result is the policy step's job), so
its result can be cached: :class:`ResolveCache` keeps each answer for a short TTL and is cleared
at once by any catalog write committed in this process (:func:`invalidate_on_catalog_writes`).
Writes by other processes (the CLI, other workers) are seen after at most the TTL.
Authentication is never cached: a revoked key must stop working on its next call.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, event, select
from sqlalchemy.orm import Session, sessionmaker

from marketplace.catalog.policy import LISTED_STATES
from marketplace.catalog.service import HANDLE_RE
from marketplace.constants import ProductKind, Tier
from marketplace.tables import Product, ProductVersion, Tenant
from model_store import ModelManifest

__all__ = [
    "MISSING",
    "ResolveCache",
    "ResolvedModel",
    "invalidate_on_catalog_writes",
    "resolve_model",
]


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A model product and the version a request addresses.

    Attributes:
        handle: ``<tenant-slug>.<product-name>``.
        product_id: The product's id.
        owner_tenant_id: The owning tenant.
        tier: The sensitivity tier.
        state: The listing state.
        listing: A detached ``Product`` carrying tenant_id, state and tier, for
            ``catalog.policy.can_see`` (the one visibility predicate).
        versions: Every version that carries a model artifact, ascending.
        version: The addressed version, or None if it does not exist (or, unaddressed, the
            product is not listed).
        digest: The version's artifact digest.
        manifest: The version's manifest.
    """

    handle: str
    product_id: int
    owner_tenant_id: int
    tier: str
    state: str
    listing: Product
    versions: tuple[int, ...]
    version: int | None = None
    digest: str | None = None
    manifest: ModelManifest | None = None

    @property
    def runtime_key(self) -> str:
        return f"{self.handle}:{self.version}"

    @property
    def label(self) -> str:
        """The name metrics show: secret products never leave their tenant, not even by name."""
        if self.tier == Tier.SECRET.value:
            return f"{self.handle.split('.', 1)[0]}.(secret)"
        return self.handle


MISSING: Any = object()
"""Sentinel: nothing cached, or a version string that is no version number."""


class ResolveCache:
    """A small TTL cache of resolutions (negative ones included), cleared by catalog writes.

    Thread-safe: lookups run in worker threads. ``generation`` guards against a lookup that
    started before an invalidation storing its stale answer after it.
    """

    def __init__(self, ttl_s: float, max_entries: int = 4096) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str | None], tuple[float, ResolvedModel | None]] = {}
        self._lock = threading.Lock()
        self.generation = 0

    def get(self, key: tuple[str, str | None]) -> Any:
        """The cached answer (a model, or None for "not found"), or ``MISSING``."""
        hit = self._entries.get(key)
        if hit is None or hit[0] < time.monotonic():
            return MISSING
        return hit[1]

    def put(
        self, key: tuple[str, str | None], value: ResolvedModel | None, generation: int
    ) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if generation != self.generation:
                return
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self.ttl_s, value)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()


_WATCHED = (Product, ProductVersion, Tenant)


def invalidate_on_catalog_writes(factory: sessionmaker[Session], cache: ResolveCache) -> None:
    """Clear ``cache`` whenever a session from ``factory`` commits a product, version or tenant
    change (tier, state, new version, deletion...)."""

    def after_flush(session: Session, _ctx: Any) -> None:
        for obj in (*session.new, *session.dirty, *session.deleted):
            if isinstance(obj, _WATCHED):
                session.info["catalog_changed"] = True
                return

    def after_commit(session: Session) -> None:
        if session.info.pop("catalog_changed", False):
            cache.clear()

    def after_rollback(session: Session) -> None:
        session.info.pop("catalog_changed", None)

    event.listen(factory, "after_flush", after_flush)
    event.listen(factory, "after_commit", after_commit)
    event.listen(factory, "after_soft_rollback", lambda s, _t: after_rollback(s))


def parse_version(version: str | None) -> Any:
    """``None`` for "latest", the number, or ``MISSING`` for something that is no version."""
    if version is None:
        return None
    if version.isdigit() and len(version) < 10:
        return int(version)
    return MISSING


def resolve_model(
    session: Session | Connection, cache: ResolveCache, name: str, version: str | None
) -> ResolvedModel | None:
    """Resolve ``name`` (a handle) and ``version`` (None: the latest of a listed product).

    Returns None when no model product has that handle. The result says nothing about who may
    see or use it.
    """
    key = (name, version)
    hit = cache.get(key)
    if hit is not MISSING:
        resolved: ResolvedModel | None = hit
        return resolved
    generation = cache.generation
    resolved = _load(session, name, version)
    cache.put(key, resolved, generation)
    return resolved


def _load(session: Session | Connection, name: str, version: str | None) -> ResolvedModel | None:
    m = HANDLE_RE.match(name)
    if not m:
        return None
    slug, product_name = m.groups()
    row = session.execute(
        select(Product.id, Product.tenant_id, Product.kind, Product.tier, Product.state)
        .join(Tenant, Tenant.id == Product.tenant_id)
        .where(Tenant.slug == slug, Product.name == product_name)
    ).first()
    if row is None or row.kind != ProductKind.MODEL.value:
        return None
    versions = tuple(
        session.scalars(
            select(ProductVersion.version)
            .where(
                ProductVersion.product_id == row.id,
                ProductVersion.artifact_digest.is_not(None),
                ProductVersion.manifest.is_not(None),
            )
            .order_by(ProductVersion.version)
        )
    )
    base = ResolvedModel(
        handle=name,
        product_id=row.id,
        owner_tenant_id=row.tenant_id,
        tier=row.tier,
        state=row.state,
        listing=Product(tenant_id=row.tenant_id, state=row.state, tier=row.tier),
        versions=versions,
    )
    wanted = parse_version(version)
    if wanted is MISSING:
        return base
    if wanted is None:
        if row.state not in LISTED_STATES or not versions:
            return base
        wanted = versions[-1]
    if wanted not in versions:
        return base
    chosen = session.execute(
        select(ProductVersion.artifact_digest, ProductVersion.manifest).where(
            ProductVersion.product_id == row.id, ProductVersion.version == wanted
        )
    ).one()
    return ResolvedModel(
        handle=name,
        product_id=row.id,
        owner_tenant_id=row.tenant_id,
        tier=row.tier,
        state=row.state,
        listing=base.listing,
        versions=versions,
        version=wanted,
        digest=chosen.artifact_digest,
        manifest=ModelManifest.model_validate(chosen.manifest),
    )
