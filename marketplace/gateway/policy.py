"""Step 3 of the request path: who may see and use a model (the tier policy for serving).

ARCHITECTURE.md's tier table, applied to a resolved model (grants: marketplace.access):

| tier         | metadata visible to            | inference allowed to                   |
|--------------|--------------------------------|----------------------------------------|
| public       | anyone                         | any caller with the ``infer`` scope    |
| restricted   | authenticated tenants          | holders of an access grant (``infer``) |
| confidential | government tenants             | government tenants with a grant        |
| secret       | the owner                      | the owner                              |

Unpublished (draft, submitted) models are served to their owner only, by explicit version.
What the caller may not see answers 404 exactly like a missing model.
"""

from __future__ import annotations

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from marketplace.access.service import grant_in_force
from marketplace.auth.authenticate import check_scope, require_principal
from marketplace.catalog import policy
from marketplace.catalog.policy import can_see
from marketplace.constants import Scope
from marketplace.context import Caller, Principal
from marketplace.errors import ForbiddenError, NotFoundError
from marketplace.gateway.resolve import ResolvedModel

__all__ = ["authorize", "find_grant", "needs_grant", "not_found", "visible_version"]


def not_found(name: str) -> NotFoundError:
    """The one answer for a model that is missing or that the caller may not see."""
    return NotFoundError(f"model '{name}' not found")


def visible_version(
    caller: Caller, model: ResolvedModel | None, name: str, version: str | None
) -> ResolvedModel:
    """The model if the caller may see it and the addressed version exists; else 404.

    Invisible and missing models answer the same; only for a visible model does the message
    say that the version is what is missing.
    """
    if model is None or not can_see(caller, model.listing):
        raise not_found(name)
    if model.version is None:
        if version is not None:
            raise NotFoundError(f"model '{name}' has no version {version!r}")
        raise NotFoundError(f"model '{name}' has no published version; address a version")
    return model


def needs_grant(caller: Caller, model: ResolvedModel | None) -> bool:
    """Whether using ``model`` takes an access grant: restricted or confidential, not one's own."""
    return model is not None and policy.needs_grant(caller, model.listing)


def find_grant(conn: Session | Connection, caller: Caller, model: ResolvedModel | None) -> bool:
    """Whether an access grant with the ``infer`` scope is in force for this call (checked on
    every call, never cached: an expired or revoked grant stops on the very next one)."""
    if caller is None or model is None or not needs_grant(caller, model):
        return False
    return grant_in_force(conn, caller.tenant_id, model.product_id, Scope.INFER.value)


def authorize(
    caller: Caller,
    model: ResolvedModel | None,
    name: str,
    version: str | None,
    *,
    granted: bool = False,
) -> Principal:
    """Apply the tier policy to an inference call (:func:`marketplace.catalog.policy.use_verdict`,
    the one rule downloads apply too); return the principal to bill.

    Public models serve any caller with ``infer``; restricted ones, holders of an access grant;
    confidential ones, government tenants with a grant; secret ones, their owner only.

    Raises:
        UnauthenticatedError: No credentials.
        NotFoundError: Missing, or invisible to the caller (indistinguishable).
        ForbiddenError: Visible, but the caller lacks ``infer`` or holds no grant.
    """
    principal = require_principal(caller)
    served = visible_version(principal, model, name, version)
    check_scope(principal, Scope.INFER.value)
    verdict = policy.use_verdict(
        principal, served.listing, scope=Scope.INFER.value, granted=granted
    )
    if verdict is policy.Use.HIDDEN:
        raise not_found(name)
    if verdict is policy.Use.NO_GRANT:
        raise ForbiddenError(
            f"model '{name}' is {served.tier}: using it needs an access grant "
            "(POST /api/v1/access-requests)",
            reason="no-grant",
        )
    return principal
