"""Tier visibility on every read path, and hidden == missing."""

from __future__ import annotations

import pytest

from tests.utils.city import City

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends

GOVERNMENT = {"data-bureau", "traffic-police", "xihu-district", "health"}


def expected_visible(viewer: str | None, owner: str, tier: str) -> bool:
    """ARCHITECTURE.md's table, restated independently of the implementation."""
    if viewer == owner:
        return True
    if tier == "public":
        return True
    if viewer is None:
        return False
    if tier == "restricted":
        return True
    if tier == "confidential":
        return viewer in GOVERNMENT
    return False


VIEWERS = [None, "parkeasy", "xihu-district", "health", "data-bureau", "traffic-police"]


def _strip(body: dict) -> dict:  # type: ignore[type-arg]
    return {k: v for k, v in body.items() if k != "request_id"}


@pytest.mark.parametrize("tier", ["public", "restricted", "confidential", "secret"])
def test_every_read_path_respects_the_tier(city: City, tier: str) -> None:
    owner = "traffic-police"
    handle = city.product(
        owner, tier=tier, name=f"probe-{tier}", title=f"Zebra crossing {tier}", tags=["zebra"]
    )
    r = city.client.post(
        f"/api/v1/products/{handle}/versions", json={}, headers=city.headers(owner)
    )
    assert r.status_code == 201
    missing = handle.replace("probe-", "nothing-")
    for viewer in VIEWERS:
        h = city.headers(viewer)
        visible = expected_visible(viewer, owner, tier)
        listed = {
            p["handle"]
            for p in city.client.get("/api/v1/products?per_page=100", headers=h).json()["data"]
        }
        found = city.client.get("/api/v1/catalog/search?q=zebra", headers=h).json()
        assert (handle in listed) is visible, (viewer, tier)
        assert (handle in {p["handle"] for p in found["data"]}) is visible
        assert found["facets"]["tier"].get(tier, 0) == (1 if visible else 0)
        for suffix in ("", "/versions", "/versions/1"):
            got = city.client.get(f"/api/v1/products/{handle}{suffix}", headers=h)
            if visible:
                assert got.status_code == 200, (viewer, tier, suffix)
            else:
                absent = city.client.get(f"/api/v1/products/{missing}{suffix}", headers=h)
                assert got.status_code == absent.status_code == 404
                assert _strip(got.json()).keys() == _strip(absent.json()).keys()
                assert got.json()["code"] == absent.json()["code"]
                assert got.json()["error"].replace(handle, missing) == absent.json()["error"]


def test_drafts_are_seen_by_the_owner_only(city: City) -> None:
    handle = city.product("health", tier="public", publish=False)
    assert (
        city.client.get(f"/api/v1/products/{handle}", headers=city.headers("health")).status_code
        == 200
    )
    for viewer in (None, "parkeasy", "data-bureau", "traffic-police"):
        assert (
            city.client.get(f"/api/v1/products/{handle}", headers=city.headers(viewer)).status_code
            == 404
        )


def test_operator_sees_submissions_for_review_but_never_secret(city: City) -> None:
    conf = city.product("health", tier="confidential", publish=False)
    city.client.post(f"/api/v1/products/{conf}/submit", headers=city.headers("health"))
    queue = city.client.get(
        "/api/v1/products?state=submitted", headers=city.headers("data-bureau")
    ).json()
    assert conf in {p["handle"] for p in queue["data"]}
    other = city.client.get(
        "/api/v1/products?state=submitted", headers=city.headers("tourism")
    ).json()
    assert conf not in {p["handle"] for p in other["data"]}
    secret = city.product("health", tier="secret")
    assert (
        city.client.get(
            f"/api/v1/products/{secret}", headers=city.headers("data-bureau")
        ).status_code
        == 404
    )


def test_hidden_and_missing_answer_identically_for_writes(city: City) -> None:
    secret = city.product("traffic-police", tier="secret", name="hidden-thing")
    missing = "traffic-police.no-such-thing"
    h = city.headers("parkeasy")
    for method, suffix, body in (
        ("PATCH", "", {"title": "x"}),
        ("DELETE", "", None),
        ("POST", "/submit", None),
        ("POST", "/publish", None),
        ("POST", "/deprecate", None),
        ("POST", "/versions", {}),
    ):
        a = city.client.request(method, f"/api/v1/products/{secret}{suffix}", json=body, headers=h)
        b = city.client.request(method, f"/api/v1/products/{missing}{suffix}", json=body, headers=h)
        assert a.status_code == b.status_code == 404, (method, suffix)
        assert a.json()["error"].replace(secret, missing) == b.json()["error"]
