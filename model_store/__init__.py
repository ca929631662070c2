"""CityBrain model store: content-addressed artifacts, model formats, the v2 codec, runtimes.

The data plane of model serving. It knows nothing of HTTP: the service decodes requests with
:mod:`model_store.v2`, runs them on a :class:`~model_store.runtimes.Runtime` and maps
:class:`~model_store.errors.ModelStoreError` subclasses onto responses via their ``status``,
``code`` and ``headers``.
"""

from model_store.blobstore import BlobInfo, BlobStore
from model_store.errors import (
    ArtifactNotFoundError,
    ArtifactTooLargeError,
    InferenceFailedError,
    InferenceInputError,
    InvalidArtifactError,
    ModelStoreError,
    ModelUnavailableError,
    QueueFullError,
)
from model_store.formats import LoadedModel, load_model
from model_store.manifest import BatchingConfig, MeteringSpec, ModelManifest, TensorSpec
from model_store.runtimes import EmbeddedRuntime, ModelStats, Runtime, RuntimeObserver, RuntimeStats
from model_store.validation import validate_model

__all__ = [
    "ArtifactNotFoundError",
    "ArtifactTooLargeError",
    "BatchingConfig",
    "BlobInfo",
    "BlobStore",
    "EmbeddedRuntime",
    "InferenceFailedError",
    "InferenceInputError",
    "InvalidArtifactError",
    "LoadedModel",
    "MeteringSpec",
    "ModelManifest",
    "ModelStats",
    "ModelStoreError",
    "ModelUnavailableError",
    "QueueFullError",
    "Runtime",
    "RuntimeObserver",
    "RuntimeStats",
    "TensorSpec",
    "load_model",
    "validate_model",
]
