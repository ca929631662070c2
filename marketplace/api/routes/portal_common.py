"""What every portal page shares: the visit (session, signed-in caller, language), rendering,
CSRF-checked forms, and errors shown as pages.

A :class:`Visit` is made per request by :func:`get_visit`: the server-side session the signed
cookie names (a new one for a new visitor), the caller its credential resolves to — through
``deps.principal_for_token``, the API's own path, so a revoked key or an expired realm token
stops working on the portal at once, as it does on the API — and the visitor's language. The
database session is then bound to the caller's tenant (row-level security on PostgreSQL), as
the API binds it.

Every POST carries the session's CSRF token (:func:`posted_form`). Domain errors raised by a
page become an error page with the error's status (:class:`PortalRoute`), denials audited as
the API audits them; a page that needs a signed-in visitor sends an anonymous one to sign in.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from marketplace.api.deps import SessionDep, bind_caller, principal_for_token
from marketplace.api.errors import SERVICE_ERRORS, audit_denial
from marketplace.config import Settings
from marketplace.constants import Scope
from marketplace.context import Caller, Principal, current_request_id
from marketplace.errors import (
    CityBrainError,
    ForbiddenError,
    InvalidInputError,
    UnauthenticatedError,
)
from marketplace.portal import TEMPLATES_DIR
from marketplace.portal.i18n import LANG_COOKIE, Translator, choose_language
from marketplace.portal.sessions import COOKIE_NAME, PortalSession, SessionStore
from marketplace.portal.signin import OIDCSignIn
from marketplace.tables import Tenant


class SignInRequired(Exception):
    """The page needs a signed-in visitor: send this one to the sign-in page, and back to
    ``back`` (default: the page asked for, if it was a GET) after signing in."""

    def __init__(self, back: str | None = None) -> None:
        super().__init__("sign-in required")
        self.back = back


@dataclass
class PortalState:
    """The portal's per-app parts (``app.state.portal``)."""

    settings: Settings
    store: SessionStore
    templates: Environment
    signin: OIDCSignIn | None


def make_state(settings: Settings) -> PortalState:
    cfg = settings.portal
    secret = (
        cfg.session_secret.get_secret_value().encode()
        if cfg.session_secret is not None
        else secrets.token_bytes(32)  # per process: sessions end with it (see PortalSettings)
    )
    templates = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html", "svg"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    templates.filters["num"] = plain_number
    return PortalState(
        settings=settings,
        store=SessionStore(secret, idle_s=cfg.session_idle_s, max_sessions=cfg.max_sessions),
        templates=templates,
        signin=OIDCSignIn(settings.oidc, cfg) if settings.oidc.server_url else None,
    )


def plain_number(value: Decimal | int | float) -> str:
    """A quantity as people write it: ``40``, ``0.05``, ``2.5`` (never ``4E+1``)."""
    d = value if isinstance(value, Decimal) else Decimal(str(value))
    return format(d.normalize(), "f")


def portal_state(request: Request) -> PortalState:
    state: PortalState = request.app.state.portal
    return state


