"""Where a model's code runs: in a sandbox worker, or in process when the operator trusts it.

:class:`Isolation` is the embedded runtime's loader: models of formats that run their
publisher's code (``python``) load into a :class:`~model_store.sandbox.SandboxedModel` unless
the trust policy says yes for their runtime key; everything else (TorchScript) loads in
process. :func:`isolated_loader` never trusts: it is what upload validation uses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from model_store.formats import LoadedModel, Loader, load_model
from model_store.manifest import ModelManifest
from model_store.sandbox.client import SandboxedModel
from model_store.sandbox.config import SandboxConfig, runs_tenant_code

__all__ = ["Isolation", "TrustPolicy", "isolated_loader"]

log = logging.getLogger(__name__)

TrustPolicy = Callable[[str], bool]
"""Runtime key (``<handle>:<version>``) → whether its code may run in the platform's process.
Called in a worker thread when the model loads; it may read the database."""


def _never(_key: str) -> bool:
    return False


class Isolation:
    """Loads models, isolating tenant code unless its key is trusted.

    Args:
        config: The sandbox's limits (default :class:`SandboxConfig`).
        trusted: The trust policy (default: nothing is trusted). A policy that raises counts
            as "not trusted".

    Example:
        >>> isolation = Isolation(SandboxConfig(call_timeout_s=10))
        >>> model = isolation.load("acme.m:1", manifest, path)  # doctest: +SKIP
    """

    def __init__(
        self, config: SandboxConfig | None = None, trusted: TrustPolicy | None = None
    ) -> None:
        self.config = config or SandboxConfig()
        self._trusted = trusted or _never

    def is_trusted(self, key: str) -> bool:
        """Ask the trust policy about ``key`` (False if it fails).

        Args:
            key: The runtime key.

        Returns:
            Whether the model's code may run in process.
        """
        try:
            return bool(self._trusted(key))
        except Exception:
            log.exception("the trust policy failed for %s; running it isolated", key)
            return False

    def load(self, key: str, manifest: ModelManifest, artifact_path: Path) -> LoadedModel:
        """Load a model where its trust allows.

        Args:
            key: The runtime key.
            manifest: The artifact's manifest.
            artifact_path: A local file holding the artifact.

        Returns:
            The loaded model (a :class:`SandboxedModel` for untrusted tenant code).

        Raises:
            Exception: Whatever loading raises (see :class:`SandboxedModel` and the formats).
        """
        if not runs_tenant_code(manifest.format):
            return load_model(manifest, artifact_path)
        if self.is_trusted(key):
            log.info("model %s runs in process: the operator trusts its code", key)
            return load_model(manifest, artifact_path)
        return SandboxedModel(manifest, artifact_path, self.config, name=key)


def isolated_loader(config: SandboxConfig | None = None, *, name: str = "") -> Loader:
    """A loader that runs every tenant-code format in a sandbox worker, trusting no one.

    Args:
        config: The sandbox's limits.
        name: How messages name the model ("": "the model").

    Returns:
        A :class:`~model_store.formats.Loader`.
    """
    isolation = Isolation(config)

    def load(manifest: ModelManifest, artifact_path: Path) -> LoadedModel:
        return isolation.load(name, manifest, artifact_path)

    return load
