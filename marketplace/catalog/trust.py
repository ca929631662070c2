"""Which models' code the operator trusts to run in the platform's process.

Python-format models are their publisher's code, and run in sandbox workers
(``model_store.sandbox``) unless their product carries ``trusted_code``. Only the operator
sets it, and only on a government tenant's model product; a third party's code never runs in
process. The runtime asks :func:`trust_policy` when a model loads and re-checks the owner's
kind there, so a flag left on a tenant that stopped being governmental grants nothing; a change
takes effect the next time the model loads (a restart loads every model afresh).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from marketplace.audit.service import record_action
from marketplace.catalog.service import by_handle, get_product, product_handle
from marketplace.constants import GOVERNMENT_KINDS, ProductKind
from marketplace.context import Principal
from marketplace.errors import ConflictError, ForbiddenError
from marketplace.tables import Product, Tenant

__all__ = ["list_trusted", "set_trusted_code", "trust_policy"]


def set_trusted_code(session: Session, caller: Principal, handle: str, trusted: bool) -> Product:
    """Mark (or unmark) a government model's code as trusted to run in process; audited.

    Raises:
        ForbiddenError: The caller is not the operator.
        NotFoundError: No model the operator may see has that handle.
        ConflictError: Not a model, or its owner is not a government tenant.
    """
    if not caller.is_operator:
        raise ForbiddenError("only the platform operator decides which code runs in process")
    product = get_product(session, caller, handle)
    if product.kind != ProductKind.MODEL.value:
        raise ConflictError(f"product {handle!r} is a {product.kind}; only models run code")
    if trusted and product.tenant.kind not in GOVERNMENT_KINDS:
        raise ConflictError(
            f"{product.tenant.slug} is not a government tenant: its models always run isolated"
        )
    changed = product.trusted_code != trusted
    product.trusted_code = trusted
    record_action(
        session,
        caller,
        action="product.trust" if trusted else "product.untrust",
        target=f"product:{product_handle(product)}",
        detail={"changed": changed},
    )
    session.flush()
    return product


def list_trusted(session: Session) -> list[str]:
    """The handles of every product whose code is trusted, sorted."""
    rows = session.execute(
        select(Tenant.slug, Product.name)
        .join(Tenant, Tenant.id == Product.tenant_id)
        .where(Product.trusted_code.is_(True))
    )
    return sorted(f"{slug}.{name}" for slug, name in rows)


def trust_policy(factory: sessionmaker[Session]) -> Callable[[str], bool]:
    """The embedded runtime's trust policy: runtime key (``<handle>:<version>``) → whether
    the model may run in process (its product is trusted and its owner governmental).

    Args:
        factory: Sessions that read the catalog unbound to any tenant.
    """

    def trusted(key: str) -> bool:
        handle = key.rpartition(":")[0] or key
        query = by_handle(handle, Product.trusted_code, Tenant.kind)
        if query is None:
            return False
        with factory() as session:
            row = session.execute(query).first()
            session.rollback()
        return row is not None and bool(row.trusted_code) and row.kind in GOVERNMENT_KINDS

    return trusted
