"""The hub's own listings published to the city, under the hub's tenant there.

The city issued the hub key to a tenant (``xihu-district``); the hub's local tenant of the same
slug is the one whose listings are pushed. A listing crosses when it is listed on the hub
(published or deprecated) and not secret (secret listings never leave their tenant); mirrors
never cross back. On the city a pushed listing is created, then published (public) or submitted
for the city operator's review (other tiers), as any listing of that tenant would be; later
pushes send what changed (fields, deprecation). A listing that is no longer pushable (deleted,
back to draft, raised to secret) is withdrawn from the city: deprecated, then deleted.

What was pushed is remembered per city (``federation_state``, ``push:<city>``): a handle the
city already has that this hub did not push is a conflict, refused with a message that names
it, and never overwritten.

Only the listing crosses: model artifacts and data snapshots stay on the hub (docs/federation.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.audit.service import record
from marketplace.catalog.policy import LISTED_STATES
from marketplace.constants import ProductState, Tier
from marketplace.errors import CityBrainError, ConflictError, InvalidInputError
from marketplace.federation.client import CityClient
from marketplace.tables import FederationState, Product, Tenant

ACTOR = "federation:push"
FIELDS = ("kind", "title", "description", "title_zh", "description_zh", "domain", "tier", "license")
EDITABLE = (
    "title",
    "description",
    "title_zh",
    "description_zh",
    "domain",
    "tags",
    "tier",
    "license",
)


@dataclass(slots=True)
class PushReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def listing_body(product: Product) -> dict[str, Any]:
    body: dict[str, Any] = {k: getattr(product, k) for k in FIELDS}
    body["tags"] = list(product.tags)
    body["state"] = product.state
    return body


def fingerprint(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def pushable(product: Product) -> bool:
    return (
        product.origin_url is None
        and product.state in LISTED_STATES
        and product.tier != Tier.SECRET.value
    )


def _state(session: Session, city_url: str) -> FederationState:
    name = f"push:{city_url}"
    row = session.get(FederationState, name)
    if row is None:
        row = FederationState(name=name, value={"pushed": {}})
        session.add(row)
    return row


def _publish(city: CityClient, handle: str, body: dict[str, Any], current: str | None) -> None:
    """Bring the city's listing to the hub's state (published/submitted, then deprecated)."""
    if current in (None, ProductState.DRAFT.value):
        step = "publish" if body["tier"] == Tier.PUBLIC.value else "submit"
        made = city.request("POST", f"/api/v1/products/{handle}/{step}", f"{step} {handle}")
        current = (made or {}).get("state", current)
    if body["state"] == ProductState.DEPRECATED.value and current == ProductState.PUBLISHED.value:
        city.request("POST", f"/api/v1/products/{handle}/deprecate", f"deprecate {handle}")


def _withdraw(city: CityClient, handle: str) -> bool:
    current = city.request("GET", f"/api/v1/products/{handle}", f"read {handle}")
    if current is None:
        return False
    if current.get("state") == ProductState.PUBLISHED.value:
        city.request("POST", f"/api/v1/products/{handle}/deprecate", f"deprecate {handle}")
    city.request("DELETE", f"/api/v1/products/{handle}", f"withdraw {handle}")
    return True


def push(session: Session, city: CityClient) -> PushReport:
    """Publish this hub's own listings to the city (see the module docstring), in the caller's
    transaction for what the hub remembers; each listing is pushed on its own, so one refusal
    does not stop the others."""
    me = city.request("GET", "/api/v1/me", "identify the hub key") or {}
    slug = str(me.get("tenant", {}).get("slug", ""))
    tenant = session.scalar(select(Tenant).where(Tenant.slug == slug, Tenant.origin_url.is_(None)))
    if tenant is None:
        raise InvalidInputError(
            f"the city issued the hub key to tenant {slug!r}, which this hub does not have: "
            f"create it (citybrain tenants create {slug} ...) and publish its listings there"
        )
    state = _state(session, city.url)
    pushed: dict[str, str] = dict(state.value.get("pushed", {}))
    report = PushReport()
    local = {
        p.name: p for p in session.scalars(select(Product).where(Product.tenant_id == tenant.id))
    }
    for name, product in sorted(local.items()):
        handle = f"{slug}.{name}"
        if not pushable(product):
            continue
        body = listing_body(product)
        fp = fingerprint(body)
        if pushed.get(name) == fp:
            report.unchanged.append(handle)
            continue
        try:
            current = city.request("GET", f"/api/v1/products/{handle}", f"read {handle}")
            if current is not None and name not in pushed:
                raise ConflictError(
                    f"{handle} already exists on the city and was not pushed from this hub: "
                    "it is left as it is; rename the hub's listing or withdraw the city's first"
                )
            if current is None:
                create = {k: v for k, v in body.items() if k != "state"}
                city.request(
                    "POST", "/api/v1/products", f"create {handle}", {"name": name, **create}
                )
                _publish(city, handle, body, None)
                report.created.append(handle)
            else:
                patch = {k: body[k] for k in EDITABLE if body[k] != current.get(k)}
                if patch:
                    city.request("PATCH", f"/api/v1/products/{handle}", f"update {handle}", patch)
                _publish(city, handle, body, current.get("state"))
                report.updated.append(handle)
        except CityBrainError as e:
            report.refused[handle] = e.message
            continue
        pushed[name] = fp
        record(
            session,
            actor=ACTOR,
            tenant_id=tenant.id,
            action="federation.push",
            target=f"product:{handle}",
            detail={"city": city.url, "state": body["state"], "tier": body["tier"]},
        )
    for name in sorted(pushed):
        kept = local.get(name)
        if kept is not None and pushable(kept):
            continue
        handle = f"{slug}.{name}"
        try:
            _withdraw(city, handle)
        except CityBrainError as e:
            report.refused[handle] = e.message
            continue
        del pushed[name]
        report.withdrawn.append(handle)
        record(
            session,
            actor=ACTOR,
            tenant_id=tenant.id,
            action="federation.push_withdraw",
            target=f"product:{handle}",
            detail={"city": city.url},
        )
    state.value = {"pushed": pushed}
    session.flush()
    return report
