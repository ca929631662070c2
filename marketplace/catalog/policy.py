"""Who may see a listing and who may use a product — ARCHITECTURE.md's tier table.

| tier         | listing visible to                              | use allowed to                |
|--------------|-------------------------------------------------|-------------------------------|
| public       | anyone, anonymous included                      | any key with the scope        |
| restricted   | any authenticated tenant                        | holders of a grant (scope)    |
| confidential | government tenants (operator, agency, district) | government tenants, a grant   |
| secret       | the owner tenant only                           | the owner only                |

Drafts are the owner's alone; submitted listings also go to the operator's review queue
(never secret ones: those never leave their tenant). :func:`visible_clause` and
:func:`can_see` must agree: the catalog lists with the clause and reads single products with
the predicate. :func:`use_verdict` is the "use" column, the one rule behind inference
(``gateway.pipeline.authorize``) and downloads (``gateway.downloads``).
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, or_

from marketplace.constants import ProductState, Tier
from marketplace.context import Caller, Principal
from marketplace.tables import Product

LISTED_STATES = (ProductState.PUBLISHED.value, ProductState.DEPRECATED.value)


def visible_tiers(caller: Caller) -> tuple[str, ...]:
    if caller is None:
        return (Tier.PUBLIC.value,)
    if caller.is_government:
        return (Tier.PUBLIC.value, Tier.RESTRICTED.value, Tier.CONFIDENTIAL.value)
    return (Tier.PUBLIC.value, Tier.RESTRICTED.value)


def visible_clause(caller: Caller, cols: Any = Product) -> ColumnElement[bool]:
    """Rows the caller may see; ``cols`` is anything with tenant_id, state and tier columns
    (the Product entity, or the facet-count table's ``.c``)."""
    listed = and_(cols.state.in_(LISTED_STATES), cols.tier.in_(visible_tiers(caller)))
    if caller is None:
        return listed
    clause = or_(cols.tenant_id == caller.tenant_id, listed)
    if caller.is_operator:
        clause = or_(
            clause,
            and_(cols.state == ProductState.SUBMITTED.value, cols.tier != Tier.SECRET.value),
        )
    return clause


def can_see(caller: Caller, product: Product) -> bool:
    if caller is not None and caller.tenant_id == product.tenant_id:
        return True
    if product.state in LISTED_STATES and product.tier in visible_tiers(caller):
        return True
    return (
        caller is not None
        and caller.is_operator
        and product.state == ProductState.SUBMITTED.value
        and product.tier != Tier.SECRET.value
    )


class Listed(Protocol):
    """What the use rule reads of a product: a ``Product`` row, or the gateway's detached one."""

    tenant_id: Any
    state: Any
    tier: Any


class Use(Enum):
    """The answer of :func:`use_verdict`; each surface words its own errors for it."""

    ALLOWED = "allowed"
    NO_SCOPE = "no-scope"  # 403: the key lacks the scope the use needs
    HIDDEN = "hidden"  # 404: answer exactly as for a missing product
    NO_GRANT = "no-grant"  # 403: restricted or confidential, and no grant in force


def needs_grant(caller: Caller, listing: Listed) -> bool:
    """Whether using ``listing`` takes an access grant (restricted or confidential, not one's
    own)."""
    return (
        caller is not None
        and caller.tenant_id != listing.tenant_id
        and listing.tier in (Tier.RESTRICTED.value, Tier.CONFIDENTIAL.value)
    )


def use_verdict(caller: Principal, listing: Listed, *, scope: str, granted: bool) -> Use:
    """Whether ``caller`` may use a product it can see (:func:`can_see`), with ``scope``.

    ``granted``: whether an access grant with ``scope`` is in force for the caller and this
    product (``access.service.grant_in_force``; only asked when :func:`needs_grant`).

    The owner uses its own products in any state; others only listed ones (published or
    deprecated): public ones with the scope alone, restricted ones with a grant, confidential
    ones as a government tenant with a grant, secret ones never.
    """
    if scope not in caller.scopes:
        return Use.NO_SCOPE
    if caller.tenant_id == listing.tenant_id:
        return Use.ALLOWED
    if listing.state not in LISTED_STATES or listing.tier == Tier.SECRET.value:
        return Use.HIDDEN
    if listing.tier == Tier.PUBLIC.value:
        return Use.ALLOWED
    if listing.tier == Tier.CONFIDENTIAL.value and not caller.is_government:
        return Use.HIDDEN
    return Use.ALLOWED if granted else Use.NO_GRANT
