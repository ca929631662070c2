"""CKAN's Action API, read side, over the catalog: the actions open-data tools and harvesters
call (``package_list``, ``package_show``, ``package_search``, ``organization_list``,
``organization_show``, ``tag_list``, ``status_show``), answering CKAN's shapes.

Mapping: a listed product is a package (``id`` and ``name`` its handle, ``notes`` its
description, ``title_translated``/``notes_translated`` in ``en`` and ``zh`` as ckanext-fluent
writes them, tier, kind and domain as ``extras``); its owner tenant an organization; its
resources the query API (datasets) or the v2 inference endpoint (models) and one Parquet
download per data version. What a caller may see is ``records.listed_products``: the same
rule as every catalog read.

``package_search`` answers ``q`` with the catalog's own full-text search (Chinese included)
and applies ``fq`` (``tags:``, ``organization:``, ``res_format:``, and ``kind:``/``domain:``/
``tier:``) and the facets over the matches; it considers at most ``MAX_MATCHES`` of them.
Errors are ``CkanError`` (the API layer answers them in CKAN's error envelope).
"""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from marketplace import __version__
from marketplace.catalog.search import search_products
from marketplace.catalog.service import ProductFilter
from marketplace.constants import API_PREFIX, ProductKind
from marketplace.context import Caller
from marketplace.opendata.records import data_facts, listed_products, versions_of
from marketplace.tables import Product, ProductVersion

CKAN_VERSION = "2.10.4"
MAX_ROWS = 1000
MAX_MATCHES = 10_000
FQ_FIELDS = ("tags", "organization", "res_format", "kind", "domain", "tier")
FACET_FIELDS = ("tags", "organization", "res_format", "kind", "domain", "tier", "license_id")


@dataclass
class CkanError(Exception):
    """An action error: ``kind`` is CKAN's ``__type`` and ``status`` its HTTP status."""

    kind: str
    message: str
    status: int
    fields: dict[str, list[str]] | None = None

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"__type": self.kind, "message": f"{self.kind}: {self.message}"}
        error.update(self.fields or {})
        return error


def not_found(what: str) -> CkanError:
    return CkanError("Not Found Error", f"{what} not found", 404)


def invalid(field: str, message: str) -> CkanError:
    return CkanError("Validation Error", message, 409, {field: [message]})


def _time(at: datetime) -> str:
    # CKAN writes naive UTC ISO times.
    return (at.astimezone(UTC) if at.tzinfo else at).replace(tzinfo=None).isoformat()


