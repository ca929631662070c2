"""Datasets in the catalog: who may read which version, through which view; data versions.

Who may query or download (ARCHITECTURE.md's tier table, as for models' inference):

| tier         | listing visible to   | data readable by (scope ``data:read``)        |
|--------------|----------------------|-----------------------------------------------|
| public       | anyone               | any key                                       |
| restricted   | authenticated tenants | holders of an access grant with ``data:read`` |
| confidential | government tenants   | government tenants with such a grant          |
| secret       | the owner            | the owner                                     |

What the caller may not see answers 404 exactly like a missing dataset; a visible dataset
without a grant answers 403. The rule is ``catalog.policy.use_verdict``, the one inference
applies; a download of a whole version also needs the owner to allow downloads
(``downloadable``, as for model artifacts: ``gateway.downloads``).

Owners (and their keys) read raw data, any version, published or not; everyone else reads
the masked view (``marketplace.data.masking``, lifted column by column by the grant's
``conditions.unmasked_columns``) of published versions: a version whose blocking quality rule
failed is never published. Omitting the version means the newest published one.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from marketplace.access.service import grant_conditions
from marketplace.catalog import policy
from marketplace.catalog import service as catalog
from marketplace.constants import ProductKind, ProductState, Scope
from marketplace.context import Caller, Principal
from marketplace.data.engine import Snapshot
from marketplace.data.lookup import DatasetCache, resolve_dataset
from marketplace.data.masking import MaskedView, masked_view
from marketplace.data.schema import ColumnSpec
from marketplace.db import transaction
from marketplace.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnauthenticatedError,
)
from marketplace.gateway.downloads import authorize_download
from marketplace.tables import Product, ProductMaskKey, ProductVersion
from model_store import BlobStore

__all__ = [
    "DatasetTarget",
    "check_dataset_owner",
    "delete_if_orphan",
    "open_dataset",
    "version_data",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DatasetTarget:
    """A dataset version a caller may read, and the view it reads it through.

    Attributes:
        handle: ``<tenant-slug>.<name>``.
        product_id: The product's id (usage events and quotas key on it).
        owner_tenant_id: The owning tenant.
        tier: The product's tier.
        version: The version read.
        snapshot: Its Parquet snapshot.
        view: The caller's masked view of its columns.
        owner: Whether the caller owns the dataset (then the view is raw).
        signature: The version's stored schema (``lookup.DataVersionInfo.signature``); empty
            when unknown (then no compiled query is reused for this read).
        unmasked: The columns the caller's grant unmasks.
    """

    handle: str
    product_id: int
    owner_tenant_id: int
    tier: str
    version: int
    snapshot: Snapshot
    view: MaskedView
    owner: bool
    signature: str = ""
    unmasked: frozenset[str] = frozenset()

    @property
    def label(self) -> str:
        """The product as usage shows it (secret products never by name outside)."""
        return self.handle


def _not_found(handle: str) -> NotFoundError:
    # The catalog's own words for a missing product: a hidden one must read the same.
    return NotFoundError(f"product {handle!r} not found")


def columns_of(version: ProductVersion) -> list[ColumnSpec]:
    raw = (version.data_schema or {}).get("columns", [])
    return [ColumnSpec.model_validate(c) for c in raw]


Conditions = dict[str, Any]
"""A grant's conditions (``unmasked_columns``...), as ``access.service.grant_conditions``."""


def _grant(session: Session, caller: Caller, product: Product) -> Conditions | None:
    if caller is None or caller.tenant_id == product.tenant_id:
        return None
    return grant_conditions(session, caller.tenant_id, product.id, Scope.DATA_READ.value)


def _unmasked(grant: Conditions | None) -> frozenset[str]:
    if grant is None:
        return frozenset()
    value: Any = grant.get("unmasked_columns") or []
    return frozenset(str(v) for v in value) if isinstance(value, list) else frozenset()


