"""One harvest of the city's catalog into this hub, and the schedule that repeats it.

``citybrain federation pull`` runs :func:`run_harvest` once; a server with
``federation.pull_interval_seconds`` set runs it that often (:func:`pull_forever`). Each run
reads the city's feed of changes since the last run's watermark and applies it in one
transaction (``harvest.apply_feed``): a run that fails leaves the mirrors and the watermark as
they were, so the next one starts over from the same point.
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


def run_harvest(
    sessions: sessionmaker[Session],
    settings: FederationSettings,
    *,
    client: CityClient | None = None,
) -> HarvestReport:
    """Harvest once (see the module docstring); the report says what changed."""
    own = client is None
    city = client or CityClient(settings)
    try:
        with sessions() as session:
            since = since_for(session, city.url)
        feed = city.feed(since)
        with sessions() as session, session.begin():
            return apply_feed(session, city.url, feed)
    finally:
        if own:
            city.close()


async def pull_forever(sessions: sessionmaker[Session], settings: FederationSettings) -> None:
    """Harvest every ``pull_interval_seconds`` until cancelled; a failed run is logged and
    retried at the next tick."""
    while True:
        try:
            report = await asyncio.to_thread(run_harvest, sessions, settings)
            log.info(
                "federation pull: %d created, %d updated, %d withdrawn, %d skipped",
                len(report.created),
                len(report.updated),
                len(report.withdrawn),
                len(report.skipped),
            )
        except CityBrainError as e:
            log.warning("federation pull failed: %s", e.message)
        await asyncio.sleep(settings.pull_interval_seconds)