@dataclass
class Visit:
    """One request to the portal: who, in which language, with which session."""

    request: Request
    db: Session
    web: PortalSession
    caller: Caller
    t: Translator
    set_cookie: bool = False
    tenant_name: str | None = None
    # Response headers to add (e.g. Cache-Control for a page that shows a secret).
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> PortalState:
        return portal_state(self.request)

    def signed_in(self, back: str | None = None) -> Principal:
        """The signed-in caller, or SignInRequired (returning to ``back`` afterwards)."""
        if self.caller is None:
            raise SignInRequired(back)
        return self.caller

    def require(self, scope: str, back: str | None = None) -> Principal:
        """The signed-in caller holding ``scope`` (a 403 page otherwise, as the API's 403)."""
        principal = self.signed_in(back)
        if scope not in principal.scopes:
            raise ForbiddenError(self.t("error.scope", scope=scope), scope=scope)
        return principal

    def operator(self) -> Principal:
        principal = self.signed_in()
        if not principal.is_operator:
            raise ForbiddenError(self.t("error.operator_only"))
        return principal

    def replace_session(self, **changes: Any) -> None:
        """Sign in or out: a new session id (and CSRF token) with ``changes`` applied."""
        self.web = self.state.store.renew(self.web, **changes)
        self.set_cookie = True

    def nav(self) -> list[tuple[str, str]]:
        """The main navigation: (path, label) for what this visitor may open."""
        items = [("/", self.t("nav.catalog"))]
        c = self.caller
        if c is not None:
            items.append(("/access", self.t("nav.access")))
            if Scope.ADMIN.value in c.scopes:
                items.append(("/keys", self.t("nav.keys")))
            if Scope.BILLING_READ.value in c.scopes:
                items += [("/usage", self.t("nav.usage")), ("/billing", self.t("nav.billing"))]
            if Scope.ADMIN.value in c.scopes:
                items.append(("/audit", self.t("nav.audit")))
            if c.is_operator:
                items.append(("/operator", self.t("nav.operator")))
        return items


def _resolve(request: Request, db: Session, state: PortalState, web: PortalSession) -> Caller:
    """The caller the session's credential names; a credential that no longer works ends the
    sign-in (an expired realm token is first renewed with the refresh token)."""
    if web.credential is None:
        return None
    try:
        return principal_for_token(request, web.credential)
    except UnauthenticatedError as e:
        reason = e.extra.get("reason")
        if web.auth_kind == "oidc" and web.refresh_token and state.signin and reason == "expired":
            try:
                tokens = state.signin.refresh(web.refresh_token)
                web.credential, web.refresh_token = tokens.access_token, tokens.refresh_token
                return principal_for_token(request, web.credential)
            except CityBrainError:
                pass
    except ForbiddenError:
        pass
    web.credential = web.refresh_token = web.auth_kind = web.display = None
    web.flash("error", Translator(web_lang(request))("signin.ended"))
    return None


def web_lang(request: Request) -> str:
    return choose_language(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))


def get_visit(request: Request, db: SessionDep) -> Visit:
    state = portal_state(request)
    web = state.store.load(request.cookies.get(COOKIE_NAME))
    fresh = web is None
    if web is None:
        web = state.store.new()
    caller = _resolve(request, db, state, web)
    request.state.principal = caller  # the access log's "caller"
    bind_caller(db, caller)
    tenant = db.get(Tenant, caller.tenant_id) if caller is not None else None
    visit = Visit(
        request=request,
        db=db,
        web=web,
        caller=caller,
        t=Translator(web_lang(request)),
        set_cookie=fresh,
        tenant_name=tenant.name if tenant else None,
    )
    request.state.visit = visit
    return visit


VisitDep = Annotated[Visit, Depends(get_visit)]


async def posted_form(request: Request, visit: VisitDep) -> FormData:
    """The POSTed form, once its CSRF token matched the session's (a 403 page otherwise)."""
    form = await request.form()
    token = form.get("csrf")
    if not visit.web.csrf_ok(token if isinstance(token, str) else None):
        raise ForbiddenError(visit.t("error.csrf"), reason="csrf")
    return form


FormDep = Annotated[FormData, Depends(posted_form)]


