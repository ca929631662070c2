"""FastAPI dependencies: settings, database session, caller, scope checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session

from marketplace.config import Settings
from marketplace.constants import API_KEY_HEADER
from marketplace.context import Caller, Principal
from marketplace.errors import ForbiddenError, UnauthenticatedError
from marketplace.keys.service import authenticate_token


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


def presented_token(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise UnauthenticatedError("Authorization header must be 'Bearer <API key>'")
        return value.strip()
    key = request.headers.get(API_KEY_HEADER)
    return key.strip() if key else None


def get_caller(request: Request, session: SessionDep, settings: SettingsDep) -> Caller:
    """The authenticated principal, or None for an anonymous caller. Bad keys get 401."""
    token = presented_token(request)
    if token is None:
        return None
    principal = authenticate_token(
        session,
        token,
        last_used_resolution=timedelta(seconds=settings.key_last_used_resolution_s),
    )
    if session.dirty:
        session.commit()
    request.state.principal = principal
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


def optional_scope(scope: str) -> Callable[[Caller], Caller]:
    """Anonymous callers pass (they see public listings); a key must carry ``scope``."""

    def check(caller: CallerDep) -> Caller:
        if caller is not None and scope not in caller.scopes:
            raise ForbiddenError(f"this API key lacks the {scope!r} scope", scope=scope)
        return caller

    return check


class Page:
    def __init__(
        self,
        page: Annotated[int, Query(ge=1, le=100_000)] = 1,
        per_page: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> None:
        self.page = page
        self.per_page = per_page

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


PageDep = Annotated[Page, Depends()]
