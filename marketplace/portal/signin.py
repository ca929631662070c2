"""Signing in to the portal with a city account: OpenID Connect's authorization code flow with
PKCE (S256) against the Keycloak realm that ``CITYBRAIN_OIDC__*`` names, as the portal's own
confidential client (``CITYBRAIN_PORTAL__OIDC_CLIENT_*``).

:meth:`OIDCSignIn.start` draws the state, the nonce and the PKCE verifier (kept in the
visitor's server-side session) and gives the realm's authorization URL; :meth:`finish` checks
the returned state, exchanges the code with the verifier, and checks the ID token (signature
against the realm's keys, issuer, audience = the portal's client, expiry, and the nonce). The
access token that comes back is what the platform's API accepts too: the portal turns it into a
principal with the same ``OIDCVerifier`` (roles, tenant claim), never with rules of its own.
Tokens are refreshed with the refresh token when the access token runs out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from jwcrypto import jwk
from jwcrypto.common import JWException
from keycloak import KeycloakOpenID
from keycloak.exceptions import KeycloakError

from marketplace.config import OIDCSettings, PortalSettings
from marketplace.errors import UnauthenticatedError, UnavailableError

CALLBACK_PATH = "/auth/callback"


@dataclass(frozen=True, slots=True)
class Tokens:
    access_token: str
    refresh_token: str | None


def pkce_pair() -> tuple[str, str]:
    """A PKCE code verifier (86 characters) and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class OIDCSignIn:
    """The portal's OIDC client. Thread-safe (nothing mutable but the discovery it caches)."""

    def __init__(self, oidc: OIDCSettings, portal: PortalSettings) -> None:
        if not oidc.server_url:
            raise ValueError("OIDC is not configured (CITYBRAIN_OIDC__SERVER_URL)")
        secret = portal.oidc_client_secret
        self.client_id = portal.oidc_client_id
        self.scope = portal.oidc_scope
        self.leeway_s = oidc.leeway_s
        self.client = KeycloakOpenID(
            server_url=oidc.server_url.rstrip("/") + "/",
            realm_name=oidc.realm,
            client_id=portal.oidc_client_id,
            client_secret_key=secret.get_secret_value() if secret else None,
            timeout=5,
        )
        self._discovery: dict[str, Any] | None = None

    def _well_known(self) -> dict[str, Any]:
        if self._discovery is None:
            try:
                self._discovery = dict(self.client.well_known())
            except (KeycloakError, OSError) as e:
                raise UnavailableError("the identity provider is unreachable") from e
        return self._discovery

    def start(self, redirect_uri: str, next_path: str) -> tuple[str, dict[str, str]]:
        """The authorization URL to send the browser to, and what the session must keep."""
        verifier, challenge = pkce_pair()
        pending = {
            "state": secrets.token_urlsafe(24),
            "nonce": secrets.token_urlsafe(24),
            "verifier": verifier,
            "redirect_uri": redirect_uri,
            "next": next_path,
        }
        query = urlencode(
            {
                "client_id": self.client_id,
                "response_type": "code",
                "redirect_uri": redirect_uri,
                "scope": self.scope,
                "state": pending["state"],
                "nonce": pending["nonce"],
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{self._well_known()['authorization_endpoint']}?{query}", pending

    def finish(
        self,
        pending: dict[str, str] | None,
        *,
        state: str | None,
        code: str | None,
        error: str | None,
    ) -> Tokens:
        """Exchange the returned code for tokens, after checking state and (in the ID token)
        nonce. Raises UnauthenticatedError for a refused, forged or replayed sign-in."""
        if error:
            raise UnauthenticatedError("the identity provider refused the sign-in", reason=error)
        if pending is None or state is None or not hmac.compare_digest(state, pending["state"]):
            raise UnauthenticatedError("this sign-in was not started here", reason="state")
        if not code:
            raise UnauthenticatedError("the identity provider sent no code", reason="no-code")
        try:
            answer = self.client.token(
                grant_type="authorization_code",
                code=code,
                redirect_uri=pending["redirect_uri"],
                code_verifier=pending["verifier"],
            )
        except KeycloakError as e:
            raise UnauthenticatedError("the sign-in code was refused", reason="code") from e
        except OSError as e:
            raise UnavailableError("the identity provider is unreachable") from e
        self._check_id_token(answer.get("id_token"), pending["nonce"])
        return Tokens(str(answer["access_token"]), answer.get("refresh_token"))

    def _check_id_token(self, id_token: Any, nonce: str) -> None:
        if not isinstance(id_token, str):
            raise UnauthenticatedError("the identity provider sent no ID token", reason="id-token")
        try:
            keys = jwk.JWKSet()
            for cert in self.client.certs().get("keys", []):
                keys.add(jwk.JWK(**cert))
            claims = self.client.decode_token(
                id_token,
                key=keys,
                check_claims={
                    "iss": self._well_known()["issuer"],
                    "aud": self.client_id,
                    "exp": None,
                },
                leeway=self.leeway_s,
            )
        except (KeycloakError, OSError) as e:
            raise UnavailableError("the identity provider is unreachable") from e
        except (JWException, ValueError, TypeError) as e:
            raise UnauthenticatedError("invalid ID token", reason="id-token") from e
        if not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
            raise UnauthenticatedError("invalid ID token", reason="nonce")

    def refresh(self, refresh_token: str) -> Tokens:
        """New tokens for a refresh token; UnauthenticatedError when the realm refuses it."""
        try:
            answer = self.client.refresh_token(refresh_token)
        except KeycloakError as e:
            raise UnauthenticatedError("the sign-in has ended", reason="refresh") from e
        except OSError as e:
            raise UnavailableError("the identity provider is unreachable") from e
        return Tokens(str(answer["access_token"]), answer.get("refresh_token") or refresh_token)
