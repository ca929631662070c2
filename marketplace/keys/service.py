"""API keys: ``cbk_<id>_<secret>``. The secret is shown once and stored only as a hash.

Secrets are 32 random bytes, so a single SHA-256 is as strong as a slow hash here (there is no
password to guess) and keeps key checks off the hot path's CPU budget.
Rotation issues a new secret; the previous one keeps working for
``Settings.key_rotation_grace_s`` (24 h by default) so clients can roll over. Revocation is
immediate.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from marketplace.audit.service import record
from marketplace.constants import ALL_SCOPES, API_KEY_PREFIX
from marketplace.context import Principal
from marketplace.errors import InvalidInputError, NotFoundError, UnauthenticatedError
from marketplace.tables import ApiKey, Tenant, as_utc, lifetime_status, utcnow

KEY_RE = re.compile(rf"^{API_KEY_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{20,100}})$")
_DURATION_RE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A freshly created or rotated key: ``token`` is the only time the secret is visible."""

    key: ApiKey
    token: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w`` → timedelta."""
    m = _DURATION_RE.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise InvalidInputError(f"invalid duration {text!r}: use a number and s, m, h, d or w")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def normalize_scopes(scopes: list[str] | tuple[str, ...]) -> list[str]:
    cleaned = sorted({s.strip() for s in scopes if s.strip()})
    unknown = [s for s in cleaned if s not in ALL_SCOPES]
    if unknown:
        raise InvalidInputError(
            f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(ALL_SCOPES)}"
        )
    if not cleaned:
        raise InvalidInputError("a key needs at least one scope")
    return cleaned


def _new_token(key_id: str) -> tuple[str, str]:
    secret = secrets.token_urlsafe(32)
    return f"{API_KEY_PREFIX}_{key_id}_{secret}", hash_secret(secret)


def create_key(
    session: Session,
    *,
    tenant: Tenant,
    scopes: list[str] | tuple[str, ...],
    name: str = "",
    expires_in: timedelta | None = None,
    actor: str,
) -> IssuedKey:
    scope_list = normalize_scopes(scopes)
    key_id = secrets.token_hex(6)
    token, digest = _new_token(key_id)
    key = ApiKey(
        id=key_id,
        tenant_id=tenant.id,
        name=name,
        scopes=scope_list,
        secret_hash=digest,
        expires_at=(utcnow() + expires_in) if expires_in else None,
    )
    key.tenant = tenant
    session.add(key)
    session.flush()
    record(
        session,
        actor=actor,
        tenant_id=tenant.id,
        action="key.create",
        target=f"key:{key_id}",
        detail={"scopes": scope_list, "expires_at": _iso(key.expires_at)},
    )
    return IssuedKey(key=key, token=token)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def get_key(session: Session, key_id: str, *, tenant_id: int | None) -> ApiKey:
    """Look a key up by id; with ``tenant_id`` another tenant's key reads as missing."""
    key = session.get(ApiKey, key_id)
    if key is None or (tenant_id is not None and key.tenant_id != tenant_id):
        raise NotFoundError(f"API key {key_id!r} not found")
    return key


def list_keys(session: Session, *, tenant_id: int | None) -> list[ApiKey]:
    stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if tenant_id is not None:
        stmt = stmt.where(ApiKey.tenant_id == tenant_id)
    return list(session.scalars(stmt))


def revoke_key(session: Session, key: ApiKey, *, actor: str) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    record(
        session,
        actor=actor,
        tenant_id=key.tenant_id,
        action="key.revoke",
        target=f"key:{key.id}",
    )
    return key


def rotate_key(session: Session, key: ApiKey, *, grace: timedelta, actor: str) -> IssuedKey:
    if key.revoked_at is not None:
        raise NotFoundError(f"API key {key.id!r} not found")
    token, digest = _new_token(key.id)
    now = utcnow()
    key.previous_secret_hash = key.secret_hash
    key.previous_expires_at = now + grace
    key.secret_hash = digest
    key.rotated_at = now
    record(
        session,
        actor=actor,
        tenant_id=key.tenant_id,
        action="key.rotate",
        target=f"key:{key.id}",
        detail={"previous_valid_until": _iso(key.previous_expires_at)},
    )
    return IssuedKey(key=key, token=token)


def key_status(key: ApiKey) -> str:
    return lifetime_status(key.revoked_at, key.expires_at)


# One Core statement (no ORM identity map): authentication runs on every request.
_KEY_LOOKUP = select(
    ApiKey.tenant_id,
    ApiKey.scopes,
    ApiKey.secret_hash,
    ApiKey.previous_secret_hash,
    ApiKey.previous_expires_at,
    ApiKey.expires_at,
    ApiKey.revoked_at,
    ApiKey.last_used_at,
    Tenant.slug,
    Tenant.kind,
).join(Tenant, Tenant.id == ApiKey.tenant_id)


def touch_key(session: Session, key_id: str) -> None:
    """Stamp a key's last-used time (the gateway does it off the request path)."""
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))


KEY_BY_ID = _KEY_LOOKUP.where(ApiKey.id == bindparam("key_id"))
"""The key (and its tenant's slug and kind) that authentication reads, by ``key_id``."""


def parse_token(token: str) -> tuple[str, str]:
    """A presented key's ``(key id, secret)``; 401 for anything not shaped like a key."""
    m = KEY_RE.match(token.strip())
    if not m:
        raise UnauthenticatedError("invalid API key", reason="malformed")
    key_id, secret = m.groups()
    return key_id, secret


def check_key(key: Any, key_id: str, secret: str, now: datetime) -> Principal:
    """The principal of a presented key, given its :data:`KEY_BY_ID` row (None: no such key).

    Raises UnauthenticatedError for an unknown, wrong, revoked or expired key; the message
    never says which (the audit log has the reason).
    """
    if key is None:
        raise UnauthenticatedError("invalid API key", reason="unknown", key_id=key_id)
    digest = hash_secret(secret)
    matched = hmac.compare_digest(digest, key.secret_hash)
    if not matched and key.previous_secret_hash is not None:
        grace_end = as_utc(key.previous_expires_at)
        matched = (
            hmac.compare_digest(digest, key.previous_secret_hash)
            and grace_end is not None
            and grace_end > now
        )
    if not matched:
        raise UnauthenticatedError("invalid API key", reason="wrong-secret", key_id=key_id)
    if key.revoked_at is not None:
        raise UnauthenticatedError("invalid API key", reason="revoked", key_id=key_id)
    expires = as_utc(key.expires_at)
    if expires is not None and expires <= now:
        raise UnauthenticatedError("invalid API key", reason="expired", key_id=key_id)
    return Principal(
        tenant_id=key.tenant_id,
        tenant_slug=key.slug,
        tenant_kind=key.kind,
        scopes=frozenset(key.scopes),
        key_id=key_id,
    )
