"""``cb.catalog``: search with facets, read products and versions, and manage one's own listings.

Each call is described once (``_specs``) and sent by :class:`Catalog` (blocking) or
:class:`AsyncCatalog` (awaited), so the two cannot drift apart.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from citybrain_sdk._http import API_PREFIX, Call
from citybrain_sdk.resources._base import (
    AsyncResource,
    Spec,
    SyncResource,
    json_spec,
    listing,
    no_answer,
    product_path,
)
from citybrain_sdk.types import Page, Product, SearchResult, Version

__all__ = ["AsyncCatalog", "Catalog"]


class _specs:
    """The catalog's calls, described once for :class:`Catalog` and :class:`AsyncCatalog`."""

    @staticmethod
    def search(
        q: str | None,
        kind: str | None,
        domain: str | None,
        tier: str | None,
        owner: str | None,
        tag: str | None,
        page: int,
        per_page: int,
    ) -> Spec[SearchResult]:
        params = {
            "q": q,
            "kind": kind,
            "domain": domain,
            "tier": tier,
            "owner": owner,
            "tag": tag,
            "page": page,
            "per_page": per_page,
        }
        call = Call("GET", f"{API_PREFIX}/catalog/search", params=params)
        return json_spec(call, SearchResult.from_json)

    @staticmethod
    def list(page: int, per_page: int, **filters: str | None) -> Spec[Page[Product]]:
        params = {**filters, "page": page, "per_page": per_page}
        call = Call("GET", f"{API_PREFIX}/products", params=params)
        return json_spec(call, lambda doc: Page.parse(doc, Product.from_json))

    @staticmethod
    def get(handle: str) -> Spec[Product]:
        return json_spec(Call("GET", product_path(handle)), Product.from_json)

    @staticmethod
    def versions(handle: str) -> Spec[builtins.list[Version]]:
        call = Call("GET", product_path(handle, "versions"))
        return json_spec(call, listing(Version.from_json))

    @staticmethod
    def version(handle: str, version: int) -> Spec[Version]:
        return json_spec(Call("GET", product_path(handle, "versions", version)), Version.from_json)

    @staticmethod
    def create(
        name: str,
        kind: str,
        title: str,
        domain: str,
        description: str,
        tags: Sequence[str],
        tier: str,
        license: str,
    ) -> Spec[Product]:
        body = {
            "name": name,
            "kind": kind,
            "title": title,
            "domain": domain,
            "description": description,
            "tags": list(tags),
            "tier": tier,
            "license": license,
        }
        return json_spec(Call("POST", f"{API_PREFIX}/products", json=body), Product.from_json)

    @staticmethod
    def update(handle: str, **fields: Any) -> Spec[Product]:
        body = {k: (list(v) if k == "tags" else v) for k, v in fields.items() if v is not None}
        return json_spec(Call("PATCH", product_path(handle), json=body), Product.from_json)

    @staticmethod
    def action(handle: str, action: str, note: str | None = None) -> Spec[Product]:
        body = None if note is None else {"note": note}
        return json_spec(Call("POST", product_path(handle, action), json=body), Product.from_json)

    @staticmethod
    def delete(handle: str) -> Spec[None]:
        return no_answer(Call("DELETE", product_path(handle)))

    @staticmethod
    def create_version(handle: str, notes: str, metadata: dict[str, Any] | None) -> Spec[Version]:
        body = {"notes": notes, "metadata": dict(metadata or {})}
        call = Call("POST", product_path(handle, "versions"), json=body)
        return json_spec(call, Version.from_json)


