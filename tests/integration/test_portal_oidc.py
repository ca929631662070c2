"""Portal sign-in through the realm (tests/oidc's real OpenID provider): the authorization
code flow with PKCE, driven here without a browser (tests/e2e drives it in Chromium).

The browser's part is played by httpx against the provider and by the test client against the
portal; what is checked is the portal's: state, PKCE, the ID token's nonce, one use per code,
and the realm's roles and tenant mapped by the API's own verifier.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urljoin, urlparse

import httpx
import pytest
from fastapi.testclient import TestClient

from marketplace.api.app import create_app
from marketplace.config import OIDCSettings, PortalSettings, Settings
from marketplace.db import transaction
from marketplace.seed import seed_demo_city
from tests.utils.oidc import oidc_provider

SECRET = "test-secret"
CALLBACK = "http://testserver/auth/callback"


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    with oidc_provider(CALLBACK) as url:
        yield url


@pytest.fixture
def portal(settings: Settings, provider: str, session_factory) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with transaction(session_factory) as s:
        seed_demo_city(s)
    cfg = settings.model_copy(
        update={
            "oidc": OIDCSettings(server_url=provider, realm="citybrain", leeway_s=0),
            "portal": PortalSettings(oidc_client_secret=SECRET),  # type: ignore[arg-type]
        }
    )
    with TestClient(create_app(cfg), raise_server_exceptions=False) as c:
        yield c


def _to_realm(portal: TestClient) -> str:
    """The portal's sign-in button: where it sends the browser (the realm's authorize URL)."""
    r = portal.get("/signin/oidc?next=/access", follow_redirects=False)
    assert r.status_code == 303
    return str(r.headers["location"])


def _follow(browser: httpx.Client, r: httpx.Response) -> httpx.Response:
    """Follow the realm's redirects, stopping before the portal's callback."""
    while r.status_code in (302, 303) and not r.headers["location"].startswith(CALLBACK):
        r = browser.get(urljoin(str(r.url), r.headers["location"]))
    return r


def _log_in(authorize: str, user: str, password: str = SECRET) -> httpx.Response:
    """The realm's side: its login page, the form posted; the realm's last answer."""
    with httpx.Client() as browser:
        r = _follow(browser, browser.get(authorize))
        assert r.status_code == 200 and "Sign in to citybrain" in r.text
        return _follow(
            browser, browser.post(str(r.url), data={"username": user, "password": password})
        )


def _callback(authorize: str, user: str) -> str:
    """Where the realm sends the browser back after ``user`` logged in (the portal path)."""
    r = _log_in(authorize, user)
    assert r.headers["location"].startswith(CALLBACK), r.text
    return str(r.headers["location"]).removeprefix("http://testserver")


def test_the_code_flow_with_pkce_signs_the_user_in(portal: TestClient) -> None:
    authorize = _to_realm(portal)
    query = parse_qs(urlparse(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["client_id"] == ["citybrain-portal"] and query["state"] and query["nonce"]
    back = _callback(authorize, "parkeasy-admin")
    r = portal.get(back, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/access"
    page = portal.get("/access").text
    assert "parkeasy-admin · ParkEasy Technology Co." in page
    assert "/keys" in page  # tenant-admin: every scope, as the API maps the role
    # The code is spent: replaying the callback does not sign anyone in again.
    portal.cookies.clear()
    replay = portal.get(back)
    assert replay.status_code == 401


def test_a_callback_with_another_state_is_refused(portal: TestClient) -> None:
    back = _callback(_to_realm(portal), "parkeasy-admin")
    r = portal.get(back.replace("state=", "state=x"))
    assert r.status_code == 401 and "Sign out" not in r.text


def test_a_callback_in_another_browser_is_refused(portal: TestClient) -> None:
    back = _callback(_to_realm(portal), "parkeasy-admin")
    portal.cookies.clear()  # the code arrives in a session that never started a sign-in
    assert portal.get(back).status_code == 401


def test_a_wrong_password_never_reaches_the_portal(portal: TestClient) -> None:
    r = _log_in(_to_realm(portal), "parkeasy-admin", password="wrong")
    assert r.status_code == 401 and "Invalid username or password." in r.text


def test_users_of_the_realm_without_a_platform_role_are_refused(portal: TestClient) -> None:
    r = portal.get(_callback(_to_realm(portal), "no-roles"))
    assert r.status_code == 403 and "Sign out" not in portal.get("/").text


def test_the_realm_requires_pkce_of_the_portal(provider: str) -> None:
    """Without a code challenge the realm refuses to start the flow at all."""
    discovery = httpx.get(f"{provider}/realms/citybrain/.well-known/openid-configuration").json()
    r = httpx.get(
        discovery["authorization_endpoint"],
        params={
            "client_id": "citybrain-portal",
            "response_type": "code",
            "redirect_uri": CALLBACK,
            "scope": "openid",
            "state": "s",
        },
    )
    assert r.status_code == 303
    assert "requires+PKCE" in r.headers["location"] and "code=" not in r.headers["location"]