@contextmanager
def platform_session(visit: Visit) -> Iterator[Session]:
    """A session outside the visitor's tenant role, for the platform's own work on the
    visitor's behalf once it is allowed (checking a credential at sign-in, the operator's
    billing run). On SQLite, which has no row-level security and one writer at a time (a
    second session would wait on this request's lock), the visit's own session."""
    if visit.state.settings.is_sqlite:
        yield visit.db
        return
    session: Session = visit.request.app.state.session_factory()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def field_text(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else default


def field_list(form: FormData, name: str) -> list[str]:
    return [v for v in form.getlist(name) if isinstance(v, str)]


# ----------------------------------------------------------------------------- responses


_SECURITY_HEADERS = {
    # Everything the pages load is the portal's own; no script runs at all.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def finish(visit: Visit, response: Response) -> Response:
    """Security headers, and the session cookie when the session is new or was replaced."""
    for name, value in {**_SECURITY_HEADERS, **visit.headers}.items():
        response.headers[name] = value
    if visit.caller is not None:
        response.headers.setdefault("Cache-Control", "no-store")
    if visit.set_cookie:
        secure = visit.state.settings.portal.secure_cookie
        if secure is None:
            secure = visit.request.url.scheme == "https"
        response.set_cookie(
            COOKIE_NAME,
            visit.state.store.cookie_value(visit.web),
            httponly=True,
            samesite="lax",
            secure=secure,
            path="/",
        )
    return response


def page(visit: Visit, template: str, *, status: int = 200, **context: Any) -> Response:
    """A page rendered in the visitor's language."""
    html = visit.state.templates.get_template(template).render(
        t=visit.t,
        visit=visit,
        caller=visit.caller,
        csrf=visit.web.csrf,
        flashes=visit.web.take_flashes(),
        path=visit.request.url.path,
        query=lambda **kw: urlencode({k: v for k, v in kw.items() if v not in (None, "")}),
        **context,
    )
    return finish(visit, HTMLResponse(html, status_code=status))


def redirect(visit: Visit, to: str) -> Response:
    """303 See Other: the browser GETs ``to`` (after a form, so a reload sends nothing again)."""
    return finish(visit, RedirectResponse(to, status_code=303))


def safe_next(value: str | None, default: str = "/") -> str:
    """A local path to return to (never another site: no scheme, no //host, no backslash)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    return value


# ------------------------------------------------------------------------------ errors


def _fallback_visit(request: Request) -> Visit | None:
    visit: Visit | None = getattr(request.state, "visit", None)
    return visit


async def error_page(request: Request, exc: Exception) -> Response:
    """A domain error as a page with its status; denials audited as the API audits them."""
    status: int = getattr(exc, "status", 500)
    code: str = getattr(exc, "code", "InternalError")
    message: str = getattr(exc, "message", "")
    extra: dict[str, Any] = getattr(exc, "extra", {}) or {}
    if status >= 500 and code in ("InternalError", "InferenceFailed"):
        message = ""
    visit = _fallback_visit(request)
    if visit is not None:
        # Nothing of a failed action is kept; and the denial's audit entry is written in a
        # session of its own, which on SQLite would wait for this one's lock.
        await run_in_threadpool(visit.db.rollback)
    if status in (401, 403) or extra.get("denied"):
        await run_in_threadpool(audit_denial, request, status, code, extra)
    if visit is None:  # failed before the visit was made (e.g. the database is down)
        t = Translator(web_lang(request))
        body = f"<!doctype html><title>{status}</title><p>{t('error.generic')}</p>"
        return HTMLResponse(body, status_code=status)
    return page(
        visit,
        "error.html",
        status=status,
        status_code=status,
        code=code,
        message=message,
        request_id=current_request_id(),
    )


class PortalRoute(APIRoute):
    """A portal page: errors become pages, a needed sign-in becomes a redirect to it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired as e:
                target = e.back or "/"
                if e.back is None and request.method == "GET":
                    query = request.url.query
                    target = request.url.path + (f"?{query}" if query else "")
                to = "/signin?" + urlencode({"next": target})
                visit = _fallback_visit(request)
                if visit is None:
                    return RedirectResponse(to, status_code=303)
                return redirect(visit, to)
            except SERVICE_ERRORS as e:
                return await error_page(request, e)
            except RequestValidationError as e:
                problems = e.errors()
                message = str(problems[0].get("msg", "")) if problems else ""
                return await error_page(request, InvalidInputError(message))

        return guarded
