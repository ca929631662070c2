"""Gateway fixtures: the demo city plus model products uploaded through the API."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from model_store import BlobStore, ModelManifest
from tests.unit.model_store.factories import make_torchscript_model
from tests.utils.city import City

if TYPE_CHECKING:
    from httpx2 import Response

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
    ) -> Response:
        return self.city.upload_model(owner, handle, artifact, manifest, **headers)

    def model(self, owner: str, *, tier: str = "public", publish: bool = True) -> str:
        return self.city.model(owner, self.artifact, self.manifest, tier=tier, publish=publish)

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
