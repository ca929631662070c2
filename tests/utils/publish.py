"""Publish a model product through the API, as its owner would: create, upload, publish.

Works with any ``httpx.Client`` (a bench's client of a server process, or a test's
``fastapi.testclient.TestClient``, which is one) whose default headers carry the owner's key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

__all__ = ["model_upload_headers", "publish_model"]


def model_upload_headers(manifest: Any) -> dict[str, str]:
    """The headers of a model version's upload: the artifact's type and ``manifest`` (a
    ``ModelManifest``, a document or its JSON) in ``X-Model-Manifest``."""
    if isinstance(manifest, str):
        doc = manifest
    elif isinstance(manifest, Mapping):
        doc = json.dumps(manifest)
    else:
        doc = json.dumps(manifest.model_dump(mode="json"))
    return {"Content-Type": "application/octet-stream", "X-Model-Manifest": doc}


def publish_model(
    api: httpx.Client,
    *,
    name: str,
    artifact: bytes,
    manifest: Any,
    title: str | None = None,
    domain: str = "traffic",
    tier: str = "public",
    headers: Mapping[str, str] | None = None,
) -> str:
    """Create model product ``name``, upload ``artifact`` as its first version under
    ``manifest`` (see :func:`model_upload_headers`), publish it; return its handle. Raises
    ``httpx.HTTPStatusError`` on any refusal."""
    extra = dict(headers or {})
    body = {"name": name, "kind": "model", "title": title or name, "domain": domain, "tier": tier}
    r = api.post("/api/v1/products", json=body, headers=extra)
    r.raise_for_status()
    handle = str(r.json()["handle"])
    api.post(
        f"/api/v1/products/{handle}/versions/model",
        content=artifact,
        headers={**extra, **model_upload_headers(manifest)},
    ).raise_for_status()
    api.post(f"/api/v1/products/{handle}/publish", headers=extra).raise_for_status()
    return handle
