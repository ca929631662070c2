"""Errors of the model store.

Each error class says in its docstring which HTTP status it maps to; the service registers one
handler for :class:`ModelStoreError` that answers ``{"error": message, "code": code}`` with
``status`` and ``headers``. This module knows nothing of HTTP frameworks.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ArtifactNotFoundError",
    "ArtifactTooLargeError",
    "InferenceFailedError",
    "InferenceInputError",
    "InvalidArtifactError",
    "ModelStoreError",
    "ModelUnavailableError",
    "QueueFullError",
]


class ModelStoreError(Exception):
    """Root of the model store's errors (500 "InternalError" unless a subclass says otherwise).

    Attributes:
        status: The HTTP status the error maps to.
        code: A stable, machine-readable name of the error.
        message: A message safe to show to the caller.
        headers: Extra response headers (e.g. ``Retry-After``).
    """

    status: ClassVar[int] = 500
    code: ClassVar[str] = "InternalError"
    default_headers: ClassVar[dict[str, str]] = {}

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        """Create the error.

        Args:
            message: What went wrong, phrased for the caller.
            headers: Extra response headers; merged over the class's defaults.
        """
        super().__init__(message)
        self.message = message
        self.headers: dict[str, str] = {**self.default_headers, **(headers or {})}


class InvalidArtifactError(ModelStoreError):
    """422 "InvalidArtifact": digest mismatch, unloadable model or signature mismatch.

    The message starts with which of these it is, e.g. ``"digest mismatch: …"``,
    ``"unloadable: …"`` or ``"signature mismatch: output 'y' …"``.
    """

    status = 422
    code = "InvalidArtifact"


class ArtifactTooLargeError(ModelStoreError):
    """413 "PayloadTooLarge": an uploaded artifact is over the configured limit."""

    status = 413
    code = "PayloadTooLarge"


class ArtifactNotFoundError(ModelStoreError):
    """404 "NotFound": no blob with this digest is stored."""

    status = 404
    code = "NotFound"


class InferenceInputError(ModelStoreError):
    """400 "BadRequest": a malformed inference request; the message names the input.

    Examples: ``"input 'flow': expected FP32, got INT64"``, ``"unknown input 'x'"``,
    ``"missing input 'flow'"``, ``"input 'flow': shape [2, 3] needs 6 elements, got 5"``,
    ``"truncated binary data for input 'flow'"``.
    """

    status = 400
    code = "BadRequest"


class ModelUnavailableError(ModelStoreError):
    """503 "ModelUnavailable": the model is not registered, failed to load or was unloaded."""

    status = 503
    code = "ModelUnavailable"


class QueueFullError(ModelStoreError):
    """503 "QueueFull": the model's batching queue is full; retry after the ``Retry-After``."""

    status = 503
    code = "QueueFull"
    default_headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}


class InferenceFailedError(ModelStoreError):
    """500 "InferenceFailed": the model raised; the message is generic (details are logged)."""

    status = 500
    code = "InferenceFailed"
