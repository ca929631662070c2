"""FastAPI dependencies: settings, database session, caller, scope checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session

from marketplace.auth.oidc import OIDCVerifier, looks_like_jwt
from marketplace.config import Settings
from marketplace.constants import API_KEY_HEADER
from marketplace.context import Caller, Principal
from marketplace.db import ANONYMOUS_TENANT, set_tenant_context
from marketplace.errors import ForbiddenError, UnauthenticatedError
from marketplace.keys.service import TOUCHED, authenticate_token


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    session: Session = request.app.state.session_factory()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]


def get_unbound_session(
    request: Request, session: SessionDep, settings: SettingsDep
) -> Iterator[Session]:
    """A session outside the tenant role on PostgreSQL (the request's own on SQLite, which has
    no row-level security, and where a second session would wait on the first's lock).

    For queries that apply the tier table themselves: catalog listing and search
    (``catalog.policy.visible_clause``, checked by the cross-tenant probe) — under row-level
    security PostgreSQL may not evaluate a full-text match or tag containment before the policy
    (those operators are not leakproof) and would test the policy on every product: 100+ ms at
    100,000 products instead of a few; and the names of secret products to redact from what
    the operator reads, which the policies rightly hide from the operator's own session.
    """
    if settings.is_sqlite:  # no row-level security there: the request's own session
        yield session
        return
    unbound: Session = request.app.state.session_factory()
    try:
        yield unbound
    finally:
        unbound.rollback()
        unbound.close()


UnboundSessionDep = Annotated[Session, Depends(get_unbound_session)]


def presented_token(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise UnauthenticatedError("Authorization header must be 'Bearer <token or API key>'")
        return value.strip()
    key = request.headers.get(API_KEY_HEADER)
    return key.strip() if key else None


def _oidc_verifier(request: Request, settings: Settings) -> OIDCVerifier | None:
    """The app's verifier of portal users' tokens, made on first use when OIDC is configured."""
    if not settings.oidc.server_url:
        return None
    verifier: OIDCVerifier | None = getattr(request.app.state, "oidc_verifier", None)
    if verifier is None:
        verifier = OIDCVerifier(settings.oidc)
        request.app.state.oidc_verifier = verifier
    return verifier


def get_caller(request: Request, session: SessionDep, settings: SettingsDep) -> Caller:
    """The authenticated principal, or None for an anonymous caller.

    A bearer token is a portal user's realm JWT when OIDC is configured and it looks like one,
    else an API key; API keys keep working beside tokens. Bad credentials get 401.
    """
    return caller_for_token(request, session, settings, presented_token(request))


def caller_for_token(
    request: Request, session: Session, settings: Settings, token: str | None
) -> Caller:
    """``get_caller`` for a token found elsewhere (CKAN clients send a bare key)."""
    if token is None:
        set_tenant_context(session, tenant_id=ANONYMOUS_TENANT)
        return None
    verifier = _oidc_verifier(request, settings)
    if verifier is not None and looks_like_jwt(token):
        principal = verifier.principal(session, token)
    else:
        principal = _key_principal(session, token, settings)
    request.state.principal = principal
    # From here on the database enforces the tenant too (row-level security on PostgreSQL).
    set_tenant_context(
        session,
        tenant_id=principal.tenant_id,
        government=principal.is_government,
        operator=principal.is_operator,
    )
    return principal


def _key_principal(session: Session, token: str, settings: Settings) -> Principal:
    principal = authenticate_token(
        session,
        token,
        last_used_resolution=timedelta(seconds=settings.key_last_used_resolution_s),
    )
    if session.info.pop(TOUCHED, False):
        session.commit()
    return principal


CallerDep = Annotated[Caller, Depends(get_caller)]


def get_principal(caller: CallerDep) -> Principal:
    if caller is None:
        raise UnauthenticatedError(
            "an API key is required (Authorization: Bearer <key> or X-API-Key)"
        )
    return caller


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(scope: str) -> Callable[[Principal], Principal]:
    def check(principal: PrincipalDep) -> Principal:
        if scope not in principal.scopes:
            raise ForbiddenError(f"this API key lacks the {scope!r} scope", scope=scope)
        return principal

    return check


def _check_optional_scope(caller: Caller, scope: str) -> Caller:
    if caller is not None and scope not in caller.scopes:
        raise ForbiddenError(f"this API key lacks the {scope!r} scope", scope=scope)
    return caller


def optional_scope(scope: str) -> Callable[[Caller], Caller]:
    """Anonymous callers pass (they see public listings); a key must carry ``scope``."""

    def check(caller: CallerDep) -> Caller:
        return _check_optional_scope(caller, scope)

    return check


@contextmanager
def catalog_reader(request: Request, scope: str) -> Iterator[tuple[Session, Caller]]:
    """The session and the caller of the catalog's listing and search, in one call, for routes
    that do all their blocking work in one trip to the worker threads (every sync dependency
    is a trip there and back: at a few milliseconds a search, a large share of it).

    The session is ``get_unbound_session``'s: outside the tenant role, as those queries apply
    the tier table themselves; on PostgreSQL in autocommit besides (each search is one
    statement, consistent in itself; there is no BEGIN or ROLLBACK to wait for). The caller
    is ``optional_scope(scope)``'s, but for an API key checked on that same session: no
    tenant-bound transaction is opened, as nothing would run in it. Portal tokens go the way
    of ``get_caller``.
    """
    settings: Settings = request.app.state.settings
    factory = request.app.state.session_factory
    session: Session = factory()
    bound: Session | None = None
    driver: Any = None
    try:
        if not settings.is_sqlite:
            connection = session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            # Prepared at their first run on a connection, not their sixth: the searches are a
            # few statements run again and again, whose planning costs as much as their run.
            driver = connection.connection.dbapi_connection
            threshold = driver.prepare_threshold
            driver.prepare_threshold = 0
        caller: Caller = None
        token = presented_token(request)
        if token is not None:
            verifier = _oidc_verifier(request, settings)
            if verifier is not None and looks_like_jwt(token):
                # SQLite: one session a request (a second would wait on the first's lock).
                bound = session if settings.is_sqlite else factory()
                caller = get_caller(request, bound, settings)
            else:
                caller = _key_principal(session, token, settings)
                request.state.principal = caller
        yield session, _check_optional_scope(caller, scope)
    finally:
        if driver is not None:
            driver.prepare_threshold = threshold
        if bound is not None and bound is not session:
            bound.rollback()
            bound.close()
        session.rollback()
        session.close()


class Page:
    def __init__(self, page: int = 1, per_page: int = 20) -> None:
        self.page = page
        self.per_page = per_page

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


async def get_page(
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Page:
    # async: nothing here blocks, so no trip to the worker threads.
    return Page(page, per_page)


PageDep = Annotated[Page, Depends(get_page)]
