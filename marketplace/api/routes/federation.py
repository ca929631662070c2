"""District hub federation, city side: the catalog feed a hub harvests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from marketplace.api.deps import SessionDep, require
from marketplace.context import Principal
from marketplace.federation.feed import read_feed

router = APIRouter(tags=["federation"])
HubDep = Annotated[Principal, Depends(require("catalog:read"))]


@router.get("/federation/feed")
def federation_feed(
    session: SessionDep,
    hub: HubDep,
    modified_since: Annotated[
        datetime | None, Query(description="Only listings changed after this time (ISO 8601)")
    ] = None,
) -> dict[str, Any]:
    """What this key's tenant may harvest: listings changed since a time, and every handle."""
    if modified_since is not None and modified_since.tzinfo is None:
        modified_since = modified_since.replace(tzinfo=UTC)
    return read_feed(session, hub, modified_since)
