"""The portal's pages through the app, on SQLite and on PostgreSQL (where row-level security
binds every page's queries to the visitor's tenant): what each visitor sees is what
the API answers them, forms need their CSRF token, and every action lands in the domain."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from pypdf import PdfReader
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from billing.tables import usage_event
from marketplace.api.app import create_app
from marketplace.config import Settings
from marketplace.db import transaction
from marketplace.seed import seed_demo_city
from marketplace.tables import AuditEntry, Grant, Product, Tenant
from model_store import BlobStore
from tests.utils.portal import bill_last_month, csrf_of
from tests.utils.usage import make_usage_event

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends

RESTRICTED = "city-management.manhole-covers"
SECRET = "traffic-police.signal-timing-plans"
MODEL = "traffic-police.flow-smoother"
HANDLE_LINK = re.compile(r'<h3><a href="/catalog/([a-z0-9.-]+)">')


@dataclass
class Web:
    client: TestClient
    keys: dict[str, str]
    session_factory: sessionmaker[Session]
    csrf: str = ""

    def sign_in(self, key_or_slug: str | None) -> None:
        """A new visitor (fresh cookies), signed in with a key (or a tenant's demo key)."""
        self.client.cookies.clear()
        self.csrf = csrf_of(self.client.get("/signin").text)
        if key_or_slug is None:
            return
        key = self.keys.get(key_or_slug, key_or_slug)
        r = self.post("/signin/key", {"api_key": key, "next": "/"})
        assert r.status_code == 200 and "Sign out" in r.text, r.text[-2000:]
        self.csrf = csrf_of(r.text)  # signing in made a new session (and token)

    def post(self, path: str, data: dict[str, object]) -> object:
        return self.client.post(path, data={"csrf": self.csrf, **data})

    def handles(self, path: str = "/") -> set[str]:
        r = self.client.get(path)
        assert r.status_code == 200
        return set(HANDLE_LINK.findall(r.text))


@pytest.fixture
def web(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[Web]:
    with transaction(session_factory) as s:
        assert settings.model_store.artifact_url is not None
        keys = seed_demo_city(s, blobs=BlobStore(settings.model_store.artifact_url)).keys
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield Web(c, keys, session_factory)


# --------------------------------------------------------------------------- visibility


@pytest.mark.parametrize("who", [None, "parkeasy", "tourism", "traffic-police", "data-bureau"])
def test_the_catalog_shows_exactly_what_the_api_shows(web: Web, who: str | None) -> None:
    headers = {"Authorization": f"Bearer {web.keys[who]}"} if who else {}
    api = web.client.get("/api/v1/catalog/search?per_page=100", headers=headers).json()
    expected = {f"{p['owner']}.{p['name']}" for p in api["data"]}
    assert len(expected) <= 12  # one portal page holds them all
    web.sign_in(who)
    assert web.handles("/") == expected
    # The facets count the same listings (tier filter: the API's answer again).
    for tier in ("public", "restricted", "confidential", "secret"):
        api_tier = web.client.get(f"/api/v1/catalog/search?tier={tier}", headers=headers).json()
        assert web.handles(f"/?tier={tier}") == {
            f"{p['owner']}.{p['name']}" for p in api_tier["data"]
        }


def test_search_finds_by_words(web: Web) -> None:
    web.sign_in("parkeasy")
    assert web.handles("/?q=manhole") == {RESTRICTED}
    web.sign_in(None)
    assert web.handles("/?q=manhole") == set()


@pytest.mark.parametrize(
    ("who", "handle"),
    [(None, RESTRICTED), ("parkeasy", SECRET), ("parkeasy", "traffic-police.violation-records")],
)
def test_a_product_one_may_not_see_reads_as_a_missing_one(
    web: Web, who: str | None, handle: str
) -> None:
    web.sign_in(who)
    hidden = web.client.get(f"/catalog/{handle}")
    missing = web.client.get("/catalog/traffic-police.no-such-product")
    assert hidden.status_code == missing.status_code == 404
    strip = re.compile(r'value="[^"]+"|Request id: \w+|key:\w+')
    assert strip.sub("", hidden.text).replace(handle, "H") == strip.sub("", missing.text).replace(
        "traffic-police.no-such-product", "H"
    )


def test_a_product_page_shows_its_card_and_price(web: Web) -> None:
    web.sign_in(None)
    r = web.client.get(f"/catalog/{MODEL}")
    assert r.status_code == 200
    assert "Inputs and outputs" in r.text and "<code>flow</code>" in r.text
    assert "Not billed" in r.text  # the demo model has no plan yet
    with transaction(web.session_factory) as s:
        bill_last_month(s, consumer="parkeasy", handle=MODEL, calls=1, unit_price="0.05")
    assert "0.05 CNY per call" in web.client.get(f"/catalog/{MODEL}").text


# ------------------------------------------------------------------- sessions and forms


def test_the_session_cookie_is_httponly_lax_and_holds_no_credential(web: Web) -> None:
    web.client.cookies.clear()
    r = web.client.get("/signin")
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower() and "Path=/" in cookie
    web.csrf = csrf_of(r.text)
    r = web.post("/signin/key", {"api_key": web.keys["parkeasy"], "next": "/keys"})
    assert r.status_code == 200 and "API keys" in r.text
    jar = "; ".join(f"{c.name}={c.value}" for c in web.client.cookies.jar)
    assert web.keys["parkeasy"] not in jar and web.keys["parkeasy"].split("_")[2] not in jar
    assert "Content-Security-Policy" in r.headers and r.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("token", [None, "forged", "another-session"])
def test_a_form_without_this_sessions_csrf_token_is_refused(web: Web, token: str | None) -> None:
    web.sign_in(None)
    other = TestClient(web.client.app)
    other_token = csrf_of(other.get("/signin").text)
    data = {"api_key": web.keys["parkeasy"]}
    if token is not None:
        data["csrf"] = other_token if token == "another-session" else token
    r = web.client.post("/signin/key", data=data)
    assert r.status_code == 403 and "form has expired" in r.text
    assert "Sign out" not in web.client.get("/").text
    with transaction(web.session_factory) as s:
        denied = s.scalars(select(AuditEntry).where(AuditEntry.action == "access.deny")).all()
    assert any(e.detail.get("reason") == "csrf" for e in denied)


def test_a_tampered_cookie_is_a_new_anonymous_visitor(web: Web) -> None:
    web.sign_in("parkeasy")
    value = web.client.cookies.get("cb_session")
    assert value is not None
    sid, _, sig = value.rpartition(".")
    web.client.cookies.clear()
    web.client.cookies.set("cb_session", f"{sid}x.{sig}")
    r = web.client.get("/")
    assert "Sign out" not in r.text and "cb_session=" in r.headers["set-cookie"]


def test_signing_out_ends_the_session(web: Web) -> None:
    web.sign_in("parkeasy")
    before = web.client.cookies.get("cb_session")
    r = web.post("/signout", {})
    assert r.status_code == 200 and "You have signed out." in r.text
    assert web.client.cookies.get("cb_session") != before
    web.client.cookies.clear()
    web.client.cookies.set("cb_session", str(before))
    assert "Sign out" not in web.client.get("/").text


def test_a_bad_key_does_not_sign_in(web: Web) -> None:
    web.sign_in(None)
    r = web.post("/signin/key", {"api_key": "cbk_000000000000_nope-nope-nope-nope-nope"})
    assert r.status_code == 401
    assert "Sign out" not in web.client.get("/").text


def test_pages_for_signed_in_visitors_send_anonymous_ones_to_sign_in(web: Web) -> None:
    web.sign_in(None)
    for path in ("/keys", "/access", "/usage?period=2026-11", "/billing", "/operator"):
        r = web.client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/signin?next=")


def test_pages_beyond_a_keys_scopes_answer_403(web: Web, settings: Settings) -> None:
    reader = _key(web, "parkeasy", ["catalog:read"])
    web.sign_in(reader)
    assert web.client.get("/keys").status_code == 403
    assert web.client.get("/usage").status_code == 403
    assert web.client.get("/operator").status_code == 403
    assert "/keys" not in web.client.get("/").text  # and the menu does not offer them


def _key(web: Web, slug: str, scopes: list[str]) -> str:
    from marketplace.keys.service import create_key
    from marketplace.tenants.service import get_tenant_by_slug

    with transaction(web.session_factory) as s:
        return create_key(s, tenant=get_tenant_by_slug(s, slug), scopes=scopes, actor="test").token


# -------------------------------------------------------------------------------- keys


def test_keys_are_created_shown_once_rotated_and_revoked(web: Web) -> None:
    web.sign_in("parkeasy")
    r = web.post("/keys", {"name": "ci", "scopes": ["catalog:read", "infer"], "expires_in": "30d"})
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    token = re.search(r'value="(cbk_[0-9a-f]{12}_[^"]+)"', r.text)
    assert token is not None
    secret = token.group(1)
    key_id = secret.split("_")[1]
    assert secret not in web.client.get("/keys").text  # shown once
    me = web.client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200 and sorted(me.json()["scopes"]) == ["catalog:read", "infer"]
    rotated = web.post(f"/keys/{key_id}/rotate", {})
    new = re.search(r'value="(cbk_[0-9a-f]{12}_[^"]+)"', rotated.text)
    assert new is not None and new.group(1) != secret and new.group(1).startswith(f"cbk_{key_id}_")
    revoked = web.post(f"/keys/{key_id}/revoke", {})
    assert revoked.status_code == 200 and f"Key {key_id} revoked" in revoked.text
    gone = web.client.get("/api/v1/me", headers={"Authorization": f"Bearer {new.group(1)}"})
    assert gone.status_code == 401


def test_another_tenants_key_cannot_be_touched(web: Web) -> None:
    web.sign_in("tourism")
    tourism_key = web.keys["tourism"].split("_")[1]
    web.sign_in("parkeasy")
    assert web.post(f"/keys/{tourism_key}/revoke", {}).status_code == 404
    assert (
        web.client.get(
            "/api/v1/me", headers={"Authorization": f"Bearer {web.keys['tourism']}"}
        ).status_code
        == 200
    )


def test_revoking_the_key_one_signed_in_with_ends_the_sign_in(web: Web) -> None:
    key = _key(web, "parkeasy", ["admin", "catalog:read"])
    web.sign_in(key)
    r = web.post(f"/keys/{key.split('_')[1]}/revoke", {})
    assert "Your sign-in has ended" in r.text and "Sign out" not in r.text


# ------------------------------------------------------------------------------ access


def test_request_and_approval_make_a_grant(web: Web) -> None:
    web.sign_in("parkeasy")
    r = web.post(
        f"/catalog/{RESTRICTED}/request-access",
        {"purpose": "Plan routes", "scopes": ["data:read"], "duration_days": "30"},
    )
    assert r.status_code == 200 and "Pending" in r.text
    # A second request while one is pending is a conflict, shown as a page.
    again = web.post(
        f"/catalog/{RESTRICTED}/request-access", {"purpose": "x", "scopes": ["data:read"]}
    )
    assert again.status_code == 409
    # Only the owner decides a restricted product's requests: parkeasy has no buttons.
    assert "Approve" not in web.client.get("/access").text
    web.sign_in("city-management")
    inbox = web.client.get("/access").text
    request_id = re.search(r'action="/access/(ar_[0-9a-f]+)/decide"', inbox)
    assert request_id is not None and "Plan routes" in inbox
    path = f"/access/{request_id.group(1)}/decide"
    assert web.post(path, {"decision": "approve", "reason": " "}).status_code == 422
    done = web.post(path, {"decision": "approve", "reason": "pilot"})
    assert done.status_code == 200 and "the grant is in force" in done.text
    with transaction(web.session_factory) as s:
        grant = s.scalars(select(Grant)).one()
        assert grant.scopes == ["data:read"] and grant.tenant.slug == "parkeasy"
    web.sign_in("parkeasy")
    assert "You hold a grant until" in web.client.get(f"/catalog/{RESTRICTED}").text


def test_a_developer_cannot_request_a_confidential_product(web: Web) -> None:
    web.sign_in("parkeasy")
    r = web.post(
        "/catalog/traffic-police.violation-records/request-access",
        {"purpose": "x", "scopes": ["data:read"]},
    )
    assert r.status_code == 404  # invisible to a developer, exactly as the API answers


def test_decisions_on_others_requests_are_refused(web: Web) -> None:
    web.sign_in("parkeasy")
    web.post(f"/catalog/{RESTRICTED}/request-access", {"purpose": "p", "scopes": ["data:read"]})
    web.sign_in("city-management")
    rid = re.search(r"/access/(ar_[0-9a-f]+)/decide", web.client.get("/access").text)
    assert rid is not None
    web.sign_in("tourism")
    r = web.post(f"/access/{rid.group(1)}/decide", {"decision": "approve", "reason": "mine!"})
    assert r.status_code == 404


# ------------------------------------------------------------------------------- try it


def test_try_it_runs_the_model_through_the_gateway(web: Web) -> None:
    web.sign_in(None)
    page = web.client.get(f"/catalog/{MODEL}").text
    assert "Sign in to try it" in page
    anonymous = web.post(f"/catalog/{MODEL}/try", {"request": "{}"})
    assert anonymous.status_code == 200 and "Sign in" in anonymous.text  # sent to sign in
    web.sign_in("parkeasy")
    body = '{"inputs":[{"name":"flow","datatype":"FP32","shape":[1,8],"data":[10,30,12,28,14,35,11,29]}]}'
    r = web.post(f"/catalog/{MODEL}/try", {"request": body})
    assert (
        r.status_code == 200 and "&#34;smoothed&#34;" in r.text and "The call failed" not in r.text
    )
    bad = web.post(f"/catalog/{MODEL}/try", {"request": '{"inputs": []}'})
    assert "The call failed" in bad.text and "400" in bad.text


# ------------------------------------------------------------------------------- usage


def _usage(web: Web, slug: str, handle: str, n: int) -> None:
    with transaction(web.session_factory) as s:
        tenant = s.scalars(select(Tenant).where(Tenant.slug == slug)).one()
        name = handle.split(".")[1]
        product = s.scalars(select(Product).where(Product.name == name)).one()
        s.execute(
            insert(usage_event),
            [
                make_usage_event(
                    f"u-{slug}-{i}",
                    tenant_id=tenant.id,
                    key_id=None,
                    product=handle,
                    product_id=product.id,
                    version=1,
                ).to_row()
                for i in range(n)
            ],
        )


def test_usage_is_charted_per_day_and_product_for_the_tenant_only(web: Web) -> None:
    _usage(web, "parkeasy", MODEL, 3)
    _usage(web, "tourism", "environment.air-quality", 2)
    web.sign_in("parkeasy")
    r = web.client.get("/usage")
    assert (
        r.status_code == 200 and '<svg xmlns="http://www.w3.org/2000/svg" class="chart"' in r.text
    )
    assert MODEL in r.text and "environment.air-quality" not in r.text
    assert re.search(r'<td class="num">3</td>', r.text)
    web.sign_in("data-bureau")  # the operator sees every tenant's
    assert "environment.air-quality" in web.client.get("/usage").text
    assert "environment.air-quality" not in web.client.get("/usage?tenant=parkeasy").text


# ----------------------------------------------------------------------------- billing


def test_the_operator_closes_a_month_and_tenants_read_their_documents(web: Web) -> None:
    with transaction(web.session_factory) as s:
        month = bill_last_month(s, consumer="parkeasy", handle=MODEL, calls=40)
    web.sign_in("parkeasy")
    assert web.post("/operator/billing-run", {"period": str(month)}).status_code == 403
    web.sign_in("data-bureau")
    page = web.client.get("/operator").text
    assert f'value="{month}"' in page  # last month is offered
    r = web.post("/operator/billing-run", {"period": str(month)})
    assert r.status_code == 200 and f"{month} closed: 1 document issued." in r.text
    again = web.post("/operator/billing-run", {"period": str(month)})
    assert "was closed already (1 document)" in again.text
    not_over = web.post("/operator/billing-run", {"period": str(month.next())})
    assert not_over.status_code == 409 and "is not over" in not_over.text
    report = web.client.get(f"/operator/report/{month}.pdf")
    assert report.headers["content-type"] == "application/pdf"
    assert (
        f"CityBrain billing report {month}"
        in PdfReader(io.BytesIO(report.content)).pages[0].extract_text()
    )
    web.sign_in("parkeasy")
    listing = web.client.get("/billing").text
    doc = re.search(r'href="/billing/invoice/(\d+)"', listing)
    assert doc is not None and "2.00 CNY" in listing
    pdf = web.client.get(f"/billing/invoice/{doc.group(1)}/pdf")
    assert (
        pdf.status_code == 200
        and "2.00 CNY" in PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
    )
    web.sign_in("tourism")  # another tenant's invoice reads as a missing one
    assert web.client.get(f"/billing/invoice/{doc.group(1)}").status_code == 404
    assert web.client.get(f"/billing/invoice/{doc.group(1)}/pdf").status_code == 404


def test_the_audit_page_is_the_apis_audit_log(web: Web) -> None:
    web.sign_in("parkeasy")
    web.post("/keys", {"name": "audited", "scopes": ["catalog:read"]})
    r = web.client.get("/audit?action=key.create")
    assert r.status_code == 200 and "key.create" in r.text and "tourism" not in r.text
    web.sign_in("data-bureau")
    everyone = web.client.get("/audit").text
    assert SECRET not in everyone  # secret products stay out of the operator's view


# ------------------------------------------------------------------------------ language


def test_chinese_for_a_chinese_browser_and_the_switch_wins(web: Web) -> None:
    web.client.cookies.clear()
    r = web.client.get("/", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert '<html lang="zh-Hans">' in r.text and "数据与模型目录" in r.text and "公开" in r.text
    switched = web.client.get("/lang/en?next=/catalog/" + MODEL, follow_redirects=False)
    assert switched.headers["location"] == f"/catalog/{MODEL}"
    r = web.client.get("/", headers={"Accept-Language": "zh-CN"})
    assert '<html lang="en">' in r.text and "Data and model catalog" in r.text
    evil = web.client.get("/lang/zh?next=//evil.example/x", follow_redirects=False)
    assert evil.headers["location"] == "/"
