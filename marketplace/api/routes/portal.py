"""The web portal at ``/``: its front (installed on the app by :func:`install`), sign-in and
sign-out, and the language switch. The pages themselves are in ``portal_catalog`` (browse,
search, product pages, try it, access requests), ``portal_account`` (the approval inbox, API
keys, usage) and ``portal_billing`` (invoices, statements, the audit log, the operator's billing
run); what they share is in ``portal_common``.

Sign-in comes two ways: a city account through the realm (OIDC authorization code flow with
PKCE, when ``CITYBRAIN_OIDC__SERVER_URL`` is set), or an API key pasted into a form (for
tenants without realm accounts). Either way the credential is kept in the server-side session
and every page resolves it again, exactly as the API resolves a header.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from marketplace.api.deps import principal_for_token
from marketplace.api.routes import portal_account, portal_billing, portal_catalog
from marketplace.api.routes.portal_common import (
    FormDep,
    PortalRoute,
    Visit,
    VisitDep,
    field_text,
    make_state,
    page,
    platform_session,
    redirect,
    safe_next,
)
from marketplace.config import Settings
from marketplace.context import Principal
from marketplace.errors import InvalidInputError, UnavailableError
from marketplace.portal import STATIC_DIR
from marketplace.portal.i18n import LANG_COOKIE, LANGUAGES
from marketplace.portal.signin import CALLBACK_PATH

STATIC_PATH = "/static/portal"

router = APIRouter(route_class=PortalRoute, include_in_schema=False)


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the portal on ``app`` (its pages, its stylesheet) unless ``portal.enabled`` is off."""
    if not settings.portal.enabled:
        return
    app.state.portal = make_state(settings)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="portal-static")
    for module in (portal_catalog, portal_account, portal_billing):
        app.include_router(module.router)
    app.include_router(router)


NextQuery = Annotated[str | None, Query(max_length=500)]


def check_credential(visit: Visit, credential: str) -> Principal:
    """Who a credential names, read outside the visit's binding: that session is bound to the
    anonymous visitor already, and row-level security would hide the key's row from it."""
    with platform_session(visit) as session:
        principal = principal_for_token(visit.request, credential)
        session.commit()  # a last-used stamp, if the check made one
        return principal


@router.get("/signin")
def signin_page(visit: VisitDep, next: NextQuery = None) -> Response:
    """The sign-in page: a city account (OIDC) or an API key."""
    return page(
        visit,
        "signin.html",
        next=safe_next(next),
        oidc=visit.state.signin is not None,
    )


@router.get("/signin/oidc")
def signin_oidc(visit: VisitDep, next: NextQuery = None) -> Response:
    """Start the realm's authorization code flow (PKCE): to the realm's login page."""
    signin = visit.state.signin
    if signin is None:
        raise UnavailableError(visit.t("signin.oidc_off"))
    cfg = visit.state.settings.portal
    base = (cfg.public_url or str(visit.request.base_url)).rstrip("/")
    url, pending = signin.start(base + CALLBACK_PATH, safe_next(next))
    visit.web.pending_login = pending
    return redirect(visit, url)


@router.get(CALLBACK_PATH)
def signin_callback(
    visit: VisitDep,
    code: Annotated[str | None, Query(max_length=2000)] = None,
    state: Annotated[str | None, Query(max_length=500)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The realm sends the browser back here with a code: exchange it, then sign in."""
    signin = visit.state.signin
    if signin is None:
        raise UnavailableError(visit.t("signin.oidc_off"))
    pending, visit.web.pending_login = visit.web.pending_login, None
    tokens = signin.finish(pending, state=state, code=code, error=error)
    # The API's own check of the token: issuer, audience, roles, tenant.
    principal = check_credential(visit, tokens.access_token)
    visit.replace_session(
        auth_kind="oidc",
        credential=tokens.access_token,
        refresh_token=tokens.refresh_token,
        display=principal.actor.removeprefix("user:"),
    )
    visit.web.flash("ok", visit.t("signin.welcome", who=visit.web.display))
    return redirect(visit, safe_next(pending["next"] if pending else None))


@router.post("/signin/key")
def signin_key(visit: VisitDep, form: FormDep) -> Response:
    """Sign in with an API key (kept in the server-side session, never in a cookie)."""
    key = field_text(form, "api_key")
    if not key:
        raise InvalidInputError(visit.t("signin.key_missing"))
    principal = check_credential(visit, key)
    visit.replace_session(
        auth_kind="key", credential=key, refresh_token=None, display=f"key:{principal.key_id}"
    )
    visit.web.flash("ok", visit.t("signin.welcome", who=visit.web.display))
    return redirect(visit, safe_next(field_text(form, "next")))


@router.post("/signout")
def signout(visit: VisitDep, form: FormDep) -> Response:
    """Sign out: the session and its credential are dropped."""
    visit.replace_session(auth_kind=None, credential=None, refresh_token=None, display=None)
    visit.web.flash("ok", visit.t("signin.bye"))
    return redirect(visit, "/")


@router.get("/lang/{lang}")
def switch_language(visit: VisitDep, lang: str, next: NextQuery = None) -> Response:
    """Switch the portal's language (a cookie remembers it)."""
    response = redirect(visit, safe_next(next))
    if lang in LANGUAGES:
        response.set_cookie(
            LANG_COOKIE, lang, max_age=365 * 86400, httponly=True, samesite="lax", path="/"
        )
    return response