class Catalog(SyncResource):
    """The catalog of data products and models (``cb.catalog``)."""

    def search(
        self,
        q: str | None = None,
        *,
        kind: str | None = None,
        domain: str | None = None,
        tier: str | None = None,
        owner: str | None = None,
        tag: str | None = None,
        page: int = 1,
        per_page: int = 20,
    ) -> SearchResult:
        """Full-text search over titles, tags and descriptions, with facet counts.

        Only what the caller may see is found and counted (anonymous clients: public products).

        Args:
            q: Words to match (each as a prefix); None lists everything visible.
            kind: ``"dataset"`` or ``"model"``.
            domain: e.g. ``"traffic"``, ``"environment"``.
            tier: ``public``, ``restricted``, ``confidential`` or ``secret``.
            owner: The owning tenant's slug.
            tag: One tag.
            page: The page, from 1.
            per_page: Hits per page.

        Returns:
            The hits (``.data``), their total (``.count``) and ``.facets``.

        Example:
            >>> hits = cb.catalog.search("air", domain="environment")
            >>> [p.handle for p in hits], hits.facets["kind"]
            (['environment.air-quality'], {'dataset': 1})
        """
        return self._run(_specs.search(q, kind, domain, tier, owner, tag, page, per_page))

    def list(
        self,
        *,
        kind: str | None = None,
        domain: str | None = None,
        tier: str | None = None,
        owner: str | None = None,
        tag: str | None = None,
        state: str | None = None,
        page: int = 1,
        per_page: int = 20,
    ) -> Page[Product]:
        """Products the caller may see, newest first, filtered.

        Args:
            kind: ``"dataset"`` or ``"model"``.
            domain: A domain.
            tier: A tier.
            owner: The owning tenant's slug.
            tag: One tag.
            state: ``draft``, ``submitted``, ``published`` or ``deprecated`` (drafts: one's own).
            page: The page, from 1.
            per_page: Products per page.

        Returns:
            One page of products.

        Example:
            >>> mine = cb.catalog.list(owner="parkeasy", state="draft")
        """
        filters = {"kind": kind, "domain": domain, "tier": tier, "owner": owner, "tag": tag}
        return self._run(_specs.list(page, per_page, state=state, **filters))

    def get(self, handle: str) -> Product:
        """One product by handle.

        Args:
            handle: ``<tenant-slug>.<product-name>``.

        Returns:
            The product, with ``latest_version``.

        Raises:
            NotFound: No such product, or one the caller may not see (the two look alike).

        Example:
            >>> cb.catalog.get("traffic-police.flow-smoother").tier
            'public'
        """
        return self._run(_specs.get(handle))

    def versions(self, handle: str) -> builtins.list[Version]:
        """A product's versions, oldest first.

        Example:
            >>> [v.version for v in cb.catalog.versions("traffic-police.flow-smoother")]
            [1]
        """
        return self._run(_specs.versions(handle))

    def version(self, handle: str, version: int) -> Version:
        """One version of a product (a dataset's schema and quality, a model's manifest).

        Example:
            >>> cb.catalog.version("traffic-police.flow-smoother", 1).manifest["format"]
            'torchscript'
        """
        return self._run(_specs.version(handle, version))

    def create(
        self,
        name: str,
        *,
        kind: str,
        title: str,
        domain: str,
        description: str = "",
        tags: Sequence[str] = (),
        tier: str = "public",
        license: str = "",
    ) -> Product:
        """Register a product (a draft) for the caller's tenant (``catalog:write``).

        Args:
            name: The product's name; its handle becomes ``<your-tenant>.<name>``.
            kind: ``"dataset"`` or ``"model"``.
            title: A short title.
            domain: e.g. ``"traffic"``.
            description: What it is and how it was made.
            tags: Search tags.
            tier: The sensitivity tier.
            license: e.g. ``"CC-BY-4.0"``.

        Returns:
            The new draft.

        Example:
            >>> p = cb.catalog.create("lane-counter", kind="model", title="Lane counter",
            ...                       domain="traffic")
            >>> p.handle, p.state
            ('parkeasy.lane-counter', 'draft')
        """
        call = _specs.create(name, kind, title, domain, description, tags, tier, license)
        return self._run(call)

    def update(
        self,
        handle: str,
        *,
        title: str | None = None,
        description: str | None = None,
        domain: str | None = None,
        tags: Sequence[str] | None = None,
        tier: str | None = None,
        license: str | None = None,
    ) -> Product:
        """Change a product's fields (only those given).

        Example:
            >>> cb.catalog.update("parkeasy.lane-counter", tags=["lanes", "video"])
        """
        fields = {"title": title, "description": description, "domain": domain, "tier": tier}
        return self._run(_specs.update(handle, tags=tags, license=license, **fields))

    def publish(self, handle: str) -> Product:
        """Publish a public (or one's own secret) product without review.

        Example:
            >>> cb.catalog.publish("parkeasy.lane-counter").state
            'published'
        """
        return self._run(_specs.action(handle, "publish"))

    def submit(self, handle: str) -> Product:
        """Send a restricted or confidential draft to the operator's review.

        Example:
            >>> cb.catalog.submit("parkeasy.plate-reader").state
            'submitted'
        """
        return self._run(_specs.action(handle, "submit"))

    def approve(self, handle: str, note: str = "") -> Product:
        """Operator: publish a submitted listing.

        Example:
            >>> operator.catalog.approve("parkeasy.plate-reader", note="checked")
        """
        return self._run(_specs.action(handle, "approve", note))

    def reject(self, handle: str, note: str) -> Product:
        """Operator: send a submitted listing back to draft, with the reason.

        Example:
            >>> operator.catalog.reject("parkeasy.plate-reader", note="no model card")
        """
        return self._run(_specs.action(handle, "reject", note))

    def deprecate(self, handle: str) -> Product:
        """Mark a published product deprecated (still listed; no new versions).

        Example:
            >>> cb.catalog.deprecate("parkeasy.lane-counter")
        """
        return self._run(_specs.action(handle, "deprecate"))

    def delete(self, handle: str) -> None:
        """Delete a product that was never published (deprecate a published one instead).

        Example:
            >>> cb.catalog.delete("parkeasy.lane-counter")
        """
        self._run(_specs.delete(handle))

    def create_version(
        self, handle: str, *, notes: str = "", metadata: dict[str, Any] | None = None
    ) -> Version:
        """Add a version that carries metadata only (models: :meth:`Models.push`; datasets:
        :meth:`Datasets.push`).

        Example:
            >>> cb.catalog.create_version("parkeasy.lane-counter", notes="docs only")
        """
        return self._run(_specs.create_version(handle, notes, metadata))


