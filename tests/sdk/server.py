"""The real platform in a subprocess, for tests of the SDK and the developer CLI.

A fresh SQLite database and data folder, migrated and seeded with the demo city (the demo model
included), served by ``citybrain serve`` on a free loopback port. The SDK talks to it over HTTP
exactly as a developer's program would; nothing here is mocked.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from billing.invoices import RunConfig
from billing.periods import Period
from marketplace.billing.service import run_billing
from marketplace.db import make_engine, make_session_factory, transaction
from marketplace.migrate import upgrade
from marketplace.seed import seed_demo_city
from model_store import BlobStore

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Platform:
    """A running platform: its URL, the demo tenants' keys and its data folder."""

    url: str
    keys: dict[str, str]
    data_dir: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def running_platform(data_dir: Path, env: Mapping[str, str] | None = None) -> Iterator[Platform]:
    """Migrate, seed and serve the demo city from ``data_dir``; stop the server on exit.

    Args:
        data_dir: An empty folder for the database, artifacts and the usage spool.
        env: Extra ``CITYBRAIN_*`` settings for the server process.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite:///{data_dir / 'citybrain.db'}"
    upgrade(database_url)
    engine = make_engine(database_url)
    with transaction(make_session_factory(engine)) as session:
        seeded = seed_demo_city(session, blobs=BlobStore(data_dir / "artifacts"))
    engine.dispose()
    port = free_port()
    log = (data_dir / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "marketplace.cli",
            "serve",
            "--port",
            str(port),
            "--database-url",
            database_url,
            "--data-dir",
            str(data_dir),
            "--no-migrate",
        ],
        cwd=ROOT,
        env={**os.environ, "CITYBRAIN_LOG_LEVEL": "warning", **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    "the platform exited: " + (data_dir / "server.log").read_text(errors="replace")
                )
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the platform did not become ready in 120 s")
            time.sleep(0.1)
        yield Platform(url=url, keys=dict(seeded.keys), data_dir=data_dir)
    finally:
        _stop(proc)
        log.close()


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
