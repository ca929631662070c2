"""One harvest of the city's catalog into this hub, and the schedule that repeats it.

``citybrain federation pull`` runs :func:`harvest_once`; a server with
``federation.pull_interval_seconds`` set runs :func:`run_harvest` that often
(:func:`pull_forever`). Each run reads the city's feed of changes since the last run's
watermark and applies it in one transaction (``harvest.apply_feed``): a run that fails leaves
the mirrors and the watermark as they were, so the next one starts over from the same point.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.orm import Session, sessionmaker

from marketplace.config import FederationSettings
from marketplace.errors import CityBrainError
from marketplace.federation.client import CityClient
from marketplace.federation.harvest import HarvestReport, apply_feed, since_for

log = logging.getLogger(__name__)


def harvest_once(session: Session, city: CityClient) -> HarvestReport:
    """Read the feed since the watermark and apply it, in the caller's transaction."""
    feed = city.feed(since_for(session, city.url))
    return apply_feed(session, city.url, feed)


def run_harvest(
    sessions: sessionmaker[Session],
    settings: FederationSettings,
    *,
    client: CityClient | None = None,
) -> HarvestReport:
    """Harvest once in a transaction of its own; the report says what changed."""
    own = client is None
    city = client or CityClient(settings)
    try:
        with sessions() as session, session.begin():
            return harvest_once(session, city)
    finally:
        if own:
            city.close()


async def pull_forever(
    sessions: sessionmaker[Session],
    settings: FederationSettings,
    *,
    client: CityClient | None = None,
) -> None:
    """Harvest every ``pull_interval_seconds`` until cancelled; a failed run is logged and
    retried at the next tick. ``client``: the city (default: one per run from ``settings``)."""
    while True:
        try:
            report = await asyncio.to_thread(run_harvest, sessions, settings, client=client)
            log.info(
                "federation pull: %d created, %d updated, %d withdrawn, %d skipped",
                len(report.created),
                len(report.updated),
                len(report.withdrawn),
                len(report.skipped),
            )
        except CityBrainError as e:
            log.warning("federation pull failed: %s", e.message)
        except Exception:  # the loop's edge: an unforeseen failure must not end the schedule
            log.exception("federation pull failed")
        await asyncio.sleep(settings.pull_interval_seconds)
