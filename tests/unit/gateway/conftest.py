"""Gateway fixtures: the demo city plus model products uploaded through the API."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from model_store import BlobStore, ModelManifest
from tests.unit.model_store.factories import make_torchscript_model
from tests.utils.city import City

UPLOAD = "/api/v1/products/{}/versions/model"


@dataclass
class Models:
    """A published public doubler owned by traffic-police, and helpers to make more."""

    city: City
    tmp: Path
    public: str
    artifact: Path
    manifest: ModelManifest

    def upload(
        self,
        owner: str,
        handle: str,
        artifact: Path,
        manifest: ModelManifest | dict[str, object],
        **headers: str,
    ) -> object:
        doc = manifest.model_dump(mode="json") if isinstance(manifest, ModelManifest) else manifest
        return self.city.client.post(
            UPLOAD.format(handle),
            content=artifact.read_bytes(),
            headers={
                **self.city.headers(owner),
                "Content-Type": "application/octet-stream",
                "X-Model-Manifest": json.dumps(doc),
                **headers,
            },
        )

    def model(self, owner: str, *, tier: str = "public", publish: bool = True) -> str:
        handle = self.city.product(owner, tier=tier, kind="model", publish=False)
        r = self.upload(owner, handle, self.artifact, self.manifest)
        assert r.status_code == 201, r.text  # type: ignore[attr-defined]
        if publish:
            if tier in ("public", "secret"):
                r = self.city.client.post(
                    f"/api/v1/products/{handle}/publish", headers=self.city.headers(owner)
                )
            else:
                self.city.client.post(
                    f"/api/v1/products/{handle}/submit", headers=self.city.headers(owner)
                )
                r = self.city.client.post(
                    f"/api/v1/products/{handle}/approve",
                    json={"note": "ok"},
                    headers=self.city.headers("data-bureau"),
                )
            assert r.status_code == 200, r.text  # type: ignore[attr-defined]
        return handle

    @property
    def blobs(self) -> BlobStore:
        store: BlobStore = self.city.client.app.state.blobs  # type: ignore[attr-defined]
        return store


@pytest.fixture
def models(city: City, tmp_path: Path) -> Models:
    artifact, manifest = make_torchscript_model(tmp_path)
    m = Models(city=city, tmp=tmp_path, public="", artifact=artifact, manifest=manifest)
    m.public = m.model("traffic-police")
    return m


def python_model(
    tmp_path: Path, source: str, manifest: dict[str, object]
) -> tuple[Path, dict[str, object]]:
    """A python-format model from source (module ``m``, class ``M``)."""
    path = tmp_path / "m.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("m.py", source)
    return path, {"format": "python", "entrypoint": "m:M", **manifest}


__all__ = ["UPLOAD", "Models", "python_model"]