class Ckan:
    """The actions, for one caller and one request (``base_url``: the platform's address)."""

    def __init__(self, session: Session, caller: Caller, base_url: str) -> None:
        self.session = session
        self.caller = caller
        self.base = base_url.rstrip("/")
        self._products: list[Product] | None = None

    # ------------------------------------------------------------------- building blocks

    def products(self) -> list[Product]:
        if self._products is None:
            self._products = listed_products(self.session, self.caller)
        return self._products

    def _product(self, ident: str) -> Product:
        for p in self.products():
            if ident in (p.handle, str(p.id)):
                return p
        raise not_found("Dataset")

    def _resources(self, p: Product, versions: list[ProductVersion]) -> list[dict[str, Any]]:
        api = f"{self.base}{API_PREFIX}/products/{p.handle}"
        created = _time(p.created_at)
        if p.kind == ProductKind.MODEL.value:
            first = {
                "id": f"{p.handle}:v2",
                "name": "Open Inference Protocol (v2) endpoint",
                "url": f"{self.base}/v2/models/{p.handle}",
                "format": "API",
                "description": "POST .../infer with v2 JSON tensors",
            }
        else:
            first = {
                "id": f"{p.handle}:query",
                "name": "Query API",
                "url": f"{api}/query",
                "format": "API",
                "description": "POST a query plan; rows as JSON, CSV, Arrow or Parquet",
            }
        out: list[dict[str, Any]] = [{**first, "created": created, "size": None, "hash": ""}]
        for v in versions:
            facts = data_facts(v)
            if facts.sha256 is None:
                continue
            out.append(
                {
                    "id": f"{p.handle}:{v.version}",
                    "name": f"Version {v.version} (Parquet)",
                    "url": f"{api}/versions/{v.version}/data",
                    "format": "Parquet",
                    "mimetype": "application/vnd.apache.parquet",
                    "description": v.notes,
                    "created": _time(v.created_at),
                    "size": facts.bytes,
                    "hash": f"sha256:{facts.sha256}",
                }
            )
        for position, r in enumerate(out):
            r.update(package_id=p.handle, position=position, state="active")
            r.setdefault("mimetype", None)
        return out

    def _organization(self, p: Product, count: int | None = None) -> dict[str, Any]:
        t = p.tenant
        org: dict[str, Any] = {
            "id": t.slug,
            "name": t.slug,
            "title": t.name,
            "display_name": t.name,
            "description": "",
            "type": "organization",
            "is_organization": True,
            "state": "active",
            "approval_status": "approved",
            "image_url": "",
            "created": _time(t.created_at),
        }
        if count is not None:
            org["package_count"] = count
        return org

    def package(self, p: Product, versions: list[ProductVersion]) -> dict[str, Any]:
        resources = self._resources(p, versions)
        extras = {"kind": p.kind, "domain": p.domain, "tier": p.tier, "listing_state": p.state}
        if p.title_zh:
            extras["title_zh"] = p.title_zh
        if p.description_zh:
            extras["description_zh"] = p.description_zh
        score = data_facts(versions[-1]).quality_score if versions else None
        if score is not None:
            extras["quality_score"] = str(score)
        return {
            "id": p.handle,
            "name": p.handle,
            "title": p.title,
            "notes": p.description,
            "title_translated": {"en": p.title, "zh": p.title_zh or ""},
            "notes_translated": {"en": p.description, "zh": p.description_zh or ""},
            "type": "dataset",
            "state": "active",
            "private": False,
            "url": f"{self.base}{API_PREFIX}/products/{p.handle}",
            "version": str(versions[-1].version) if versions else None,
            "license_id": p.license or "notspecified",
            "license_title": p.license or "License not specified",
            "author": p.tenant.name,
            "maintainer": p.tenant.name,
            "owner_org": p.tenant.slug,
            "organization": self._organization(p),
            "metadata_created": _time(p.created_at),
            "metadata_modified": _time(p.updated_at),
            "tags": [
                {"name": t, "display_name": t, "id": t, "state": "active", "vocabulary_id": None}
                for t in p.tags
            ],
            "num_tags": len(p.tags),
            "resources": resources,
            "num_resources": len(resources),
            "extras": [{"key": k, "value": v} for k, v in sorted(extras.items())],
            "groups": [],
        }

    def _facet_values(self, p: Product, resources: list[dict[str, Any]]) -> dict[str, list[str]]:
        return {
            "tags": list(p.tags),
            "organization": [p.tenant.slug],
            "res_format": sorted({str(r["format"]) for r in resources}),
            "kind": [p.kind],
            "domain": [p.domain],
            "tier": [p.tier],
            "license_id": [p.license or "notspecified"],
        }

    # ------------------------------------------------------------------------- actions

    def package_list(self, limit: int | None = None, offset: int = 0) -> list[str]:
        names = sorted(p.handle for p in self.products())
        return names[offset : None if limit is None else offset + limit]

    def package_show(self, ident: str) -> dict[str, Any]:
        p = self._product(ident)
        return self.package(p, versions_of(self.session, [p]).get(p.id, []))

    def package_search(
        self,
        *,
        q: str = "",
        fq: str = "",
        rows: int = 10,
        start: int = 0,
        facet_fields: list[str] | None = None,
        facet_limit: int = 50,
    ) -> dict[str, Any]:
        if not 0 <= rows <= MAX_ROWS:
            raise invalid("rows", f"rows must be between 0 and {MAX_ROWS}")
        if start < 0:
            raise invalid("start", "start must not be negative")
        wanted = parse_fq(fq)
        candidates = self.products()
        text = "" if q.strip() in ("", "*:*") else q
        if text:
            found = search_products(
                self.session, self.caller, text, ProductFilter(), offset=0, limit=MAX_MATCHES
            )
            rank = {(listing.owner, listing.name): i for i, listing in enumerate(found.products)}
            candidates = sorted(
                (p for p in candidates if (p.tenant.slug, p.name) in rank),
                key=lambda p: rank[(p.tenant.slug, p.name)],
            )
        else:
            candidates = sorted(candidates, key=lambda p: (p.updated_at, p.id), reverse=True)
        versions = versions_of(self.session, candidates)
        matches: list[tuple[Product, list[ProductVersion]]] = []
        counts: dict[str, Counter[str]] = {f: Counter() for f in facet_fields or []}
        for p in candidates:
            vs = versions.get(p.id, [])
            values = self._facet_values(p, self._resources(p, vs))
            if all(
                {v.lower() for v in values[f]} >= {w.lower() for w in want}
                for f, want in wanted.items()
            ):
                matches.append((p, vs))
                for f, c in counts.items():
                    c.update(values[f])
        search_facets = {
            f: {
                "title": f,
                "items": [
                    {"name": name, "display_name": name, "count": n}
                    for name, n in c.most_common(facet_limit)
                ],
            }
            for f, c in counts.items()
        }
        return {
            "count": len(matches),
            "results": [self.package(p, vs) for p, vs in matches[start : start + rows]],
            "facets": {f: dict(c.most_common(facet_limit)) for f, c in counts.items()},
            "search_facets": search_facets,
            "sort": "score desc, metadata_modified desc",
        }

    def _by_owner(self) -> dict[str, list[Product]]:
        owners: dict[str, list[Product]] = {}
        for p in self.products():
            owners.setdefault(p.tenant.slug, []).append(p)
        return owners

    def organization_list(self, all_fields: bool = False) -> list[Any]:
        owners = self._by_owner()
        if not all_fields:
            return sorted(owners)
        return [self._organization(ps[0], len(ps)) for _, ps in sorted(owners.items())]

    def organization_show(self, ident: str, include_datasets: bool = False) -> dict[str, Any]:
        # A tenant with nothing the caller may see answers like one that does not exist.
        products = self._by_owner().get(ident)
        if not products:
            raise not_found("Organization")
        org = self._organization(products[0], len(products))
        if include_datasets:
            versions = versions_of(self.session, products)
            org["packages"] = [self.package(p, versions.get(p.id, [])) for p in products]
        return org

    def tag_list(self, query: str | None = None, all_fields: bool = False) -> list[Any]:
        tags = sorted({t for p in self.products() for t in p.tags})
        if query:
            tags = [t for t in tags if query.lower() in t]
        if all_fields:
            return [{"id": t, "name": t, "display_name": t, "vocabulary_id": None} for t in tags]
        return tags

    def status_show(self) -> dict[str, Any]:
        return {
            "ckan_version": CKAN_VERSION,
            "site_title": "CityBrain Open Platform",
            "site_description": "城市大脑开放平台: the city's data products and AI models",
            "site_url": self.base,
            "locale_default": "en",
            "extensions": ["citybrain", "fluent"],
            "citybrain_version": __version__,
        }


