"""DCAT-AP 3 exports: SHACL-valid (pyshacl against tests/data/dcat-ap-3-shapes.ttl),
bilingual, tier-aware like every catalog read."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pyshacl import validate
from rdflib import Graph, Literal, URIRef
from rdflib.namespace import DCAT, DCTERMS, RDF

from tests.utils.city import City

SHAPES = Graph().parse(Path(__file__).parents[2] / "data" / "dcat-ap-3-shapes.ttl")
SPDX = "http://spdx.org/rdf/terms#"
DQV = "http://www.w3.org/ns/dqv#"


def _graph(city: City, path: str, who: str | None = None, accept: str | None = None) -> Graph:
    headers = city.headers(who)
    if accept:
        headers["Accept"] = accept
    r = city.client.get(path, headers=headers)
    assert r.status_code == 200, r.text
    fmt = {"text/turtle": "turtle", "application/rdf+xml": "xml"}.get(accept or "", "json-ld")
    assert r.headers["content-type"].startswith(
        {"turtle": "text/turtle", "xml": "application/rdf+xml"}.get(fmt, "application/ld+json")
    )
    return Graph().parse(data=r.text, format=fmt)


def _conforms(g: Graph) -> tuple[bool, str]:
    ok, _, text = validate(g, shacl_graph=SHAPES, allow_infos=True, allow_warnings=False)
    return bool(ok), str(text)


def _identifiers(g: Graph) -> set[str]:
    return {
        str(o)
        for s in set(g.subjects(RDF.type, DCAT.Dataset))
        | set(g.subjects(RDF.type, DCAT.DataService))
        for o in g.objects(s, DCTERMS.identifier)
    }


@pytest.fixture
def data_product(city: City) -> str:
    handle = city.product(
        "environment",
        title="Noise readings",
        title_zh="噪声监测",
        description="Hourly noise levels",
        description_zh="每小时噪声读数",
        domain="environment",
        tags=["noise", "噪声"],
        license="CC-BY-4.0",
    )
    meta = {
        "sha256": hashlib.sha256(b"noise").hexdigest(),
        "rows": 1200,
        "bytes": 48_213,
        "quality": {"score": 0.93},
    }
    r = city.client.post(
        f"/api/v1/products/{handle}/versions",
        json={"notes": "First snapshot", "metadata": meta},
        headers=city.headers("environment"),
    )
    assert r.status_code == 201, r.text
    return handle


def test_catalog_conforms_to_dcat_ap_3_shapes(city: City, data_product: str) -> None:
    city.product("traffic-police", kind="model", title="Queue length model", domain="traffic")
    for accept in (None, "text/turtle", "application/rdf+xml"):
        g = _graph(city, "/api/v1/catalog/dcat", "traffic-police", accept)
        ok, report = _conforms(g)
        assert ok, report
    assert set(g.subjects(RDF.type, DCAT.Catalog))
    assert set(g.subjects(RDF.type, DCAT.DataService))  # the model


def test_shapes_reject_a_dataset_without_title(city: City, data_product: str) -> None:
    g = _graph(city, f"/api/v1/products/{data_product}/dcat")
    assert _conforms(g)[0]
    (node,) = g.subjects(RDF.type, DCAT.Dataset)
    g.remove((node, DCTERMS.title, None))
    ok, report = _conforms(g)
    assert not ok and "title" in report


def test_dataset_carries_languages_distribution_checksum_and_quality(
    city: City, data_product: str
) -> None:
    g = _graph(city, f"/api/v1/products/{data_product}/dcat", accept="text/turtle")
    (node,) = g.subjects(RDF.type, DCAT.Dataset)
    titles = set(g.objects(node, DCTERMS.title))
    assert Literal("Noise readings", lang="en") in titles
    assert Literal("噪声监测", lang="zh") in titles
    assert Literal("每小时噪声读数", lang="zh") in set(g.objects(node, DCTERMS.description))
    assert Literal("噪声", lang="zh") in set(g.objects(node, DCAT.keyword))
    assert (
        node,
        DCTERMS.accessRights,
        URIRef("http://publications.europa.eu/resource/authority/access-right/PUBLIC"),
    ) in g
    (dist,) = g.objects(node, DCAT.distribution)
    assert str(next(g.objects(dist, DCAT.accessURL))).endswith(f"/products/{data_product}/query")
    assert str(next(g.objects(dist, DCAT.downloadURL))).endswith("/versions/1/data")
    assert int(next(g.objects(dist, DCAT.byteSize))) == 48_213
    checksum = next(g.objects(dist, URIRef(SPDX + "checksum")))
    value = next(g.objects(checksum, URIRef(SPDX + "checksumValue")))
    assert str(value) == hashlib.sha256(b"noise").hexdigest()
    measurement = next(g.objects(node, URIRef(DQV + "hasQualityMeasurement")))
    assert float(next(g.objects(measurement, URIRef(DQV + "value")))) == pytest.approx(0.93)


def test_dcat_is_tier_aware(city: City) -> None:
    anon = _identifiers(_graph(city, "/api/v1/catalog/dcat"))
    assert "environment.air-quality" in anon
    assert "city-management.manhole-covers" not in anon  # restricted
    developer = _identifiers(_graph(city, "/api/v1/catalog/dcat", "parkeasy"))
    assert "city-management.manhole-covers" in developer
    assert "hotline-12345.complaint-tickets" not in developer  # confidential
    agency = _identifiers(_graph(city, "/api/v1/catalog/dcat", "traffic-police"))
    assert "hotline-12345.complaint-tickets" in agency
    assert "traffic-police.signal-timing-plans" in agency  # its own secret listing
    assert "traffic-police.signal-timing-plans" not in _identifiers(
        _graph(city, "/api/v1/catalog/dcat", "environment")
    )
    # One product: another tenant's secret or a restricted one anonymously answers like a
    # missing one.
    for who, handle in (
        ("environment", "traffic-police.signal-timing-plans"),
        (None, "city-management.manhole-covers"),
        (None, "nobody.nothing"),
    ):
        r = city.client.get(f"/api/v1/products/{handle}/dcat", headers=city.headers(who))
        assert r.status_code == 404
        assert r.json()["code"] == "NotFound"
