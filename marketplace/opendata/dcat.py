"""The catalog as DCAT-AP 3 (rdflib): a ``dcat:Catalog`` of ``dcat:Dataset`` (data products)
and ``dcat:DataService`` (models, served through the v2 inference endpoint).

Every listing carries ``dct:title``/``dct:description`` in English (``@en``) and, where its
owner gave them, Simplified Chinese (``@zh``); its owner tenant as ``dct:publisher``
(``foaf:Agent``); its domain as a ``dcat:theme`` of the EU data-theme vocabulary; its tags as
``dcat:keyword``; its tier as ``dct:accessRights`` (EU access-right vocabulary: public →
PUBLIC, restricted → RESTRICTED, confidential and secret → NON_PUBLIC); its license; its
created/updated times. A dataset has one ``dcat:Distribution`` per version: the query API as
``dcat:accessURL``, the snapshot as ``dcat:downloadURL`` with ``dct:format``,
``dcat:byteSize`` and ``spdx:checksum`` where the version records its data, and the newest
version's quality score as ``dqv:hasQualityMeasurement``.

What a caller receives is what the catalog shows it (``records.listed_products``);
``tests/data/dcat-ap-3-shapes.ttl`` holds the SHACL shapes the output is checked against.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from rdflib import BNode, Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, FOAF, RDF, SKOS, XSD
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.catalog import zh
from marketplace.catalog.service import get_product
from marketplace.constants import API_PREFIX, ProductKind, TenantKind, Tier
from marketplace.context import Caller
from marketplace.opendata.records import data_facts, listed_products, versions_of
from marketplace.tables import Product, ProductVersion, Tenant

DQV = Namespace("http://www.w3.org/ns/dqv#")
SPDX = Namespace("http://spdx.org/rdf/terms#")
VCARD = Namespace("http://www.w3.org/2006/vcard/ns#")
EU = "http://publications.europa.eu/resource/authority/"
ADMS_PUBLISHER = Namespace("http://purl.org/adms/publishertype/")
# DCAT 3 terms that rdflib's DCAT namespace (DCAT 2) does not list.
DCAT3_VERSION = URIRef(f"{DCAT}version")
OIP = URIRef("https://github.com/kserve/open-inference-protocol")

# Domains → the EU data-theme vocabulary.
THEMES: dict[str, str] = {
    "traffic": "TRAN",
    "safety": "JUST",
    "city-management": "REGI",
    "tourism": "EDUC",
    "health": "HEAL",
    "environment": "ENVI",
    "credit": "ECON",
    "other": "GOVE",
}
ACCESS_RIGHTS: dict[str, str] = {
    Tier.PUBLIC.value: "PUBLIC",
    Tier.RESTRICTED.value: "RESTRICTED",
    Tier.CONFIDENTIAL.value: "NON_PUBLIC",
    Tier.SECRET.value: "NON_PUBLIC",
}
PUBLISHER_TYPES: dict[str, str] = {
    TenantKind.OPERATOR.value: "LocalAuthority",
    TenantKind.AGENCY.value: "LocalAuthority",
    TenantKind.DISTRICT.value: "LocalAuthority",
    TenantKind.DEVELOPER.value: "Company",
}
CATALOG_TITLE = ("CityBrain Open Platform catalog", "城市大脑开放平台目录")
CATALOG_DESCRIPTION = (
    "Data products and AI models of the city's agencies, district hubs and developers.",
    "全市各部门、区县中枢和开发者发布的数据产品与人工智能模型。",
)


class RdfFormat(StrEnum):
    JSON_LD = "json-ld"
    TURTLE = "turtle"
    XML = "xml"

    @property
    def media_type(self) -> str:
        return {
            "json-ld": "application/ld+json",
            "turtle": "text/turtle",
            "xml": "application/rdf+xml",
        }[self.value]


JSONLD_CONTEXT = {
    "dcat": str(DCAT),
    "dct": str(DCTERMS),
    "foaf": str(FOAF),
    "dqv": str(DQV),
    "spdx": str(SPDX),
    "vcard": str(VCARD),
    "skos": str(SKOS),
    "xsd": str(XSD),
}


def _bind(g: Graph) -> Graph:
    for prefix, ns in JSONLD_CONTEXT.items():
        g.bind(prefix, Namespace(ns))
    return g


class _Builder:
    """Adds catalog entries to one graph; IRIs are the platform's own API addresses."""

    def __init__(self, graph: Graph, base_url: str) -> None:
        self.g = graph
        self.base = base_url.rstrip("/")
        self.agents: set[int] = set()

    def iri(self, path: str) -> URIRef:
        return URIRef(f"{self.base}{path}")

    def product_iri(self, product: Product) -> URIRef:
        return self.iri(f"{API_PREFIX}/products/{product.handle}")

    def _texts(self, subject: URIRef, prop: URIRef, en: str, zh_text: str | None) -> None:
        self.g.add((subject, prop, Literal(en, lang="en")))
        if zh_text:
            self.g.add((subject, prop, Literal(zh_text, lang="zh")))

    @staticmethod
    def _time(at: datetime) -> Literal:
        # SQLite hands times back without a zone; the platform writes them in UTC.
        return Literal(at if at.tzinfo else at.replace(tzinfo=UTC), datatype=XSD.dateTime)

    def agent(self, tenant: Tenant) -> URIRef:
        node = self.iri(f"{API_PREFIX}/tenants/{tenant.slug}")
        if tenant.id not in self.agents:
            self.agents.add(tenant.id)
            self.g.add((node, RDF.type, FOAF.Agent))
            self.g.add((node, FOAF.name, Literal(tenant.name, lang="en")))
            self.g.add((node, DCTERMS.identifier, Literal(tenant.slug)))
            self.g.add((node, DCTERMS.type, ADMS_PUBLISHER[PUBLISHER_TYPES[tenant.kind]]))
        return node

    def _common(self, node: URIRef, product: Product) -> None:
        self.g.add((node, DCTERMS.identifier, Literal(product.handle)))
        self._texts(node, DCTERMS.title, product.title, product.title_zh)
        # DCAT-AP requires a description; a listing without one is described by its title.
        self._texts(
            node, DCTERMS.description, product.description or product.title, product.description_zh
        )
        self.g.add((node, DCTERMS.publisher, self.agent(product.tenant)))
        self.g.add((node, DCAT.theme, URIRef(f"{EU}data-theme/{THEMES[product.domain]}")))
        for tag in product.tags:
            self.g.add(
                (node, DCAT.keyword, Literal(tag, lang="zh" if zh.has_chinese(tag) else "en"))
            )
        access = URIRef(f"{EU}access-right/{ACCESS_RIGHTS[product.tier]}")
        self.g.add((node, DCTERMS.accessRights, access))
        self.g.add((node, DCTERMS.issued, self._time(product.created_at)))
        self.g.add((node, DCTERMS.modified, self._time(product.updated_at)))
        self.g.add((node, DCAT.landingPage, self.product_iri(product)))
        contact = BNode()
        self.g.add((node, DCAT.contactPoint, contact))
        self.g.add((contact, RDF.type, VCARD.Kind))
        self.g.add((contact, RDF.type, VCARD.Organization))
        self.g.add((contact, VCARD.fn, Literal(product.tenant.name)))
        self.g.add((contact, VCARD.hasURL, self.agent(product.tenant)))

    def _license(self, node: URIRef | BNode, product: Product) -> None:
        if product.license:
            # SPDX identifiers (CC-BY-4.0, Apache-2.0 …) name their license document.
            self.g.add(
                (node, DCTERMS.license, URIRef(f"https://spdx.org/licenses/{product.license}"))
            )

    def dataset(self, product: Product, versions: list[ProductVersion]) -> URIRef:
        node = self.product_iri(product)
        self.g.add((node, RDF.type, DCAT.Dataset))
        self._common(node, product)
        for version in versions:
            self.g.add((node, DCAT.distribution, self.distribution(product, version)))
        if versions:
            self.g.add((node, DCAT3_VERSION, Literal(str(versions[-1].version))))
            score = data_facts(versions[-1]).quality_score
            if score is not None:
                measurement = BNode()
                self.g.add((node, DQV.hasQualityMeasurement, measurement))
                self.g.add((measurement, RDF.type, DQV.QualityMeasurement))
                self.g.add((measurement, DQV.isMeasurementOf, self.iri("/ns#qualityScore")))
                self.g.add((measurement, DQV.value, Literal(score, datatype=XSD.double)))
        return node

    def distribution(self, product: Product, version: ProductVersion) -> URIRef:
        base = f"{API_PREFIX}/products/{product.handle}"
        node = self.iri(f"{base}/versions/{version.version}")
        g = self.g
        g.add((node, RDF.type, DCAT.Distribution))
        g.add(
            (node, DCTERMS.title, Literal(f"{product.title}, version {version.version}", lang="en"))
        )
        g.add(
            (
                node,
                DCTERMS.description,
                Literal(version.notes or f"Version {version.version}", lang="en"),
            )
        )
        g.add((node, DCAT.accessURL, self.iri(f"{base}/query")))
        g.add((node, DCTERMS.issued, self._time(version.created_at)))
        self._license(node, product)
        facts = data_facts(version)
        if facts.sha256 is not None:
            g.add((node, DCAT.downloadURL, self.iri(f"{base}/versions/{version.version}/data")))
            g.add((node, DCTERMS.format, URIRef(f"{EU}file-type/PARQUET")))
            checksum = BNode()
            g.add((node, SPDX.checksum, checksum))
            g.add((checksum, RDF.type, SPDX.Checksum))
            g.add((checksum, SPDX.algorithm, SPDX.checksumAlgorithm_sha256))
            g.add((checksum, SPDX.checksumValue, Literal(facts.sha256, datatype=XSD.hexBinary)))
        else:
            g.add((node, DCTERMS.format, URIRef(f"{EU}file-type/JSON")))
        if facts.bytes is not None:
            g.add((node, DCAT.byteSize, Literal(facts.bytes, datatype=XSD.nonNegativeInteger)))
        return node

    def service(self, product: Product) -> URIRef:
        node = self.product_iri(product)
        self.g.add((node, RDF.type, DCAT.DataService))
        self._common(node, product)
        self._license(node, product)
        endpoint = self.iri(f"/v2/models/{product.handle}")
        self.g.add((node, DCAT.endpointURL, endpoint))
        # The model's v2 metadata document describes its inputs and outputs.
        self.g.add((node, DCAT.endpointDescription, endpoint))
        self.g.add((node, DCTERMS.conformsTo, OIP))
        return node

    def entry(self, product: Product, versions: list[ProductVersion]) -> URIRef:
        if product.kind == ProductKind.MODEL.value:
            return self.service(product)
        return self.dataset(product, versions)


