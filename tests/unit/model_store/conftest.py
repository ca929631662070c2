"""Shared by the built-in models' tests: ``model`` loads what a module's ``built`` fixture built."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from model_store.formats import LoadedModel, load_model
from model_store.manifest import ModelManifest


@pytest.fixture(scope="module")
def model(built: tuple[Path, ModelManifest]) -> Iterator[LoadedModel]:
    """The module's built model (its ``built`` fixture: artifact and manifest), loaded once."""
    path, manifest = built
    loaded = load_model(manifest, path)
    yield loaded
    loaded.close()
