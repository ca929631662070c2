"""Chinese and bilingual catalog search, on SQLite (FTS5) and on PostgreSQL (tsvector, the
per-term tables of migration 0009)."""

from __future__ import annotations

import pytest

from tests.utils.city import City

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends


def _search(city: City, q: str, who: str | None = None, **params: str) -> dict:  # type: ignore[type-arg]
    r = city.client.get(
        "/api/v1/catalog/search", params={"q": q, **params}, headers=city.headers(who)
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _handles(body: dict) -> list[str]:  # type: ignore[type-arg]
    return [p["handle"] for p in body["data"]]


def test_demo_city_products_are_found_by_chinese_words(city: City) -> None:
    # 拥堵 is inside 交通拥堵分析 (the description of intersection flow counts).
    assert "traffic-police.intersection-flow" in _handles(_search(city, "拥堵"))
    assert _handles(_search(city, "空气质量")) == ["environment.air-quality"]
    # Restricted and confidential listings: found only by those who may see them.
    assert _handles(_search(city, "井盖")) == []
    assert _handles(_search(city, "井盖", "parkeasy")) == ["city-management.manhole-covers"]
    assert _handles(_search(city, "投诉", "parkeasy")) == []
    found = _search(city, "投诉", "traffic-police")
    assert "hotline-12345.complaint-tickets" in _handles(found)
    listing = next(p for p in found["data"] if p["handle"] == "hotline-12345.complaint-tickets")
    assert listing["title_zh"] == "12345热线投诉工单"
    # The secret signal timing plans never show to another tenant, whatever the words.
    assert _handles(_search(city, "信号灯", "parkeasy")) == ["traffic-police.intersection-flow"]
    assert "traffic-police.signal-timing-plans" in _handles(
        _search(city, "信号灯", "traffic-police")
    )


def test_chinese_title_ranks_above_description_with_facets(city: City) -> None:
    in_title = city.product(
        "tourism",
        title="Lake cruise bookings",
        title_zh="游船拥堵预警",
        domain="tourism",
        kind="model",
    )
    in_desc = city.product(
        "parkeasy",
        title="Garage entries",
        description_zh="停车场入口车辆数，高峰时段容易拥堵。",
        domain="traffic",
    )
    body = _search(city, "拥堵")
    handles = _handles(body)
    assert handles.index(in_title) < handles.index(in_desc)
    assert body["facets"]["kind"]["model"] == 1
    assert body["facets"]["domain"]["tourism"] == 1
    # A phrase is cut into words that must all match: 游船 and 预警.
    assert _handles(_search(city, "游船预警")) == [in_title]
    # English and Chinese words mix in one query.
    assert _handles(_search(city, "garage 拥堵")) == [in_desc]
    # Filters apply as for English.
    assert _handles(_search(city, "拥堵", kind="model")) == [in_title]


def test_chinese_text_is_reindexed_on_update_and_cleared(city: City) -> None:
    handle = city.product("environment", title="Noise map", title_zh="噪声地图")
    assert _handles(_search(city, "噪声")) == [handle]
    r = city.client.patch(
        f"/api/v1/products/{handle}",
        json={"title_zh": "噪音投诉热点", "tags": ["夜间施工"]},
        headers=city.headers("environment"),
    )
    assert r.status_code == 200, r.text
    assert r.json()["title_zh"] == "噪音投诉热点"
    assert _handles(_search(city, "噪声")) == []
    assert handle in _handles(_search(city, "投诉"))
    assert _handles(_search(city, "施工")) == [handle]
    assert _handles(_search(city, "夜间施工", tag="夜间施工")) == [handle]
    r = city.client.patch(
        f"/api/v1/products/{handle}", json={"title_zh": ""}, headers=city.headers("environment")
    )
    assert r.json()["title_zh"] is None
    assert handle not in _handles(_search(city, "投诉"))