_FQ_TERM = re.compile(r"^([a-z_]+):(.+)$")


def parse_fq(fq: str) -> dict[str, list[str]]:
    """``field:value`` clauses (values may be quoted; a leading ``+`` is ignored), all of which
    must hold. Fields outside ``FQ_FIELDS`` are a validation error, not silently ignored."""
    wanted: dict[str, list[str]] = {}
    try:
        parts = shlex.split(fq or "")
    except ValueError as e:
        raise invalid("fq", f"cannot parse fq: {e}") from e
    for part in parts:
        m = _FQ_TERM.match(part.lstrip("+"))
        if not m or m.group(1) not in FQ_FIELDS:
            raise invalid("fq", f"unsupported fq clause {part!r}; fields: {', '.join(FQ_FIELDS)}")
        wanted.setdefault(m.group(1), []).append(m.group(2).strip('"'))
    return wanted


def facet_fields(value: Any) -> list[str]:
    """``facet.field`` as CKAN takes it: a JSON list (or a list already)."""
    if value in (None, ""):
        return []
    fields = json.loads(value) if isinstance(value, str) else value
    if not isinstance(fields, list) or not all(f in FACET_FIELDS for f in fields):
        raise invalid("facet.field", f"facet.field: a JSON list of {', '.join(FACET_FIELDS)}")
    return [str(f) for f in fields]
