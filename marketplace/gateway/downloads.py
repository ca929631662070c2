"""Who may download a product version's bytes, and what each download leaves behind.

Downloads obey the same rule as use — :func:`marketplace.catalog.policy.use_verdict`, the one
rule inference applies too (tier, access grant, scope) — and the product must allow them
(``downloadable``, set by its owner, off by default):

| caller    | may download                                                                 |
|-----------|------------------------------------------------------------------------------|
| the owner | always, any state, with a key carrying ``catalog:read``, ``infer`` or the use |
|           | scope                                                                        |
| others    | when they may use it (``infer`` for a model; a grant for restricted and      |
|           | confidential ones) **and** the owner made it downloadable                    |
| anonymous | never: 401 where the listing is public, 404 (as if missing) where it is not |

Each download is one usage event (unit ``download``, quantity 1; an ``Idempotency-Key`` retry
is not billed again) made durable before the first byte leaves (:func:`meter_download`), and
one audit entry (:func:`audit_download`). Denials are audited by the API's error handler, like
every other denial.

Model artifacts (``GET /api/v1/products/{handle}/versions/{n}/artifact``,
``gateway.artifacts``) go through here; any other download route (a dataset's data) takes
the same three steps with its own use scope.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from billing import Meter
from marketplace.access.service import grant_in_force
from marketplace.audit.service import record_action
from marketplace.auth.authenticate import check_scope, require_principal
from marketplace.catalog import policy
from marketplace.constants import Scope
from marketplace.context import Caller, Principal
from marketplace.errors import ForbiddenError, NotFoundError
from marketplace.gateway.metering import Recorded, record_usage
from marketplace.tables import Product

__all__ = [
    "DOWNLOAD_UNIT",
    "OWNER_SCOPES",
    "DownloadMeter",
    "DownloadTarget",
    "audit_download",
    "authorize_download",
    "meter_download",
]

DOWNLOAD_UNIT = "download"
"""The usage unit of one download (quantity 1)."""

OWNER_SCOPES = frozenset({Scope.CATALOG_READ.value, Scope.INFER.value})
"""An owner's key downloads its own products with either of these."""


def authorize_download(
    session: Session,
    caller: Caller,
    product: Product,
    *,
    handle: str,
    use_scope: str = Scope.INFER.value,
) -> Principal:
    """The principal to bill for downloading ``product`` (which ``caller`` can see), or why not.

    Args:
        session: Where to look up the caller's access grant.
        caller: The authenticated caller, or None.
        product: The product, already checked visible (``catalog.get_product``).
        handle: Its handle, for the messages.
        use_scope: The scope that using the product takes (``infer`` for a model).

    Raises:
        UnauthenticatedError: Anonymous (401).
        NotFoundError: Not listed, and not the caller's: exactly as a missing product (404).
        ForbiddenError: The key lacks the scope, no grant is in force, or the owner does not
            allow downloads (403).
    """
    caller = require_principal(caller)
    if caller.tenant_id == product.tenant_id:
        if not (OWNER_SCOPES | {use_scope}) & caller.scopes:
            check_scope(caller, Scope.CATALOG_READ.value)  # 403 naming the key or the role
        return caller
    granted = policy.needs_grant(caller, product) and grant_in_force(
        session, caller.tenant_id, product.id, use_scope
    )
    verdict = policy.use_verdict(caller, product, scope=use_scope, granted=granted)
    if verdict is policy.Use.NO_SCOPE:
        check_scope(caller, use_scope)  # raises: 403 naming the key or the role
    if verdict is policy.Use.HIDDEN:
        raise NotFoundError(f"product {handle!r} not found")
    if verdict is policy.Use.NO_GRANT:
        raise ForbiddenError(
            f"product '{handle}' is {product.tier}: using or downloading it needs an access "
            "grant (POST /api/v1/access-requests)",
            reason="no-grant",
        )
    if not product.downloadable:
        raise ForbiddenError(
            f"the owner of '{handle}' does not allow downloads; use it through the API instead",
            reason="not-downloadable",
        )
    return caller


@dataclass(frozen=True, slots=True)
class DownloadTarget:
    """What is downloaded, as plain values (they outlive the session that read them).

    Attributes:
        handle: The product's handle.
        product_id: Its id.
        owner_tenant_id: Its owner.
        tier: Its tier.
        version: The version downloaded.
    """

    handle: str
    product_id: int
    owner_tenant_id: int
    tier: str
    version: int

    @classmethod
    def of(cls, product: Product, handle: str, version: int) -> DownloadTarget:
        return cls(handle, product.id, product.tenant_id, product.tier, version)


@dataclass(frozen=True, slots=True)
class DownloadMeter:
    """Where and how a download is metered.

    Attributes:
        usage: The process's meter, or None where metering is off (``billing.metering``).
        idempotency_key: The client's ``Idempotency-Key``.
        request_id: The request's id.
        request_id_chosen: Whether the client chose ``request_id`` (``X-Request-Id``).
    """

    usage: Meter | None
    idempotency_key: str | None
    request_id: str
    request_id_chosen: bool = False


async def meter_download(
    meter: DownloadMeter, principal: Principal, target: DownloadTarget
) -> Recorded | None:
    """Record the download's usage event before the first byte goes out (None: metering off).

    Raises:
        MeteringUnavailableError: It cannot be made durable (503); nothing may be sent.
    """
    if meter.usage is None:
        return None
    return await record_usage(
        meter.usage,
        principal,
        product=target.handle,
        product_id=target.product_id,
        version=target.version,
        unit=DOWNLOAD_UNIT,
        quantity=1.0,
        latency_ms=0.0,
        idempotency_key=meter.idempotency_key,
        request_id=meter.request_id,
        request_id_chosen=meter.request_id_chosen,
    )


def audit_download(
    session: Session,
    principal: Principal,
    target: DownloadTarget,
    *,
    what: str,
    recorded: Recorded | None,
    detail: dict[str, object] | None = None,
) -> None:
    """Append the download's audit entry (``product.download``) in ``session``'s transaction."""
    record_action(
        session,
        principal,
        action="product.download",
        target=f"product:{target.handle}:{target.version}",
        outcome="allow",
        detail={
            "what": what,
            "owner_tenant": target.owner_tenant_id,
            "tier": target.tier,
            "usage_event": recorded.event_id if recorded else None,
            "replayed": recorded.replayed if recorded else False,
            **(detail or {}),
        },
    )
