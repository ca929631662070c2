"""Portal users: bearer JWTs from a Keycloak realm, validated with python-keycloak.

Discovery (``.well-known/openid-configuration``) gives the issuer; the realm's JWKS (cached,
refreshed when a token names an unknown key) verifies signatures; issuer, audience and expiry
are checked with no leeway beyond ``OIDCSettings.leeway_s``; optionally the realm's token
introspection confirms the token is still active. ``realm_access.roles`` map to platform
roles, and a configurable claim names the tenant:

| realm role     | platform role | scopes                                              |
|----------------|---------------|-----------------------------------------------------|
| `operator`     | operator      | all (only for a user of the operator tenant)        |
| `tenant-admin` | tenant-admin  | all, within the user's tenant                       |
| `member`       | member        | catalog:read, infer, data:read, billing:read        |
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from jwcrypto import jwk
from jwcrypto.common import JWException
from keycloak import KeycloakOpenID
from keycloak.exceptions import KeycloakError
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.config import OIDCSettings
from marketplace.constants import ALL_SCOPES, Scope, TenantKind
from marketplace.context import Principal
from marketplace.errors import ForbiddenError, UnauthenticatedError, UnavailableError
from marketplace.tables import Tenant

ROLE_SCOPES: dict[str, frozenset[str]] = {
    "operator": frozenset(ALL_SCOPES),
    "tenant-admin": frozenset(ALL_SCOPES),
    "member": frozenset({Scope.CATALOG_READ, Scope.INFER, Scope.DATA_READ, Scope.BILLING_READ}),
}
ROLE_ORDER = ("operator", "tenant-admin", "member")


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")


class OIDCVerifier:
    """Validates realm tokens and maps them to principals. Thread-safe."""

    def __init__(self, settings: OIDCSettings) -> None:
        if not settings.server_url:
            raise ValueError("OIDC is not configured (CITYBRAIN_OIDC__SERVER_URL)")
        self.settings = settings
        self.client = KeycloakOpenID(
            server_url=settings.server_url.rstrip("/") + "/",
            realm_name=settings.realm,
            client_id=settings.client_id,
            client_secret_key=settings.client_secret,
            timeout=5,
        )
        self._lock = threading.Lock()
        self._issuer: str | None = None
        self._keys: jwk.JWKSet | None = None
        self._keys_at = 0.0

    # -- discovery and keys ------------------------------------------------------------------

    def issuer(self) -> str:
        if self._issuer is None:
            try:
                self._issuer = str(self.client.well_known()["issuer"])
            except (KeycloakError, KeyError, OSError) as e:
                raise UnavailableError("the identity provider is unreachable") from e
        return self._issuer

    def _keyset(self, *, refresh: bool = False) -> jwk.JWKSet:
        with self._lock:
            stale = time.monotonic() - self._keys_at > self.settings.jwks_ttl_s
            if self._keys is None or refresh or stale:
                try:
                    certs = self.client.certs()
                except (KeycloakError, OSError) as e:
                    if self._keys is not None and not refresh:
                        return self._keys
                    raise UnavailableError("the identity provider is unreachable") from e
                keys = jwk.JWKSet()
                for cert in certs.get("keys", []):
                    keys.add(jwk.JWK(**cert))
                self._keys, self._keys_at = keys, time.monotonic()
            return self._keys

    # -- validation ----------------------------------------------------------------------------

    def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``, or UnauthenticatedError saying why not."""
        check = {"iss": self.issuer(), "aud": self.settings.audience, "exp": None}
        keys = self._keyset()
        if _kid(token) not in {k.get("kid") for k in keys["keys"]}:
            keys = self._keyset(refresh=True)  # the realm may have rotated its keys
        try:
            claims: dict[str, Any] = self.client.decode_token(
                token, key=keys, check_claims=check, leeway=self.settings.leeway_s
            )
        except (JWException, ValueError, TypeError) as e:
            raise UnauthenticatedError("invalid bearer token", reason=_reason(e)) from e
        if self.settings.introspect:
            try:
                active = self.client.introspect(token).get("active") is True
            except (KeycloakError, OSError) as e:
                raise UnavailableError("the identity provider is unreachable") from e
            if not active:
                raise UnauthenticatedError("invalid bearer token", reason="inactive")
        return claims

    def principal(self, session: Session, token: str) -> Principal:
        claims = self.claims(token)
        roles = set((claims.get("realm_access") or {}).get("roles") or [])
        role = next((r for r in ROLE_ORDER if r in roles), None)
        slug = claims.get(self.settings.tenant_claim)
        if not isinstance(slug, str) or not slug:
            raise UnauthenticatedError("invalid bearer token", reason="no-tenant-claim")
        tenant = session.scalar(select(Tenant).where(Tenant.slug == slug))
        if tenant is None:
            raise UnauthenticatedError("invalid bearer token", reason="unknown-tenant")
        if role is None:
            raise ForbiddenError("this user has no platform role (operator, tenant-admin, member)")
        if role == "operator" and tenant.kind != TenantKind.OPERATOR.value:
            raise ForbiddenError("the operator role is valid only for the operator's own users")
        user = str(claims.get("preferred_username") or claims.get("sub") or "user")
        return Principal(
            tenant_id=tenant.id,
            tenant_slug=tenant.slug,
            tenant_kind=tenant.kind,
            scopes=ROLE_SCOPES[role],
            key_id=None,
            actor=f"user:{user}",
        )


def _kid(token: str) -> str | None:
    import base64

    try:
        header = token.split(".", 1)[0]
        data = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
        kid = data.get("kid")
        return str(kid) if kid is not None else None
    except (ValueError, json.JSONDecodeError):
        return None


def _reason(e: Exception) -> str:
    name = type(e).__name__
    return {
        "JWTExpired": "expired",
        "JWTNotYetValid": "not-yet-valid",
        "JWTInvalidClaimValue": "wrong-claim",
        "JWTMissingClaim": "missing-claim",
        "InvalidJWSSignature": "bad-signature",
        "JWTMissingKey": "unknown-key",
    }.get(name, "malformed")
