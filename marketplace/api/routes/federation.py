"""District hub federation, city side: the catalog feed a hub harvests."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from marketplace.api.deps import SessionDep, require
from marketplace.api.params import Instant
from marketplace.context import Principal
from marketplace.federation.feed import read_feed

router = APIRouter(tags=["federation"])
HubDep = Annotated[Principal, Depends(require("catalog:read"))]


@router.get("/federation/feed")
def federation_feed(
    session: SessionDep,
    hub: HubDep,
    modified_since: Annotated[
        Instant | None,
        Query(description="Only listings changed after this RFC 3339 instant (offset required)"),
    ] = None,
) -> dict[str, Any]:
    """What this key's tenant may harvest: listings changed since a time, and every handle."""
    return read_feed(session, hub, modified_since)
