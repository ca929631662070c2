"""FastAPI dependencies: settings, database session, caller, scope checks.

The caller comes from the platform's one authentication (``marketplace.auth.authenticate``),
as on every other entry point (the v2 fast path, uploads, ``/metrics``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Annotated, Any

import anyio.from_thread
from fastapi import Depends, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from marketplace.auth.authenticate import (
    Authenticator,
    check_scope,
    presented_credential,
    require_principal,
)
from marketplace.config import Settings
from marketplace.constants import API_KEY_HEADER
from marketplace.context import Caller, Principal
from marketplace.db import ANONYMOUS_TENANT, set_tenant_context
from marketplace.federation.forward import accept_forwarded, audit_forwarded
from marketplace.federation.signing import has_caller_headers


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


async def authenticate_request(request: Request, *, scope: str | None = None) -> Caller:
    """The request's caller, by the platform's one authentication
    (:meth:`marketplace.auth.authenticate.Authenticator.authenticate`): an API key or a portal
    user's bearer token, or None for an anonymous caller. A caller who presented a credential
    must hold ``scope`` (anonymous callers pass: they see public listings). No database
    session is held meanwhile.
    """
    headers = request.headers
    authenticator: Authenticator = request.app.state.authenticator
    credential = presented_credential(headers.get("authorization"), headers.get(API_KEY_HEADER))
    caller = await authenticator.authenticate(credential, stamp_now=True)
    federated = getattr(request.state, "federated_caller", None)
    if federated is not None:  # verified once per request: a nonce is good for one check
        caller = federated
    elif has_caller_headers(headers):
        # A district hub's forwarded call: its key, and the original caller signed alongside.
        settings: Settings = request.app.state.settings
        caller = accept_forwarded(
            caller,
            credential,
            headers,
            request.method,
            request.url.path,
            guard=request.app.state.federation_guard,
            max_skew_s=settings.federation.max_skew_s,
        )
        assert caller is not None
        await run_in_threadpool(
            audit_forwarded,
            request.app.state.session_factory,
            caller,
            request.method,
            request.url.path,
        )
        request.state.federated_caller = caller
    request.state.principal = caller  # the access log and the audit of denials name it
    if caller is not None and scope is not None:
        check_scope(caller, scope)
    return caller


async def authenticate_principal(request: Request, *, scope: str | None = None) -> Principal:
    """Like :func:`authenticate_request`, for routes that anonymous callers may not use (401)."""
    principal = require_principal(await authenticate_request(request))
    return check_scope(principal, scope) if scope is not None else principal


async def get_caller(request: Request, session: SessionDep) -> Caller:
    """The authenticated principal, or None for an anonymous caller; the request's session
    runs as the caller's tenant from here on (row-level security on PostgreSQL)."""
    caller = await authenticate_request(request)
    if caller is None:
        context: dict[str, Any] = {"tenant_id": ANONYMOUS_TENANT}
    else:
        context = {
            "tenant_id": caller.tenant_id,
            "government": caller.is_government,
            "operator": caller.is_operator,
        }
    if session.in_transaction():  # applying it then takes a statement: not on the loop
        await run_in_threadpool(partial(set_tenant_context, session, **context))
    else:
        set_tenant_context(session, **context)  # recorded only; applied as it begins
    return caller


def principal_for_token(request: Request, token: str) -> Principal:
    """Who a credential names, by the platform's one authentication (the same
    :class:`Authenticator` as every API route), for the portal's sessions. Called from a worker
    thread (the portal's pages are synchronous): the check runs on the event loop."""
    authenticator: Authenticator = request.app.state.authenticator
    caller = anyio.from_thread.run(partial(authenticator.authenticate, token, stamp_now=True))
    return require_principal(caller)


def caller_for_token(request: Request, session: Session, token: str | None) -> Caller:
    """The caller a credential found elsewhere names (CKAN clients send a bare key), with the
    session bound to it as :func:`get_caller` binds the request's."""
    caller = principal_for_token(request, token) if token is not None else None
    bind_caller(session, caller)
    return caller


def bind_caller(session: Session, caller: Caller) -> None:
    """From here on the database enforces the caller's tenant too (row-level security on
    PostgreSQL; nothing on SQLite)."""
    if caller is None:
        set_tenant_context(session, tenant_id=ANONYMOUS_TENANT)
        return
    set_tenant_context(
        session,
        tenant_id=caller.tenant_id,
        government=caller.is_government,
        operator=caller.is_operator,
    )


CallerDep = Annotated[Caller, Depends(get_caller)]


API_KEY_SCHEME = APIKeyHeader(
    name=API_KEY_HEADER, scheme_name="ApiKey", auto_error=False, description="An API key"
)
BEARER_SCHEME = HTTPBearer(
    scheme_name="Bearer",
    auto_error=False,
    description="An API key, or a portal user's OIDC access token",
)


async def credentials_required(
    _key: Annotated[str | None, Security(API_KEY_SCHEME)],
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER_SCHEME)],
) -> None:
    """Nothing at run time (authentication is :func:`authenticate_request`'s): it puts the
    credentials an operation requires into the OpenAPI document. Operations without it take
    them optionally (``marketplace.api.contract``)."""


RequiresCredentials = Depends(credentials_required)
"""For ``dependencies=[...]`` of routes that authenticate in their body."""


async def get_principal(caller: CallerDep, _: Annotated[None, RequiresCredentials]) -> Principal:
    return require_principal(caller)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    """An authenticated caller whose key or role grants ``scope``."""

    async def check(principal: PrincipalDep) -> Principal:
        return check_scope(principal, scope)

    return check


def optional_scope(scope: str) -> Callable[[Caller], Awaitable[Caller]]:
    """Anonymous callers pass (they see public listings); a credential must carry ``scope``."""

    async def check(caller: CallerDep) -> Caller:
        return check_scope(caller, scope) if caller is not None else None

    return check


@contextmanager
def catalog_reader(request: Request) -> Iterator[Session]:
    """The session of the catalog's listing and search (the caller is authenticated before,
    with ``authenticate_request``), for routes that do all their blocking work in one trip to
    the worker threads (every sync dependency is a trip there and back: at a few milliseconds
    a search, a large share of it).

    The session is ``get_unbound_session``'s: outside the tenant role, as those queries apply
    the tier table themselves; on PostgreSQL in autocommit besides (each search is one
    statement, consistent in itself; there is no BEGIN or ROLLBACK to wait for).
    """
    settings: Settings = request.app.state.settings
    session: Session = request.app.state.session_factory()
    driver: Any = None
    try:
        if not settings.is_sqlite:
            connection = session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            # Prepared at their first run on a connection, not their sixth: the searches are a
            # few statements run again and again, whose planning costs as much as their run.
            driver = connection.connection.dbapi_connection
            threshold = driver.prepare_threshold
            driver.prepare_threshold = 0
        yield session
    finally:
        if driver is not None:
            driver.prepare_threshold = threshold
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