def _authorize(
    session: Session, caller: Principal, product: Product, handle: str
) -> Conditions | None:
    """The conditions of the grant the caller reads under (None: its own, or public), by the
    one use rule of every product (``catalog.policy.use_verdict``); 404 or 403 otherwise."""
    grant = _grant(session, caller, product)
    verdict = policy.use_verdict(
        caller, product, scope=Scope.DATA_READ.value, granted=grant is not None
    )
    if verdict is policy.Use.NO_SCOPE:
        raise ForbiddenError("this API key lacks the 'data:read' scope", scope="data:read")
    if verdict is policy.Use.HIDDEN:
        raise _not_found(handle)  # the operator sees submitted listings, it cannot read them
    if verdict is policy.Use.NO_GRANT:
        raise ForbiddenError(
            f"dataset '{handle}' is {product.tier}: reading it needs an access grant with "
            "'data:read' (POST /api/v1/access-requests)",
            reason="no-grant",
        )
    return grant


def _version_row(
    session: Session, product: Product, handle: str, version: int | None, *, owner: bool
) -> ProductVersion:
    stmt = select(ProductVersion).where(
        ProductVersion.product_id == product.id, ProductVersion.data_digest.is_not(None)
    )
    if not owner:
        stmt = stmt.where(ProductVersion.blocked.is_(False))
    if version is None:
        row = session.scalar(
            stmt.where(ProductVersion.blocked.is_(False))
            .order_by(ProductVersion.version.desc())
            .limit(1)
        )
        if row is None:
            raise NotFoundError(f"dataset {handle!r} has no published data version")
        return row
    row = session.scalar(stmt.where(ProductVersion.version == version))
    if row is None:
        raise NotFoundError(f"dataset {handle!r} has no data version {version}")
    return row


def mask_key(session: Session, product_id: int) -> bytes | None:
    row = session.get(ProductMaskKey, product_id)
    return bytes(row.key) if row is not None else None


def open_dataset(
    session: Session,
    caller: Caller,
    handle: str,
    version: int | None,
    *,
    grid_m: float,
    download: bool = False,
    cache: DatasetCache | None = None,
) -> DatasetTarget:
    """Resolve and authorize a read of ``handle`` (version None: the newest published).

    ``download``: the whole version is handed out, under the download rule
    (``gateway.downloads.authorize_download``: use, and the owner allows downloads).
    ``cache``: where a query's caller-independent look-ups may come from
    (``marketplace.data.lookup``); the caller's rights and grant are decided here every time.

    Raises:
        UnauthenticatedError: Anonymous, where the listing is public (401).
        NotFoundError: Missing, invisible, not a dataset, or no such (published) version.
        ForbiddenError: Visible, but the scope or a grant is missing, or the owner does not
            allow downloads.
    """
    if download:
        return _open_download(session, caller, handle, version, grid_m=grid_m)
    resolved = resolve_dataset(session, cache, handle, version)
    if resolved is None or not policy.can_see(caller, resolved.listing):
        raise _not_found(handle)
    product = resolved.listing
    if product.kind != ProductKind.DATASET.value:
        raise NotFoundError(f"product {handle!r} is a {product.kind}, not a dataset")
    if caller is None:
        raise UnauthenticatedError(
            "an API key is required (Authorization: Bearer <key> or X-API-Key)"
        )
    grant = _authorize(session, caller, product, handle)
    owner = caller.tenant_id == product.tenant_id
    row = resolved.row
    if row is None or (row.blocked and not owner):
        if version is None:
            raise NotFoundError(f"dataset {handle!r} has no published data version")
        raise NotFoundError(f"dataset {handle!r} has no data version {version}")
    view = masked_view(
        row.columns,
        raw=owner,
        unmasked=_unmasked(grant),
        grid_m=grid_m,
        key=None if owner else resolved.mask_key,
    )
    return DatasetTarget(
        handle=handle,
        product_id=product.id,
        owner_tenant_id=product.tenant_id,
        tier=product.tier,
        version=row.version,
        snapshot=Snapshot(row.digest, row.rows, row.bytes),
        view=view,
        owner=owner,
        signature=row.signature,
        unmasked=_unmasked(grant) if not owner else frozenset(),
    )


