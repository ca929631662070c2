"""The real platform in a subprocess, for tests of the SDK and the developer CLI.

A fresh SQLite database and data folder, migrated and seeded with the demo city (the demo model
included), served by ``citybrain serve`` on a free loopback port. The SDK talks to it over HTTP
exactly as a developer's program would; nothing here is mocked.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from billing.invoices import RunConfig
from billing.periods import Period
from marketplace.billing.service import run_billing
from marketplace.db import make_engine, make_session_factory, transaction
from model_store import BlobStore
from tests.utils.city import migrate_and_seed
from tests.utils.server import running_platform_server


@dataclass(frozen=True)
class Platform:
    """A running platform: its URL, the demo tenants' keys and its data folder."""

    url: str
    keys: dict[str, str]
    data_dir: Path


@contextmanager
def running_platform(data_dir: Path, env: Mapping[str, str] | None = None) -> Iterator[Platform]:
    """Migrate, seed and serve the demo city from ``data_dir``; stop the server on exit.

    Args:
        data_dir: An empty folder for the database, artifacts and the usage spool.
        env: Extra ``CITYBRAIN_*`` settings for the server process.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite:///{data_dir / 'citybrain.db'}"
    seeded = migrate_and_seed(database_url, blobs=BlobStore(data_dir / "artifacts"))
    with running_platform_server(
        database_url=database_url, data_dir=data_dir, log=data_dir / "server.log", env=env
    ) as server:
        yield Platform(url=server.url, keys=dict(seeded.keys), data_dir=data_dir)


def close_month(platform: Platform) -> str:
    """Close this month's billing period as the operator would at month end (``citybrain
    billing run``), with the clock set just past the period's end; return the period."""
    period = Period.of(datetime.now(UTC))
    engine = make_engine(f"sqlite:///{platform.data_dir / 'citybrain.db'}")
    try:
        with transaction(make_session_factory(engine)) as session:
            run_billing(session, period, now=period.end + timedelta(hours=1), config=RunConfig())
    finally:
        engine.dispose()
    return str(period)
