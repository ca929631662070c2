"""End-to-end fixtures: the platform as a real server process, the OpenID provider of
tests/oidc, and Debian's Chromium driven by Playwright.

The server is ``python -m marketplace.cli serve`` on a free port over a migrated SQLite
database holding the demo city (with the built-in flow-smoother model) and a month of billable
history (``tests.utils.portal.bill_last_month``), so the operator has a month to close. Usage
is flushed every 0.2 s, so a call shows in the portal's usage chart at once.

Chromium is Debian's (``apt-get install chromium``, ``make system-deps`` does it); Playwright's
own browser downloads are never used. axe-core comes from tests/e2e/node_modules
(``npm ci``, as ``make test`` runs it). Screenshots go to ``var/screenshots/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from marketplace.db import make_engine, make_session_factory, transaction
from marketplace.migrate import upgrade
from marketplace.seed import seed_demo_city
from model_store import BlobStore
from tests.e2e.helpers import CHROMIUM, PASSWORD
from tests.utils.oidc import oidc_provider
from tests.utils.portal import bill_last_month
from tests.utils.server import free_port, platform_server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@dataclass
class Platform:
    url: str
    oidc_url: str
    keys: dict[str, str]
    billed_month: str
    log: Path


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    base = tmp_path_factory.mktemp("e2e")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with oidc_provider(f"{url}/auth/callback") as oidc_url:
        database_url = f"sqlite:///{base / 'citybrain.db'}"
        upgrade(database_url)
        engine = make_engine(database_url)
        with transaction(make_session_factory(engine)) as session:
            keys = seed_demo_city(session, blobs=BlobStore(base / "var" / "artifacts")).keys
            month = bill_last_month(
                session, consumer="parkeasy", handle="traffic-police.flow-smoother", calls=40
            )
        engine.dispose()
        env = {
            "CITYBRAIN_OIDC__SERVER_URL": oidc_url,
            "CITYBRAIN_OIDC__REALM": "citybrain",
            "CITYBRAIN_PORTAL__OIDC_CLIENT_ID": "citybrain-portal",
            "CITYBRAIN_PORTAL__OIDC_CLIENT_SECRET": PASSWORD,
            "CITYBRAIN_BILLING__FLUSH_INTERVAL_S": "0.2",
        }
        log = base / "server.log"
        with platform_server(
            database_url=database_url, data_dir=base / "var", log=log, env=env, port=port
        ):
            yield Platform(url, oidc_url, keys, str(month), log)


# Package scope, not session: Playwright's sync API keeps an asyncio loop running in the main
# thread while it is open, and every later test that calls asyncio.run() would fail on it.
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (make system-deps)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def new_context(browser: Any, platform: Platform) -> Iterator[Any]:
    """Make browser contexts (one per user: each its own cookies), closed afterwards.

    ``bypass_csp``: the pages forbid every script (Content-Security-Policy), and axe-core is
    a script the tests inject; the CSP header itself is checked on its own.
    """
    made: list[Any] = []

    def make(locale: str = "en-GB") -> Any:
        context = browser.new_context(
            base_url=platform.url,
            locale=locale,
            viewport={"width": 1280, "height": 860},
            bypass_csp=True,
            accept_downloads=True,
        )
        context.set_default_timeout(15_000)
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()
