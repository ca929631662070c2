"""Model versions through the API: streamed upload (all or nothing) and download."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fastapi.testclient import TestClient

from marketplace.api.app import create_app
from marketplace.config import Settings
from marketplace.db import transaction
from marketplace.seed import seed_demo_city
from tests.unit.gateway.conftest import UPLOAD, Models
from tests.unit.model_store.factories import doubler_manifest, make_torchscript_model
from tests.utils.city import City


def _digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _nothing_stored(models: Models, handle: str, versions: int = 0) -> None:
    r = models.city.client.get(
        f"/api/v1/products/{handle}/versions", headers=models.city.headers("traffic-police")
    )
    assert r.json()["count"] == versions
    if versions == 0:
        assert models.blobs.list_digests() == [_digest(models.artifact)]  # the fixture's model
    tmp = Path(models.city.client.app.state.settings.model_store.artifact_url) / "tmp"  # type: ignore[attr-defined]
    assert not tmp.exists() or not any(tmp.iterdir())


def test_upload_stores_a_version_and_download_returns_the_same_bytes(models: Models) -> None:
    handle = models.city.product("traffic-police", kind="model", publish=False)
    r = models.upload(
        "traffic-police",
        handle,
        models.artifact,
        models.manifest,
        **{"X-Artifact-Digest": _digest(models.artifact)},
    )
    assert r.status_code == 201, r.text
    v = r.json()
    assert v["version"] == 1 and v["artifact_digest"] == _digest(models.artifact)
    assert v["manifest"]["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}]
    assert v["metadata"]["artifact_size"] == models.artifact.stat().st_size
    # Drafts are the owner's: the owner downloads, others see nothing.
    d = models.city.client.get(
        f"/api/v1/products/{handle}/versions/1/artifact",
        headers=models.city.headers("traffic-police"),
    )
    assert d.status_code == 200
    assert d.content == models.artifact.read_bytes()
    assert d.headers["x-artifact-digest"] == _digest(models.artifact)
    hidden = models.city.client.get(
        f"/api/v1/products/{handle}/versions/1/artifact", headers=models.city.headers("parkeasy")
    )
    assert hidden.status_code == 404


def test_public_artifacts_need_a_key_to_download(models: Models) -> None:
    # Listing a public model is open to anyone; downloading it is metered, so it takes a key
    # (the rest of the rule: tests/unit/gateway/test_downloads.py).
    r = models.city.client.get(f"/api/v1/products/{models.public}/versions/1/artifact")
    assert r.status_code == 401


def test_digest_mismatch_is_refused_and_leaves_nothing(models: Models) -> None:
    handle = models.city.product("traffic-police", kind="model", publish=False)
    r = models.upload(
        "traffic-police",
        handle,
        models.artifact,
        models.manifest,
        **{"X-Artifact-Digest": "sha256:" + "0" * 64},
    )
    assert r.status_code == 422
    assert r.json()["code"] == "InvalidArtifact" and "digest mismatch" in r.json()["error"]
    _nothing_stored(models, handle)


def test_unloadable_artifact_is_refused_and_leaves_nothing(models: Models) -> None:
    handle = models.city.product("traffic-police", kind="model", publish=False)
    junk = models.tmp / "junk.pt"
    junk.write_bytes(b"not a torchscript archive" * 100)
    r = models.upload("traffic-police", handle, junk, models.manifest)
    assert r.status_code == 422 and r.json()["error"].startswith("unloadable")
    _nothing_stored(models, handle)


def test_signature_mismatch_is_refused_and_leaves_nothing(models: Models) -> None:
    handle = models.city.product("traffic-police", kind="model", publish=False)
    wrong = models.manifest.model_dump(mode="json")
    wrong["outputs"] = [{"name": "y", "datatype": "INT32", "shape": [-1, -1]}]
    r = models.upload("traffic-police", handle, models.artifact, wrong)
    assert r.status_code == 422 and "signature mismatch" in r.json()["error"]
    _nothing_stored(models, handle)


def test_a_rejected_upload_keeps_the_blob_another_version_uses(models: Models) -> None:
    wrong = models.manifest.model_dump(mode="json")
    wrong["outputs"] = [{"name": "y", "datatype": "INT32", "shape": [-1, -1]}]
    r = models.upload("traffic-police", models.public, models.artifact, wrong)
    assert r.status_code == 422
    d = models.city.client.get(
        f"/api/v1/products/{models.public}/versions/1/artifact",
        headers=models.city.headers("traffic-police"),
    )
    assert d.status_code == 200 and d.content == models.artifact.read_bytes()
    _nothing_stored(models, models.public, versions=1)


def test_upload_errors_name_the_problem(models: Models) -> None:
    c, h = models.city.client, models.city.headers
    dataset = models.city.product("traffic-police", kind="dataset")
    body = models.artifact.read_bytes()
    manifest = json.dumps(models.manifest.model_dump(mode="json"))
    hdr = {"X-Model-Manifest": manifest}

    r = c.post(UPLOAD.format(models.public), content=body, headers=h("traffic-police"))
    assert r.status_code == 422 and "X-Model-Manifest" in r.json()["error"]
    r = c.post(
        UPLOAD.format(models.public),
        content=body,
        headers={**h("traffic-police"), "X-Model-Manifest": "{"},
    )
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]
    r = c.post(
        UPLOAD.format(models.public),
        content=body,
        headers={**h("traffic-police"), "X-Model-Manifest": '{"format": "savedmodel"}'},
    )
    assert r.status_code == 422 and "format" in r.json()["error"]
    r = c.post(UPLOAD.format(dataset), content=body, headers={**h("traffic-police"), **hdr})
    assert r.status_code == 409 and "dataset" in r.json()["error"]
    r = c.post(UPLOAD.format(models.public), content=body, headers={**h("parkeasy"), **hdr})
    assert r.status_code == 403
    r = c.post(UPLOAD.format(models.public), content=body, headers=hdr)
    assert r.status_code == 401
    reader = models.city.key("traffic-police", scopes=["catalog:read", "infer"])
    r = c.post(UPLOAD.format(models.public), content=body, headers={"X-API-Key": reader, **hdr})
    assert r.status_code == 403 and "catalog:write" in r.json()["error"]
    for r in (
        c.post(
            UPLOAD.format("traffic-police.nothing"),
            content=body,
            headers={**h("traffic-police"), **hdr},
        ),
        c.post(
            UPLOAD.format("nobody.nothing"), content=body, headers={**h("traffic-police"), **hdr}
        ),
    ):
        assert r.status_code == 404 and set(r.json()) == {"error", "code", "request_id"}


def test_upload_has_its_own_size_limit_not_the_json_one(tmp_path: Path, database_url: str) -> None:
    artifact, manifest = make_torchscript_model(tmp_path)
    size = artifact.stat().st_size
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        max_body_bytes=size // 4,  # far below the artifact
        model_store={"max_upload_bytes": size + 10},
    )
    with TestClient(create_app(settings)) as client:
        with transaction(client.app.state.session_factory) as s:  # type: ignore[attr-defined]
            keys = seed_demo_city(s).keys
        city = City(client=client, keys=keys, session_factory=client.app.state.session_factory)  # type: ignore[attr-defined]
        handle = city.product("traffic-police", kind="model", publish=False)
        hdr = {
            **city.headers("traffic-police"),
            "X-Model-Manifest": json.dumps(manifest.model_dump(mode="json")),
        }
        r = client.post(UPLOAD.format(handle), content=artifact.read_bytes(), headers=hdr)
        assert r.status_code == 201, r.text
        big = artifact.read_bytes() + b"\0" * 64
        r = client.post(UPLOAD.format(handle), content=big, headers=hdr)
        assert r.status_code == 413 and r.json()["code"] == "PayloadTooLarge"

        def chunked():  # no Content-Length: the limit applies while streaming
            yield big[:1000]
            yield big[1000:]

        r = client.post(UPLOAD.format(handle), content=chunked(), headers=hdr)
        assert r.status_code == 413
        assert client.get(f"/api/v1/products/{handle}/versions", headers=hdr).json()["count"] == 1
        store = client.app.state.blobs  # type: ignore[attr-defined]
        assert len(store.list_digests()) == 1
    assert doubler_manifest().batched