class AsyncCatalog(AsyncResource):
    """The catalog, awaited (``AsyncClient.catalog``): the methods of :class:`Catalog`."""

    async def search(
        self,
        q: str | None = None,
        *,
        kind: str | None = None,
        domain: str | None = None,
        tier: str | None = None,
        owner: str | None = None,
        tag: str | None = None,
        page: int = 1,
        per_page: int = 20,
    ) -> SearchResult:
        """Full-text search with facets; see :meth:`Catalog.search`.

        Example:
            >>> hits = await cb.catalog.search("air", domain="environment")
        """
        return await self._run(_specs.search(q, kind, domain, tier, owner, tag, page, per_page))

    async def list(
        self,
        *,
        kind: str | None = None,
        domain: str | None = None,
        tier: str | None = None,
        owner: str | None = None,
        tag: str | None = None,
        state: str | None = None,
        page: int = 1,
        per_page: int = 20,
    ) -> Page[Product]:
        """Products the caller may see; see :meth:`Catalog.list`.

        Example:
            >>> page = await cb.catalog.list(kind="model")
        """
        filters = {"kind": kind, "domain": domain, "tier": tier, "owner": owner, "tag": tag}
        return await self._run(_specs.list(page, per_page, state=state, **filters))

    async def get(self, handle: str) -> Product:
        """One product; see :meth:`Catalog.get`.

        Example:
            >>> product = await cb.catalog.get("traffic-police.flow-smoother")
        """
        return await self._run(_specs.get(handle))

    async def versions(self, handle: str) -> builtins.list[Version]:
        """A product's versions; see :meth:`Catalog.versions`.

        Example:
            >>> versions = await cb.catalog.versions("traffic-police.flow-smoother")
        """
        return await self._run(_specs.versions(handle))

    async def version(self, handle: str, version: int) -> Version:
        """One version; see :meth:`Catalog.version`.

        Example:
            >>> v = await cb.catalog.version("traffic-police.flow-smoother", 1)
        """
        return await self._run(_specs.version(handle, version))

    async def create(
        self,
        name: str,
        *,
        kind: str,
        title: str,
        domain: str,
        description: str = "",
        tags: Sequence[str] = (),
        tier: str = "public",
        license: str = "",
    ) -> Product:
        """Register a draft; see :meth:`Catalog.create`.

        Example:
            >>> p = await cb.catalog.create("lane-counter", kind="model", title="Lanes",
            ...                             domain="traffic")
        """
        call = _specs.create(name, kind, title, domain, description, tags, tier, license)
        return await self._run(call)

    async def update(
        self,
        handle: str,
        *,
        title: str | None = None,
        description: str | None = None,
        domain: str | None = None,
        tags: Sequence[str] | None = None,
        tier: str | None = None,
        license: str | None = None,
    ) -> Product:
        """Change a product's fields; see :meth:`Catalog.update`.

        Example:
            >>> await cb.catalog.update("parkeasy.lane-counter", title="Lane counter v2")
        """
        fields = {"title": title, "description": description, "domain": domain, "tier": tier}
        return await self._run(_specs.update(handle, tags=tags, license=license, **fields))

    async def publish(self, handle: str) -> Product:
        """Publish without review; see :meth:`Catalog.publish`.

        Example:
            >>> await cb.catalog.publish("parkeasy.lane-counter")
        """
        return await self._run(_specs.action(handle, "publish"))

    async def submit(self, handle: str) -> Product:
        """Send to review; see :meth:`Catalog.submit`.

        Example:
            >>> await cb.catalog.submit("parkeasy.plate-reader")
        """
        return await self._run(_specs.action(handle, "submit"))

    async def approve(self, handle: str, note: str = "") -> Product:
        """Operator: publish a submitted listing; see :meth:`Catalog.approve`.

        Example:
            >>> await operator.catalog.approve("parkeasy.plate-reader")
        """
        return await self._run(_specs.action(handle, "approve", note))

    async def reject(self, handle: str, note: str) -> Product:
        """Operator: back to draft; see :meth:`Catalog.reject`.

        Example:
            >>> await operator.catalog.reject("parkeasy.plate-reader", note="no card")
        """
        return await self._run(_specs.action(handle, "reject", note))

    async def deprecate(self, handle: str) -> Product:
        """Deprecate; see :meth:`Catalog.deprecate`.

        Example:
            >>> await cb.catalog.deprecate("parkeasy.lane-counter")
        """
        return await self._run(_specs.action(handle, "deprecate"))

    async def delete(self, handle: str) -> None:
        """Delete an unpublished product; see :meth:`Catalog.delete`.

        Example:
            >>> await cb.catalog.delete("parkeasy.lane-counter")
        """
        await self._run(_specs.delete(handle))

    async def create_version(
        self, handle: str, *, notes: str = "", metadata: dict[str, Any] | None = None
    ) -> Version:
        """Add a metadata-only version; see :meth:`Catalog.create_version`.

        Example:
            >>> await cb.catalog.create_version("parkeasy.lane-counter", notes="docs")
        """
        return await self._run(_specs.create_version(handle, notes, metadata))
