"""The one authentication function (marketplace.auth.authenticate), tested alone.

Portal users' tokens from a real OIDC provider are in tests/integration/test_oidc.py; here API
keys, the anonymous caller and what every entry point shares: how a credential is presented,
the 401/403 answers, and the last-used stamp.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from marketplace.auth.authenticate import (
    Authenticator,
    check_scope,
    presented_credential,
    require_principal,
)
from marketplace.config import Settings
from marketplace.context import Principal
from marketplace.db import make_engine, make_session_factory, transaction
from marketplace.errors import ForbiddenError, UnauthenticatedError
from marketplace.keys.reader import SqliteKeyReader
from marketplace.tables import ApiKey, utcnow
from tests.utils.city import City


@pytest.fixture
def factories(
    settings: Settings,
) -> Iterator[tuple[sessionmaker[Session], sessionmaker[Session]]]:
    engine = make_engine(settings.database_url)
    yield make_session_factory(engine, read_mostly=True), make_session_factory(engine)
    engine.dispose()


def _authenticator(
    factories: tuple[sessionmaker[Session], sessionmaker[Session]], **kw: object
) -> Authenticator:
    reads, writes = factories
    return Authenticator(reads=reads, writes=writes, **kw)  # type: ignore[arg-type]


def _last_used(city: City, key_id: str) -> object:
    with transaction(city.session_factory) as s:
        return s.scalar(select(ApiKey.last_used_at).where(ApiKey.id == key_id))


def test_a_credential_is_taken_from_a_bearer_header_or_x_api_key() -> None:
    assert presented_credential("Bearer cbk_x", None) == "cbk_x"
    assert presented_credential("bearer  eyJ.a.b ", None) == "eyJ.a.b"
    assert presented_credential(None, " cbk_y ") == "cbk_y"
    assert presented_credential("Bearer cbk_x", "cbk_y") == "cbk_x"  # the header wins
    assert presented_credential(None, None) is None
    for bad in ("Basic dXNlcjpwdw==", "Bearer ", "cbk_x"):
        with pytest.raises(UnauthenticatedError, match="must be 'Bearer <token or API key>'"):
            presented_credential(bad, None)


@pytest.mark.parametrize("reader", [True, False], ids=["key-reader", "connection"])
def test_a_key_is_one_principal_and_a_bad_one_is_401(
    city: City, factories: tuple[sessionmaker[Session], sessionmaker[Session]], reader: bool
) -> None:
    token = city.key("tourism", scopes=["catalog:read", "infer"])
    key_id = token.split("_")[1]
    revoked = city.key("tourism", scopes=["infer"])
    with transaction(city.session_factory) as s:
        s.execute(
            update(ApiKey).where(ApiKey.id == revoked.split("_")[1]).values(revoked_at=utcnow())
        )

    async def scenario() -> None:
        auth = _authenticator(factories)
        if reader:
            auth.open_key_reader()
            assert isinstance(auth.keys, SqliteKeyReader)
        try:
            assert await auth.authenticate(None) is None
            principal = await auth.authenticate(token)
            assert isinstance(principal, Principal)
            assert principal.tenant_slug == "tourism" and principal.key_id == key_id
            assert principal.scopes == {"catalog:read", "infer"}
            wrong_secret = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
            jwt_shaped = "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"  # no OIDC configured: not a key
            for bad in (revoked, wrong_secret, "cbk_000000000000_" + "a" * 30, jwt_shaped):
                with pytest.raises(UnauthenticatedError, match=r"^invalid API key$"):
                    await auth.authenticate(bad)
        finally:
            await auth.close()
        assert auth.keys is None

    asyncio.run(scenario())


def test_the_last_used_stamp_is_written_once_per_period(
    city: City, factories: tuple[sessionmaker[Session], sessionmaker[Session]]
) -> None:
    token = city.key("tourism", scopes=["infer"])
    key_id = token.split("_")[1]
    other = city.key("tourism", scopes=["infer"])
    other_id = other.split("_")[1]

    async def scenario() -> None:
        auth = _authenticator(factories, last_used_resolution=timedelta(hours=1))
        auth.open_key_reader()
        try:
            assert _last_used(city, key_id) is None
            await auth.authenticate(token, stamp_now=True)
            first = _last_used(city, key_id)
            assert first is not None  # written before authenticate returned
            await auth.authenticate(token, stamp_now=True)
            assert _last_used(city, key_id) == first  # once per period
            # In the background: the call does not wait for the write.
            await auth.authenticate(other)
            await asyncio.gather(*auth._background)
            assert _last_used(city, other_id) is not None
        finally:
            await auth.close()

    asyncio.run(scenario())
    # A fresh process (a new authenticator) trusts a recent stamp in the row: no new write.
    with transaction(city.session_factory) as s:
        s.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))
    stamped = _last_used(city, key_id)

    async def again() -> None:
        auth = _authenticator(factories, last_used_resolution=timedelta(hours=1))
        try:
            await auth.authenticate(token, stamp_now=True)
        finally:
            await auth.close()

    asyncio.run(again())
    assert _last_used(city, key_id) == stamped


def test_anonymous_callers_and_missing_scopes_are_told_what_is_needed() -> None:
    with pytest.raises(UnauthenticatedError) as e:
        require_principal(None)
    assert "an API key" in e.value.message and "bearer token" in e.value.message
    key = Principal(tenant_id=1, tenant_slug="t", tenant_kind="developer", key_id="k1")
    user = Principal(
        tenant_id=1, tenant_slug="t", tenant_kind="developer", scopes=frozenset({"infer"})
    )
    assert require_principal(key) is key
    with pytest.raises(ForbiddenError, match="this API key lacks the 'infer' scope"):
        check_scope(key, "infer")
    with pytest.raises(ForbiddenError, match="this user's role lacks the 'catalog:write' scope"):
        check_scope(user, "catalog:write")
    assert check_scope(user, "infer") is user
