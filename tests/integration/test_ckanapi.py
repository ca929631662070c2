"""CKAN's own client (``ckanapi.RemoteCKAN``) reads the catalog from a running platform
process (``tests/sdk/server.py``: the seeded demo city served by ``citybrain serve``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from ckanapi import NotFound, RemoteCKAN, ValidationError

from tests.sdk.server import Platform, running_platform


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(Path(tmp_path_factory.mktemp("ckan"))) as p:
        yield p


def _ckan(platform: Platform, who: str | None = None, get_only: bool = False) -> RemoteCKAN:
    key = platform.keys[who] if who else None
    return RemoteCKAN(platform.url, apikey=key, user_agent="ckanapi-test", get_only=get_only)


def test_ckanapi_lists_shows_and_searches_the_public_catalog(platform: Platform) -> None:
    with _ckan(platform) as ckan:
        assert ckan.action.status_show()["ckan_version"].startswith("2.")
        names = ckan.action.package_list()
        assert "environment.air-quality" in names
        assert "traffic-police.flow-smoother" in names  # the demo model
        assert "city-management.manhole-covers" not in names  # restricted
        assert "traffic-police.signal-timing-plans" not in names  # secret

        pkg = ckan.action.package_show(id="environment.air-quality")
        assert pkg["organization"]["name"] == "environment"
        assert pkg["title_translated"]["zh"] == "空气质量监测"
        assert {t["name"] for t in pkg["tags"]} == {"air", "pm25", "monitoring"}
        assert pkg["resources"][0]["url"].endswith("/api/v1/products/environment.air-quality/query")
        with pytest.raises(NotFound):
            ckan.action.package_show(id="city-management.manhole-covers")

        found = ckan.action.package_search(q="空气质量")
        assert [p["name"] for p in found["results"]] == ["environment.air-quality"]
        realtime = ckan.action.package_search(
            fq="tags:realtime", rows=1, start=0, **{"facet.field": ["organization"]}
        )
        assert realtime["count"] == 2  # intersection flow and parking availability
        assert len(realtime["results"]) == 1
        assert realtime["search_facets"]["organization"]["items"]
        assert {i["name"] for i in realtime["search_facets"]["organization"]["items"]} == {
            "traffic-police",
            "parkeasy",
        }
        second = ckan.action.package_search(fq="tags:realtime", rows=1, start=1)
        assert {second["results"][0]["name"], realtime["results"][0]["name"]} == {
            "traffic-police.intersection-flow",
            "parkeasy.parking-availability",
        }
        api = ckan.action.package_search(fq="organization:traffic-police res_format:API")
        assert {p["name"] for p in api["results"]} >= {
            "traffic-police.intersection-flow",
            "traffic-police.flow-smoother",
        }
        with pytest.raises(ValidationError):
            ckan.action.package_search(fq="private:true")

        orgs = ckan.action.organization_list()
        assert "environment" in orgs and "health" not in orgs  # health lists nothing public
        org = ckan.action.organization_show(id="environment", include_datasets=True)
        assert org["package_count"] == 1
        assert [p["name"] for p in org["packages"]] == ["environment.air-quality"]
        with pytest.raises(NotFound):
            ckan.action.organization_show(id="health")
        assert "pm25" in ckan.action.tag_list()


def test_ckanapi_with_a_key_sees_what_the_tenant_may_see(platform: Platform) -> None:
    # GET, the way read-only harvesters call it, with the key bare as CKAN clients send it.
    with _ckan(platform, "traffic-police", get_only=True) as ckan:
        names = ckan.action.package_list()
        assert "hotline-12345.complaint-tickets" in names  # confidential: government tenant
        assert "traffic-police.signal-timing-plans" in names  # its own secret listing
        found = ckan.action.package_search(
            q="投诉", **{"facet.field": json.dumps(["tags", "organization"])}
        )
        assert "hotline-12345.complaint-tickets" in [p["name"] for p in found["results"]]
        assert found["search_facets"]["organization"]["items"][0]["name"] == "hotline-12345"
        assert "health" in ckan.action.organization_list()  # its restricted clinic capacity
    with _ckan(platform, "parkeasy") as ckan:
        names = ckan.action.package_list()
        assert "city-management.manhole-covers" in names
        assert "hotline-12345.complaint-tickets" not in names
        with pytest.raises(NotFound):
            ckan.action.package_show(id="hotline-12345.complaint-tickets")
