"""Who may see a listing — ARCHITECTURE.md's tier table, as one SQL clause and one predicate.

| tier         | listing visible to                                   |
|--------------|------------------------------------------------------|
| public       | anyone, anonymous included                           |
| restricted   | any authenticated tenant                             |
| confidential | government tenants (operator, agency, district)      |
| secret       | the owner tenant only                                |

Drafts are the owner's alone; submitted listings also go to the operator's review queue
(never secret ones: those never leave their tenant). Both functions must agree: the catalog
lists with the clause and reads single products with the predicate.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, or_

from marketplace.constants import ProductState, Tier
from marketplace.context import Caller
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
