"""citybrain-sdk: the Python client of the CityBrain Open Platform.

>>> import numpy as np
>>> from citybrain_sdk import Client, NotFound
>>> cb = Client("http://127.0.0.1:8000", api_key=KEY)
>>> hits = cb.catalog.search("air", domain="environment")        # .data, .count, .facets
>>> out = cb.models.infer("traffic-police.flow-smoother", {"flow": np.ones((2, 16), np.float32)})
>>> out["smoothed"]                                                # a numpy array
>>> page = cb.datasets.query("traffic-police.intersection-flow", select=["intersection"], limit=5)
>>> cb.catalog.get("traffic-police.no-such-product")              # raises NotFound (.request_id)

:class:`Client` blocks, :class:`AsyncClient` is awaited; both have the resources ``catalog``,
``datasets``, ``models``, ``access``, ``keys``, ``usage``, ``invoices`` and ``quotas``. Errors
are typed after the platform's stable codes (:mod:`citybrain_sdk.errors`).
"""

from citybrain_sdk._http import Retry, RetryEvent
from citybrain_sdk._version import __version__
from citybrain_sdk.client import AsyncClient, Client
from citybrain_sdk.errors import (
    APIError,
    BadRequest,
    CityBrainError,
    Conflict,
    ConnectionFailed,
    DigestMismatch,
    Forbidden,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    Unauthenticated,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    ValidationError,
    raise_for_status,
)
from citybrain_sdk.resources.query import Column, QueryResult
from citybrain_sdk.tensors import InferResult
from citybrain_sdk.types import (
    AccessRequest,
    ApiKey,
    Document,
    DocumentDetail,
    DocumentLine,
    Grant,
    IssuedKey,
    Me,
    Page,
    Product,
    Quota,
    SearchResult,
    Tenant,
    UsageRow,
    Version,
)

__all__ = [
    "APIError",
    "AccessRequest",
    "ApiKey",
    "AsyncClient",
    "BadRequest",
    "CityBrainError",
    "Client",
    "Column",
    "Conflict",
    "ConnectionFailed",
    "DigestMismatch",
    "Document",
    "DocumentDetail",
    "DocumentLine",
    "Forbidden",
    "Grant",
    "InferResult",
    "InternalError",
    "IssuedKey",
    "Me",
    "MethodNotAllowed",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "Product",
    "QueryResult",
    "Quota",
    "QuotaExceeded",
    "Retry",
    "RetryEvent",
    "SearchResult",
    "Tenant",
    "Unauthenticated",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "UsageRow",
    "ValidationError",
    "Version",
    "__version__",
    "raise_for_status",
]
