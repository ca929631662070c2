"""What the browser tests do in a page: sign in (through the realm, or with a key), take
screenshots, and run axe-core."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / "var" / "screenshots"
PASSWORD = "test-secret"  # the test realm's password for every user (tests/oidc/server.mjs)


def shot(page: Any, name: str) -> Path:
    """A full-page screenshot under var/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in_oidc(page: Any, user: str) -> None:
    """Sign in through the realm: the portal's button, the realm's login form, back again."""
    page.goto("/")
    page.get_by_role("link", name="Sign in").first.click()
    page.locator("#signin-oidc").click()
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()
    page.wait_for_url("**/")
    page.get_by_text(f"Signed in as {user}.").wait_for()


def sign_in_key(page: Any, key: str, next_path: str = "/") -> None:
    """Sign in with an API key through the portal's form (in any language)."""
    page.goto(f"/signin?next={next_path}")
    page.locator("#api_key").fill(key)
    page.locator("form[action='/signin/key'] button[type=submit]").click()
    page.locator("form[action='/signout']").wait_for()


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the current page."""
    if not AXE.exists():
        pytest.fail("axe-core is not installed: run `npm ci` in tests/e2e (make test does)")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
