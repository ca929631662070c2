"""Publish a model product through the API, as its owner would: create, upload, publish.

Works with any ``httpx.Client`` (a bench's client of a server process, or a test's
``fastapi.testclient.TestClient``, which is one) whose default headers carry the owner's key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

__all__ = ["publish_model"]


def publish_model(
    api: httpx.Client,
    *,
    name: str,
    artifact: bytes,
    manifest: Mapping[str, Any] | str,
    title: str | None = None,
    domain: str = "traffic",
    tier: str = "public",
    headers: Mapping[str, str] | None = None,
) -> str:
    """Create model product ``name``, upload ``artifact`` as its first version under
    ``manifest`` (a document or its JSON), publish it; return its handle. Raises
    ``httpx.HTTPStatusError`` on any refusal."""
    extra = dict(headers or {})
    body = {"name": name, "kind": "model", "title": title or name, "domain": domain, "tier": tier}
    r = api.post("/api/v1/products", json=body, headers=extra)
    r.raise_for_status()
    handle = str(r.json()["handle"])
    doc = manifest if isinstance(manifest, str) else json.dumps(manifest)
    api.post(
        f"/api/v1/products/{handle}/versions/model",
        content=artifact,
        headers={**extra, "Content-Type": "application/octet-stream", "X-Model-Manifest": doc},
    ).raise_for_status()
    api.post(f"/api/v1/products/{handle}/publish", headers=extra).raise_for_status()
    return handle
