"""``cb.catalog``: search with facets, read products and versions, and manage one's own listings.

Each call is built once (``_calls``) and sent by :class:`Catalog` (blocking) or
:class:`AsyncCatalog` (awaited), so the two cannot drift apart.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from citybrain_sdk._http import API_PREFIX, AsyncHTTP, Call, SyncHTTP, segment
from citybrain_sdk.types import Page, Product, SearchResult, Version

__all__ = ["AsyncCatalog", "Catalog"]


def _product_path(handle: str, *rest: str) -> str:
    return "/".join([f"{API_PREFIX}/products/{segment(handle)}", *rest])


class _calls:
    """The HTTP calls of the catalog, shared by the blocking and the awaited class."""

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
    ) -> Call:
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
        return Call("GET", f"{API_PREFIX}/catalog/search", params=params)

    @staticmethod
    def list(filters: dict[str, Any], page: int, per_page: int) -> Call:
        return Call(
            "GET", f"{API_PREFIX}/products", params={**filters, "page": page, "per_page": per_page}
        )

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
    ) -> Call:
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
        return Call("POST", f"{API_PREFIX}/products", json=body)

    @staticmethod
    def update(handle: str, fields: dict[str, Any]) -> Call:
        body = {k: (list(v) if k == "tags" else v) for k, v in fields.items() if v is not None}
        return Call("PATCH", _product_path(handle), json=body)

    @staticmethod
    def action(handle: str, action: str, note: str | None = None) -> Call:
        body = None if note is None else {"note": note}
        return Call("POST", _product_path(handle, action), json=body)

    @staticmethod
    def create_version(handle: str, notes: str, metadata: dict[str, Any] | None) -> Call:
        return Call(
            "POST",
            _product_path(handle, "versions"),
            json={"notes": notes, "metadata": dict(metadata or {})},
        )


def _filters(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def _versions(doc: Any) -> list[Version]:
    return [Version.from_json(v) for v in doc.get("data", ())]


class Catalog:
    """The catalog of data products and models (``cb.catalog``)."""

    def __init__(self, http: SyncHTTP) -> None:
        self._http = http

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
        doc = self._http.json(_calls.search(q, kind, domain, tier, owner, tag, page, per_page))
        return SearchResult.from_json(doc)

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
        flt = _filters(kind=kind, domain=domain, tier=tier, owner=owner, tag=tag, state=state)
        return Page.parse(self._http.json(_calls.list(flt, page, per_page)), Product.from_json)

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
        return Product.from_json(self._http.json(Call("GET", _product_path(handle))))

    def versions(self, handle: str) -> builtins.list[Version]:
        """A product's versions, oldest first.

        Example:
            >>> [v.version for v in cb.catalog.versions("traffic-police.flow-smoother")]
            [1]
        """
        return _versions(self._http.json(Call("GET", _product_path(handle, "versions"))))

    def version(self, handle: str, version: int) -> Version:
        """One version of a product (a dataset's schema and quality, a model's manifest).

        Example:
            >>> cb.catalog.version("traffic-police.flow-smoother", 1).manifest["format"]
            'torchscript'
        """
        path = _product_path(handle, "versions", segment(version))
        return Version.from_json(self._http.json(Call("GET", path)))

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
        call = _calls.create(name, kind, title, domain, description, tags, tier, license)
        return Product.from_json(self._http.json(call))

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
        fields = {
            "title": title,
            "description": description,
            "domain": domain,
            "tags": tags,
            "tier": tier,
            "license": license,
        }
        return Product.from_json(self._http.json(_calls.update(handle, fields)))

    def publish(self, handle: str) -> Product:
        """Publish a public (or one's own secret) product without review.

        Example:
            >>> cb.catalog.publish("parkeasy.lane-counter").state
            'published'
        """
        return Product.from_json(self._http.json(_calls.action(handle, "publish")))

    def submit(self, handle: str) -> Product:
        """Send a restricted or confidential draft to the operator's review.

        Example:
            >>> cb.catalog.submit("parkeasy.plate-reader").state
            'submitted'
        """
        return Product.from_json(self._http.json(_calls.action(handle, "submit")))

    def approve(self, handle: str, note: str = "") -> Product:
        """Operator: publish a submitted listing.

        Example:
            >>> operator.catalog.approve("parkeasy.plate-reader", note="checked")
        """
        return Product.from_json(self._http.json(_calls.action(handle, "approve", note)))

    def reject(self, handle: str, note: str) -> Product:
        """Operator: send a submitted listing back to draft, with the reason.

        Example:
            >>> operator.catalog.reject("parkeasy.plate-reader", note="no model card")
        """
        return Product.from_json(self._http.json(_calls.action(handle, "reject", note)))

    def deprecate(self, handle: str) -> Product:
        """Mark a published product deprecated (still listed; no new versions).

        Example:
            >>> cb.catalog.deprecate("parkeasy.lane-counter")
        """
        return Product.from_json(self._http.json(_calls.action(handle, "deprecate")))

    def delete(self, handle: str) -> None:
        """Delete a product that was never published (deprecate a published one instead).

        Example:
            >>> cb.catalog.delete("parkeasy.lane-counter")
        """
        self._http.send(Call("DELETE", _product_path(handle)))

    def create_version(
        self, handle: str, *, notes: str = "", metadata: dict[str, Any] | None = None
    ) -> Version:
        """Add a version that carries metadata only (models: :meth:`Models.push`; datasets:
        :meth:`Datasets.push`).

        Example:
            >>> cb.catalog.create_version("parkeasy.lane-counter", notes="docs only")
        """
        return Version.from_json(self._http.json(_calls.create_version(handle, notes, metadata)))


class AsyncCatalog:
    """The catalog, awaited (``AsyncClient.catalog``): the methods of :class:`Catalog`."""

    def __init__(self, http: AsyncHTTP) -> None:
        self._http = http

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
        call = _calls.search(q, kind, domain, tier, owner, tag, page, per_page)
        return SearchResult.from_json(await self._http.json(call))

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
        flt = _filters(kind=kind, domain=domain, tier=tier, owner=owner, tag=tag, state=state)
        doc = await self._http.json(_calls.list(flt, page, per_page))
        return Page.parse(doc, Product.from_json)

    async def get(self, handle: str) -> Product:
        """One product; see :meth:`Catalog.get`.

        Example:
            >>> product = await cb.catalog.get("traffic-police.flow-smoother")
        """
        return Product.from_json(await self._http.json(Call("GET", _product_path(handle))))

    async def versions(self, handle: str) -> builtins.list[Version]:
        """A product's versions; see :meth:`Catalog.versions`.

        Example:
            >>> versions = await cb.catalog.versions("traffic-police.flow-smoother")
        """
        return _versions(await self._http.json(Call("GET", _product_path(handle, "versions"))))

    async def version(self, handle: str, version: int) -> Version:
        """One version; see :meth:`Catalog.version`.

        Example:
            >>> v = await cb.catalog.version("traffic-police.flow-smoother", 1)
        """
        path = _product_path(handle, "versions", segment(version))
        return Version.from_json(await self._http.json(Call("GET", path)))

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
        call = _calls.create(name, kind, title, domain, description, tags, tier, license)
        return Product.from_json(await self._http.json(call))

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
        fields = {
            "title": title,
            "description": description,
            "domain": domain,
            "tags": tags,
            "tier": tier,
            "license": license,
        }
        return Product.from_json(await self._http.json(_calls.update(handle, fields)))

    async def publish(self, handle: str) -> Product:
        """Publish without review; see :meth:`Catalog.publish`.

        Example:
            >>> await cb.catalog.publish("parkeasy.lane-counter")
        """
        return Product.from_json(await self._http.json(_calls.action(handle, "publish")))

    async def submit(self, handle: str) -> Product:
        """Send to review; see :meth:`Catalog.submit`.

        Example:
            >>> await cb.catalog.submit("parkeasy.plate-reader")
        """
        return Product.from_json(await self._http.json(_calls.action(handle, "submit")))

    async def approve(self, handle: str, note: str = "") -> Product:
        """Operator: publish a submitted listing; see :meth:`Catalog.approve`.

        Example:
            >>> await operator.catalog.approve("parkeasy.plate-reader")
        """
        return Product.from_json(await self._http.json(_calls.action(handle, "approve", note)))

    async def reject(self, handle: str, note: str) -> Product:
        """Operator: back to draft; see :meth:`Catalog.reject`.

        Example:
            >>> await operator.catalog.reject("parkeasy.plate-reader", note="no card")
        """
        return Product.from_json(await self._http.json(_calls.action(handle, "reject", note)))

    async def deprecate(self, handle: str) -> Product:
        """Deprecate; see :meth:`Catalog.deprecate`.

        Example:
            >>> await cb.catalog.deprecate("parkeasy.lane-counter")
        """
        return Product.from_json(await self._http.json(_calls.action(handle, "deprecate")))

    async def delete(self, handle: str) -> None:
        """Delete an unpublished product; see :meth:`Catalog.delete`.

        Example:
            >>> await cb.catalog.delete("parkeasy.lane-counter")
        """
        await self._http.send(Call("DELETE", _product_path(handle)))

    async def create_version(
        self, handle: str, *, notes: str = "", metadata: dict[str, Any] | None = None
    ) -> Version:
        """Add a metadata-only version; see :meth:`Catalog.create_version`.

        Example:
            >>> await cb.catalog.create_version("parkeasy.lane-counter", notes="docs")
        """
        call = _calls.create_version(handle, notes, metadata)
        return Version.from_json(await self._http.json(call))
