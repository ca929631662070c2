"""Calls on mirrored products: the hub forwards them, the city names the original caller.

Hub side (:class:`Forwarder`): a call of ``/v2/models/{handle}/infer`` or
``/api/v1/products/{handle}/query`` whose handle is a mirror is checked here as any call is
(the caller's key and scope, the listing's visibility, a grant on the hub for restricted and
confidential mirrors: :func:`authorize_mirror`), then sent to the city with the hub key and the
signed caller header (``signing``), and the city's answer is returned as it came. The hub serves
nothing of a mirror itself and meters nothing: the city meters the hub's tenant.

City side (:func:`accept_forwarded`): a request that carries the caller header must come with a
key holding the ``federation`` scope and a valid signature; its principal then reads
``<hub key> for <original caller>`` in every audit entry of the request, and one
``federation.forwarded`` entry records the original caller.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from marketplace.access.service import grant_in_force
from marketplace.audit.service import record
from marketplace.catalog.policy import Use, can_see, use_verdict
from marketplace.catalog.service import by_handle
from marketplace.config import FederationSettings
from marketplace.constants import Scope
from marketplace.context import Caller, Principal
from marketplace.errors import (
    ForbiddenError,
    NotFoundError,
    UnauthenticatedError,
    UnavailableError,
)
from marketplace.federation.client import city_of
from marketplace.federation.signing import (
    ReplayGuard,
    has_caller_headers,
    sign_caller,
    verify_caller,
)
from marketplace.tables import Product

# Request headers a forwarded call keeps (the rest, credentials included, stay on the hub).
PASSED_REQUEST_HEADERS = (
    "content-type",
    "accept",
    "inference-header-content-length",
    "idempotency-key",
)
# Response headers the city's answer keeps.
PASSED_RESPONSE_HEADERS = (
    "content-type",
    "inference-header-content-length",
    "retry-after",
    "x-citybrain-next-cursor",
    "idempotent-replayed",
)


@dataclass(frozen=True, slots=True)
class Mirror:
    """What the hub knows of a mirrored listing (detached from any session)."""

    id: int
    tenant_id: int
    tier: str
    state: str
    origin_handle: str


@dataclass(frozen=True, slots=True)
class Forwarded:
    """The city's answer to a forwarded call."""

    status: int
    headers: dict[str, str]
    body: bytes


def find_mirror(session: Session, city_url: str, handle: str) -> tuple[Mirror, Product] | None:
    query = by_handle(handle, Product)
    if query is None:
        return None
    product = session.scalar(query.where(Product.origin_url == city_url))
    if product is None or product.origin_handle is None:
        return None
    mirror = Mirror(
        product.id, product.tenant_id, product.tier, product.state, product.origin_handle
    )
    return mirror, product


def authorize_mirror(session: Session, caller: Caller, product: Product, scope: str) -> None:
    """The hub's own rules for a call on a mirror (the city then applies its rules to the hub).

    Raises:
        UnauthenticatedError: No credential. ForbiddenError: no scope, or no grant on the hub
        for a restricted or confidential mirror. NotFoundError: a mirror the caller may not see.
    """
    if caller is None:
        raise UnauthenticatedError("authentication is required: an API key")
    handle = f"{product.tenant.slug}.{product.name}"
    if not can_see(caller, product):
        raise NotFoundError(f"product {handle!r} not found")
    granted = grant_in_force(session, caller.tenant_id, product.id, scope)
    verdict = use_verdict(caller, product, scope=scope, granted=granted)
    if verdict is Use.HIDDEN:
        raise NotFoundError(f"product {handle!r} not found")
    if verdict is Use.NO_SCOPE:
        raise ForbiddenError(f"this API key lacks the {scope!r} scope", scope=scope)
    if verdict is Use.NO_GRANT:
        raise ForbiddenError(
            f"product {handle} is {product.tier}: it needs an approved access grant on this hub"
        )


def caller_label(caller: Principal) -> str:
    """How the hub names its user to the city: ``<tenant>/<key or user>``."""
    return f"{caller.tenant_slug}/{caller.label}"