def _operator(session: Session) -> Tenant | None:
    return session.scalar(
        select(Tenant).where(Tenant.kind == TenantKind.OPERATOR.value).order_by(Tenant.id).limit(1)
    )


def catalog_graph(session: Session, caller: Caller, base_url: str) -> Graph:
    """The whole catalog the caller may see, as one ``dcat:Catalog``."""
    b = _Builder(_bind(Graph()), base_url)
    node = b.iri(f"{API_PREFIX}/catalog")
    g = b.g
    g.add((node, RDF.type, DCAT.Catalog))
    b._texts(node, DCTERMS.title, *CATALOG_TITLE)
    b._texts(node, DCTERMS.description, *CATALOG_DESCRIPTION)
    operator = _operator(session)
    if operator is not None:
        g.add((node, DCTERMS.publisher, b.agent(operator)))
    else:  # a platform with no operator tenant yet: the platform itself publishes
        platform = b.iri("/")
        g.add((node, DCTERMS.publisher, platform))
        g.add((platform, RDF.type, FOAF.Agent))
        g.add((platform, FOAF.name, Literal(CATALOG_TITLE[0], lang="en")))
        g.add((platform, DCTERMS.type, ADMS_PUBLISHER.LocalAuthority))
    g.add((node, FOAF.homepage, b.iri("/")))
    for lang in ("ENG", "ZHO"):
        g.add((node, DCTERMS.language, URIRef(f"{EU}language/{lang}")))
    g.add((node, DCAT.themeTaxonomy, URIRef(f"{EU}data-theme")))
    products = listed_products(session, caller)
    versions = versions_of(session, products)
    newest: datetime | None = None
    for product in products:
        entry = b.entry(product, versions.get(product.id, []))
        kind = DCAT.service if product.kind == ProductKind.MODEL.value else DCAT.dataset
        g.add((node, kind, entry))
        at = product.updated_at.replace(tzinfo=product.updated_at.tzinfo or UTC)
        newest = at if newest is None or at > newest else newest
    if newest is not None:
        g.add((node, DCTERMS.modified, b._time(newest)))
    return g


def product_graph(session: Session, caller: Caller, handle: str, base_url: str) -> Graph:
    """One listing (NotFoundError, as every read, for one the caller may not see)."""
    product = get_product(session, caller, handle)
    b = _Builder(_bind(Graph()), base_url)
    b.entry(product, versions_of(session, [product]).get(product.id, []))
    return b.g


def serialize(graph: Graph, fmt: RdfFormat) -> bytes:
    if fmt is RdfFormat.JSON_LD:
        return graph.serialize(format="json-ld", context=JSONLD_CONTEXT, auto_compact=True).encode()
    return graph.serialize(format=fmt.value).encode()


def negotiate(accept: str | None, explicit: str | None = None) -> RdfFormat:
    """The format asked for: ``?format=`` first, then the Accept header; JSON-LD by default."""
    if explicit:
        aliases = {"jsonld": "json-ld", "ttl": "turtle", "rdf": "xml", "rdfxml": "xml"}
        try:
            return RdfFormat(aliases.get(explicit, explicit))
        except ValueError:
            pass
    for part in (accept or "").split(","):
        media = part.split(";")[0].strip().lower()
        for fmt in RdfFormat:
            if media == fmt.media_type:
                return fmt
    return RdfFormat.JSON_LD
