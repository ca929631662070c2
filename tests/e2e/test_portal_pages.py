"""The portal's pages in a real browser: accessibility (axe-core, no serious or critical
violation), keyboard use, Chinese, and what an anonymous visitor can do."""

from __future__ import annotations

import re
from typing import Any

from tests.e2e.conftest import Platform
from tests.e2e.helpers import axe_violations, shot, sign_in_key

MODEL = "traffic-police.flow-smoother"

ANONYMOUS_PAGES = ["/", "/?q=air&kind=dataset", f"/catalog/{MODEL}", "/signin"]
DEVELOPER_PAGES = [
    "/access",
    "/keys",
    "/usage",
    "/billing",
    "/audit",
    "/catalog/city-management.manhole-covers",
]
OPERATOR_PAGES = ["/operator", "/audit", "/usage", "/billing"]


def _check(page: Any, paths: list[str], who: str) -> dict[str, list[dict[str, Any]]]:
    """axe-core's serious and critical findings per page; a screenshot of each page."""
    found = {}
    for path in paths:
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        name = re.sub(r"[^a-z0-9]+", "-", path.strip("/").lower()).strip("-") or "catalog"
        shot(page, f"page-{who}-{name}")
        if violations := axe_violations(page):
            found[f"{who} {path}"] = violations
    return found


def test_main_pages_pass_axe(platform: Platform, new_context: Any) -> None:
    page = new_context().new_page()
    problems = _check(page, ANONYMOUS_PAGES, "visitor")
    sign_in_key(page, platform.keys["parkeasy"])
    problems |= _check(page, DEVELOPER_PAGES, "developer")
    operator = new_context().new_page()
    sign_in_key(operator, platform.keys["data-bureau"])
    problems |= _check(operator, OPERATOR_PAGES, "operator")
    assert not problems, problems


def test_axe_finds_what_breaks_a_page(platform: Platform, new_context: Any) -> None:
    """The check can fail: a search button with no name is a critical violation."""
    page = new_context().new_page()
    page.goto("/")
    page.evaluate("document.querySelector('form[role=search] button').textContent = ''")
    assert "button-name" in {v["id"] for v in axe_violations(page)}


def test_chinese_pages_pass_axe(platform: Platform, new_context: Any) -> None:
    page = new_context("zh-CN").new_page()
    problems = _check(page, ANONYMOUS_PAGES, "visitor-zh")
    sign_in_key(page, platform.keys["data-bureau"])
    problems |= _check(page, OPERATOR_PAGES, "operator-zh")
    assert not problems, problems


def test_the_catalog_in_chinese(platform: Platform, new_context: Any) -> None:
    page = new_context("zh-CN").new_page()
    page.goto("/")
    assert page.locator("html").get_attribute("lang") == "zh-Hans"
    assert page.get_by_role("heading", level=1).inner_text() == "数据与模型目录"
    assert page.locator(".card .badge", has_text="公开").count() >= 1
    assert page.get_by_role("button", name="搜索").is_visible()
    shot(page, "09-catalog-zh")
    # A product with a Chinese title shows it to a Chinese reader.
    page.get_by_role("link", name="交通流量平滑模型").click()
    assert page.get_by_role("heading", level=1, name="交通流量平滑模型", exact=True).is_visible()
    assert page.get_by_role("heading", name="输入与输出").is_visible()
    shot(page, "10-product-zh")
    # The switch keeps the page and changes the language, for good (a cookie).
    page.get_by_role("link", name="English").click()
    assert page.get_by_role("heading", name="Inputs and outputs").is_visible()
    assert page.get_by_role(
        "heading", level=1, name="Traffic flow smoother", exact=True
    ).is_visible()
    page.goto("/")
    assert page.get_by_role("heading", level=1).inner_text() == "Data and model catalog"


def test_an_anonymous_visitor_browses_and_is_asked_to_sign_in(
    platform: Platform, new_context: Any
) -> None:
    page = new_context().new_page()
    page.goto("/")
    badges = set(page.locator(".card .badge").all_inner_texts())
    assert badges == {"Public"}  # only public listings for a visitor
    page.get_by_role("link", name="Traffic flow smoother").click()
    assert "Sign in to try it" in page.locator("#try").inner_text()
    shot(page, "11-anonymous-product")
    page.goto("/catalog/city-management.manhole-covers")
    assert page.get_by_role("heading", name="Error 404").is_visible()
    page.goto("/keys")
    assert page.url.endswith("/signin?next=%2Fkeys")


def test_keyboard_alone_reaches_search_and_results(platform: Platform, new_context: Any) -> None:
    page = new_context().new_page()
    page.goto("/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    for _ in range(30):  # from the top of the content to the search box, by Tab alone
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "q":
            break
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("air quality")
    page.keyboard.press("Enter")
    page.wait_for_url("**/?q=air+quality")
    assert page.locator(".card h3").all_inner_texts() == ["Air quality monitoring"]


def test_try_it_in_the_browser(platform: Platform, new_context: Any) -> None:
    page = new_context().new_page()
    sign_in_key(page, platform.keys["tourism"], f"/catalog/{MODEL}")
    page.goto(f"/catalog/{MODEL}")
    page.get_by_role("button", name="Send request").click()
    result = page.locator("pre.result")
    assert '"smoothed"' in result.inner_text() and "ok" in (result.get_attribute("class") or "")
    shot(page, "12-try-it")
