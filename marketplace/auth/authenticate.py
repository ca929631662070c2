"""The platform's one authentication: whatever a caller presents becomes one ``Principal``.

Every entry point uses :meth:`Authenticator.authenticate`: the JSON API (``/api/v1``), the v2
routes (inference on the fast path, metadata, readiness), model uploads and downloads, and
``/metrics``. A request presents at most one credential, in ``Authorization: Bearer <…>`` or
``X-API-Key`` (:func:`presented_credential`):

* an **API key** ``cbk_<id>_<secret>`` is checked against the database on every call
  (:func:`marketplace.keys.service.check_key`), so a revoked key fails on its very next request.
  The row is read by the key reader (:mod:`marketplace.keys.reader`) on the event loop: a raw
  driver connection, with rows kept on SQLite until the next commit to the file. Where there is
  no reader (an in-memory database, an app served without its lifespan) a short read-only
  connection reads the same row;
* a portal user's **OIDC bearer JWT** (when ``CITYBRAIN_OIDC__SERVER_URL`` is set, and the
  token is shaped like a JWT) is validated by :class:`marketplace.auth.oidc.OIDCVerifier`
  (python-keycloak: signature, issuer, audience, expiry), in a worker thread as it may fetch
  the realm's keys; its roles give the scopes and its tenant claim the tenant.

Either way the result is a :class:`~marketplace.context.Principal` of one tenant, billed and
audited the same. Nothing presented is the anonymous caller (``None``): routes that need more
call :func:`require_principal` and :func:`check_scope`.

A key's last-used time is written at most once per ``key_last_used_resolution_s`` (per key,
process and database row): in the background on the inference path, where no write may hold up
a call, or before returning (``stamp_now``) on the JSON API, whose key listings show it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from marketplace.auth.oidc import OIDCVerifier, looks_like_jwt
from marketplace.config import Settings
from marketplace.context import Caller, Principal
from marketplace.errors import ForbiddenError, UnauthenticatedError
from marketplace.keys.reader import KeyReader, key_reader_for
from marketplace.keys.service import KEY_BY_ID, check_key, parse_token, touch_key
from marketplace.tables import as_utc, utcnow

__all__ = [
    "Authenticator",
    "check_scope",
    "presented_credential",
    "require_principal",
]


def presented_credential(authorization: str | None, api_key: str | None) -> str | None:
    """The credential from ``Authorization: Bearer <token or key>`` or ``X-API-Key``, or None.

    Raises:
        UnauthenticatedError: An ``Authorization`` header of another scheme, or empty.
    """
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise UnauthenticatedError("Authorization header must be 'Bearer <token or API key>'")
        return value.strip()
    return api_key.strip() if api_key else None


def require_principal(caller: Caller) -> Principal:
    """The caller, who must have presented a credential (401 otherwise)."""
    if caller is None:
        raise UnauthenticatedError(
            "authentication is required: an API key (Authorization: Bearer <key> or "
            "X-API-Key) or a portal user's bearer token"
        )
    return caller


def check_scope(principal: Principal, scope: str) -> Principal:
    """The principal, whose key or role must grant ``scope`` (403 naming it otherwise)."""
    if scope not in principal.scopes:
        holder = "this API key" if principal.key_id is not None else "this user's role"
        raise ForbiddenError(f"{holder} lacks the {scope!r} scope", scope=scope)
    return principal


class Authenticator:
    """Turns presented credentials into principals (see the module docstring).

    Args:
        reads: Read-only sessions: a key's row where there is no key reader, a user's tenant.
        writes: Sessions for the one write, a key's last-used stamp.
        oidc: The portal's token verifier, or None when OIDC is not configured.
        last_used_resolution: How often a key's last-used time is written (None: never).
    """

    def __init__(
        self,
        *,
        reads: sessionmaker[Session],
        writes: sessionmaker[Session],
        oidc: OIDCVerifier | None = None,
        last_used_resolution: timedelta | None = None,
    ) -> None:
        self._reads = reads
        self._writes = writes
        self._engine: Engine = reads.kw["bind"]
        # SQLite reads take microseconds: a thread hop would cost more than the read.
        self._inline = self._engine.dialect.name == "sqlite"
        self.oidc = oidc
        self.keys: KeyReader | None = None
        self.last_used_resolution = last_used_resolution
        self._stamped: dict[str, float] = {}  # key id → time.monotonic() of its last stamp
        self._background: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, reads: sessionmaker[Session], writes: sessionmaker[Session]
    ) -> Authenticator:
        """The authenticator ``settings`` describe (OIDC when ``oidc.server_url`` is set)."""
        return cls(
            reads=reads,
            writes=writes,
            oidc=OIDCVerifier(settings.oidc) if settings.oidc.server_url else None,
            last_used_resolution=timedelta(seconds=settings.key_last_used_resolution_s),
        )

    def open_key_reader(self) -> None:
        """Read keys through the fastest reader for the database from now on (at startup)."""
        if self.keys is None:
            self.keys = key_reader_for(self._engine)

    async def close(self) -> None:
        """Release the key reader's connections (at shutdown)."""
        keys, self.keys = self.keys, None
        if keys is not None:
            await keys.close()

    async def authenticate(self, credential: str | None, *, stamp_now: bool = False) -> Caller:
        """The principal of ``credential`` (None: an anonymous caller).

        Args:
            credential: What the request presented (:func:`presented_credential`).
            stamp_now: Write a due last-used stamp before returning rather than in the
                background.

        Raises:
            UnauthenticatedError: A malformed, unknown, wrong, expired or revoked key, or an
                invalid token (the message never says which; the audit log has the reason).
            ForbiddenError: A valid token whose user has no platform role.
            UnavailableError: The database or the identity provider cannot be reached.
        """
        if credential is None:
            return None
        if self.oidc is not None and looks_like_jwt(credential):
            return await asyncio.to_thread(self._user, self.oidc, credential)
        key_id, secret = parse_token(credential)
        row: Any  # a KEY_BY_ID row, or None
        if self.keys is not None:
            row = await self.keys.read(key_id)
        elif self._inline:
            row = self._read_key(key_id)
        else:
            row = await asyncio.to_thread(self._read_key, key_id)
        principal = check_key(row, key_id, secret, utcnow())
        await self._note_use(key_id, row.last_used_at, stamp_now=stamp_now)
        return principal

    def _user(self, oidc: OIDCVerifier, token: str) -> Principal:
        with self._reads() as session:
            return oidc.principal(session, token)

    def _read_key(self, key_id: str) -> Any:
        with self._engine.connect() as conn:
            return conn.execute(KEY_BY_ID, {"key_id": key_id}).first()

    # ------------------------------------------------------------------------- last used

    async def _note_use(self, key_id: str, stored: datetime | None, *, stamp_now: bool) -> None:
        """Stamp the key's last-used time if neither this process nor the row has a recent one."""
        if self.last_used_resolution is None:
            return
        period = self.last_used_resolution.total_seconds()
        now = time.monotonic()
        last = self._stamped.get(key_id)
        if last is not None and now - last < period:
            return
        if stored is not None:
            age = (utcnow() - as_utc(stored)).total_seconds()
            if age < period:  # another process (or request) stamped it lately
                self._stamped[key_id] = now - age
                return
        self._stamped[key_id] = now
        if stamp_now:
            await asyncio.to_thread(self._stamp, key_id)
            return
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(self._stamp, key_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _stamp(self, key_id: str) -> None:
        try:
            with self._writes() as session, session.begin():
                touch_key(session, key_id)
        except OperationalError:  # busy: the next period's call stamps it
            self._stamped.pop(key_id, None)