def _open_download(
    session: Session, caller: Caller, handle: str, version: int | None, *, grid_m: float
) -> DatasetTarget:
    product = catalog.get_product(session, caller, handle)
    if product.kind != ProductKind.DATASET.value:
        raise NotFoundError(f"product {handle!r} is a {product.kind}, not a dataset")
    caller = authorize_download(
        session, caller, product, handle=handle, use_scope=Scope.DATA_READ.value
    )
    grant = _grant(session, caller, product)
    owner = caller.tenant_id == product.tenant_id
    row = _version_row(session, product, handle, version, owner=owner)
    assert row.data_digest is not None
    columns = columns_of(row)
    view = masked_view(
        columns,
        raw=owner,
        unmasked=_unmasked(grant),
        grid_m=grid_m,
        key=None if owner else mask_key(session, product.id),
    )
    return DatasetTarget(
        handle=handle,
        product_id=product.id,
        owner_tenant_id=product.tenant_id,
        tier=product.tier,
        version=row.version,
        snapshot=Snapshot(row.data_digest, int(row.data_rows or 0), int(row.data_bytes or 0)),
        view=view,
        owner=owner,
    )


def version_data(
    session: Session, caller: Caller, product: Product, version: ProductVersion
) -> dict[str, Any] | None:
    """What ``GET .../versions/{n}`` shows of a data version to this caller: the schema as
    the caller would read it (sensitive columns gone, masked ones marked), rows, bytes,
    sha256 and the quality report (failing samples for the owner only). None without data."""
    if version.data_digest is None:
        return None
    owner = caller is not None and caller.tenant_id == product.tenant_id
    view = masked_view(
        columns_of(version), raw=owner, unmasked=_unmasked(_grant(session, caller, product))
    )
    visible = {c.name for c in view.columns}
    quality = dict(version.quality or {})
    rules = []
    for rule in quality.get("rules", []):
        if rule.get("column") is not None and rule["column"] not in visible:
            continue
        rules.append(rule if owner else {**rule, "sample": []})
    quality["rules"] = rules
    return {
        "schema": {"columns": view.schema()},
        "rows": version.data_rows,
        "bytes": version.data_bytes,
        "sha256": version.data_digest.removeprefix("sha256:"),
        "quality": quality,
    }


def check_dataset_owner(session: Session, caller: Principal, handle: str) -> Product:
    """The caller owns ``handle``, a dataset that takes new versions."""
    product = catalog.get_owned_product(session, caller, handle)
    if product.kind != ProductKind.DATASET.value:
        raise ConflictError(f"product {handle!r} is a {product.kind}; data versions need a dataset")
    if product.state == ProductState.DEPRECATED.value:
        raise ConflictError(f"product {handle} is deprecated; it takes no new versions")
    return product


def ensure_mask_key(session: Session, product: Product) -> None:
    if session.get(ProductMaskKey, product.id) is None:
        session.add(ProductMaskKey(product_id=product.id, key=secrets.token_bytes(32)))


def create_data_version(
    session: Session,
    caller: Principal,
    handle: str,
    *,
    data: dict[str, Any],
    notes: str = "",
    meta: dict[str, Any] | None = None,
) -> ProductVersion:
    """Record a data version (its snapshot already in the blob store); the product's listing
    takes its quality score."""
    product = check_dataset_owner(session, caller, handle)
    ensure_mask_key(session, product)
    version = catalog.create_version(session, caller, handle, notes=notes, meta=meta, data=data)
    product.quality_score = (data.get("quality") or {}).get("score")
    session.flush()
    return version


def _referenced(session: Session, digest: str) -> bool:
    found = session.scalar(
        select(ProductVersion.id)
        .where(or_(ProductVersion.data_digest == digest, ProductVersion.artifact_digest == digest))
        .limit(1)
    )
    return found is not None


def delete_if_orphan(factory: sessionmaker[Session], blobs: BlobStore, digest: str) -> None:
    """Remove a rejected snapshot unless a version (data or model) holds the same bytes."""
    try:
        with transaction(factory) as session:
            if _referenced(session, digest):
                return
        blobs.delete(digest)
    except Exception:  # the upload's own error is what the caller must see
        log.exception("could not remove the rejected snapshot %s", digest)
