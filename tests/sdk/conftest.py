"""Fixtures for the SDK and CLI tests: one real platform per session (a subprocess on a free
port, fresh SQLite, the demo city seeded), and clients of it per demo tenant.

Tests that change state make what they change (a product, a key, a quota) or act as a tenant no
other test acts as, so sharing one server keeps them independent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from citybrain_sdk import APIError, Client, MethodNotAllowed, NotFound, UsageRow

from tests.sdk.server import Platform, running_platform

# Usage reaches the database within a fifth of a second, and a new quota applies at once.
SERVER_ENV = {
    "CITYBRAIN_BILLING__FLUSH_INTERVAL_S": "0.2",
    "CITYBRAIN_GATEWAY__QUOTA_CACHE_S": "0",
}


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("platform"), SERVER_ENV) as p:
        yield p


@pytest.fixture(scope="session")
def url(platform: Platform) -> str:
    return platform.url


@pytest.fixture
def cb(platform: Platform) -> Iterator[Client]:
    """The developer company ParkEasy's client (a demo key with every scope)."""
    with Client(platform.url, api_key=platform.keys["parkeasy"]) as client:
        yield client


@pytest.fixture(scope="session")
def smoother_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The demo's flow smoother as a developer would hold it: a TorchScript file and its
    manifest (JSON-ready), to push as models of their own."""
    from model_store.builtin import flow_smoother

    path, manifest = flow_smoother.build(tmp_path_factory.mktemp("smoother"))
    return path, manifest.model_dump(mode="json")


def publish_model(
    platform: Platform,
    owner: str,
    name: str,
    artifact: tuple[Path, dict[str, Any]],
    *,
    tier: str = "public",
) -> str:
    """Create a model product for ``owner``, push the artifact and publish it (the operator
    approves a restricted or confidential one); return its handle."""
    path, manifest = artifact
    with client_for(platform, owner) as cb:
        product = cb.catalog.create(
            name, kind="model", title=f"Model {name}", domain="traffic", tier=tier
        )
        cb.models.push(product.handle, path, manifest, notes="from the SDK tests")
        if tier == "public":
            cb.catalog.publish(product.handle)
            return product.handle
        cb.catalog.submit(product.handle)
    with client_for(platform, "data-bureau") as operator:
        operator.catalog.approve(product.handle, note="SDK tests")
    return product.handle


def client_for(platform: Platform, tenant: str) -> Client:
    """A client with a demo tenant's key (close it, or use it in a ``with``)."""
    return Client(platform.url, api_key=platform.keys[tenant])


def await_usage(client: Client, product: str, *, events: int) -> list[UsageRow]:
    """The caller's usage of ``product`` once it shows at least ``events`` events.

    Usage reaches the database from the spool within the flush interval (0.2 s here), so this
    polls; the bound only stops a broken flusher from hanging the run (it is not a timing test).
    """
    deadline = time.monotonic() + 30
    while True:
        rows = client.usage.list(product=product)
        if sum(r.events for r in rows) >= events or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def skip_unless_route(error: APIError) -> None:
    """Skip while the platform lacks the route (issue 16's data upload, query and download
    API): a 404 "no route", or a 405 where the path matches another route's. Any other error
    is an answer of the route, and re-raised."""
    missing = isinstance(error, NotFound) and error.server_message.startswith("no route")
    if missing or isinstance(error, MethodNotAllowed):
        pytest.skip(f"the platform has no such route yet ({error.server_message}); issue 16")
    raise error