class Forwarder:
    """A hub's forwarding of calls on mirrored products (see the module docstring).

    Args:
        settings: The hub's link to the city.
        sessions: Read sessions of the hub's database.
        transport: An httpx transport (tests); None for the network.
    """

    def __init__(
        self,
        settings: FederationSettings,
        sessions: sessionmaker[Session],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.city_url, self._key = city_of(settings)
        self._sessions = sessions
        self._http = httpx.AsyncClient(
            base_url=self.city_url, timeout=settings.timeout_s, transport=transport
        )
        # handle → (checked at, whether it is a mirror): one read a handle per second at most
        # for the local products the fast path asks about.
        self._known: dict[str, tuple[float, bool]] = {}

    async def close(self) -> None:
        await self._http.aclose()

    async def is_mirror(self, handle: str) -> bool:
        now = time.monotonic()
        known = self._known.get(handle)
        if known is not None and now - known[0] < 1.0:
            return known[1]
        found = await asyncio.to_thread(self._is_mirror, handle)
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[handle] = (now, found)
        return found

    def _is_mirror(self, handle: str) -> bool:
        with self._sessions() as session:
            return find_mirror(session, self.city_url, handle) is not None

    def _authorize(self, caller: Caller, handle: str, scope: str) -> Mirror:
        with self._sessions() as session:
            found = find_mirror(session, self.city_url, handle)
            if found is None:
                raise NotFoundError(f"product {handle!r} not found")
            mirror, product = found
            authorize_mirror(session, caller, product, scope)
            return mirror

    async def forward(
        self,
        caller: Caller,
        handle: str,
        *,
        scope: str,
        method: str,
        path_template: str,
        body: bytes,
        headers: Mapping[str, str],
        query: str = "",
    ) -> Forwarded:
        """Check ``caller`` on the hub, then send the call to the city and return its answer.

        ``path_template`` holds ``{handle}``, filled with the city's handle of the mirror.
        """
        mirror = await asyncio.to_thread(self._authorize, caller, handle, scope)
        assert caller is not None  # authorize_mirror refuses anonymous callers
        path = path_template.format(handle=mirror.origin_handle)
        sent = {k: v for k, v in headers.items() if k.lower() in PASSED_REQUEST_HEADERS}
        sent["Authorization"] = f"Bearer {self._key}"
        sent.update(sign_caller(self._key, caller_label(caller), method, path))
        url = f"{path}?{query}" if query else path
        try:
            response = await self._http.request(method, url, content=body, headers=sent)
        except httpx.HTTPError as e:
            raise UnavailableError(f"the city cannot be reached to answer {handle}") from e
        kept = {k: v for k, v in response.headers.items() if k.lower() in PASSED_RESPONSE_HEADERS}
        return Forwarded(response.status_code, kept, response.content)


def accept_forwarded(
    principal: Caller,
    credential: str | None,
    headers: Mapping[str, str],
    method: str,
    path: str,
    *,
    guard: ReplayGuard,
    max_skew_s: float,
) -> Caller:
    """City side: the principal of a request that may name a hub's original caller.

    Without the caller headers: ``principal`` as it is. With them: the key must hold the
    ``federation`` scope (403) and the signature must verify (401); the principal then carries
    the original caller in its audit label. Its tenant (the hub's) is what is metered.
    """
    if not has_caller_headers(headers):
        return principal
    if principal is None or credential is None or principal.key_id is None:
        raise UnauthenticatedError("a forwarded call needs the hub's API key")
    if Scope.FEDERATION.value not in principal.scopes:
        raise ForbiddenError(
            "this API key lacks the 'federation' scope: it may not name another caller",
            scope=Scope.FEDERATION.value,
        )
    signed = verify_caller(credential, headers, method, path, guard, max_skew_s=max_skew_s)
    return dataclasses.replace(principal, actor=f"{principal.label} for {signed.caller}")


def audit_forwarded(
    sessions: sessionmaker[Session], principal: Principal, method: str, path: str
) -> None:
    """One audit entry naming the original caller of a forwarded call (city side)."""
    hub_label, _, caller = principal.actor.partition(" for ")
    detail: dict[str, Any] = {"caller": caller, "hub": principal.tenant_slug, "method": method}
    with sessions() as session, session.begin():
        record(
            session,
            actor=principal.actor,
            tenant_id=principal.tenant_id,
            action="federation.forwarded",
            target=path,
            detail={**detail, "key": hub_label},
        )
