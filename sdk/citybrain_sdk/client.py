"""The front classes: :class:`Client` (blocking) and :class:`AsyncClient` (awaited).

Each holds one HTTP connection pool and one attribute per resource of the platform:
``catalog``, ``datasets``, ``models``, ``access``, ``keys``, ``usage``, ``invoices`` and
``quotas``. Defaults live in the constructor; per-call options are keyword-only arguments of
the resource methods.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import httpx

from citybrain_sdk._http import AsyncHTTP, Call, Retry, Settings, SyncHTTP
from citybrain_sdk.resources._base import AsyncResource, Spec, SyncResource, json_spec
from citybrain_sdk.resources.access import Access, AsyncAccess
from citybrain_sdk.resources.catalog import AsyncCatalog, Catalog
from citybrain_sdk.resources.datasets import AsyncDatasets, Datasets
from citybrain_sdk.resources.invoices import AsyncInvoices, Invoices
from citybrain_sdk.resources.keys import AsyncKeys, Keys
from citybrain_sdk.resources.models import AsyncModels, Models
from citybrain_sdk.resources.quotas import AsyncQuotas, Quotas
from citybrain_sdk.resources.usage import AsyncUsage, Usage
from citybrain_sdk.types import Me

__all__ = ["AsyncClient", "Client"]

DEFAULT_TIMEOUT_S = 60.0

_ME = json_spec(Call("GET", "/api/v1/me"), Me.from_json)


def _any_route(
    method: str,
    path: str,
    params: Mapping[str, Any] | None,
    json: Any,
    idempotency_key: str | None,
) -> Spec[Any]:
    call = Call(method.upper(), path, params=params, json=json, idempotency_key=idempotency_key)
    return json_spec(call, lambda doc: doc)


class Client(SyncResource):
    """A blocking client of one CityBrain platform.

    Args:
        base_url: The platform's address, e.g. ``"http://127.0.0.1:8000"``.
        api_key: An API key (``cbk_<id>_<secret>``).
        token: Or an OIDC access token of a portal user (pass one of the two, or neither for
            anonymous reads of public listings).
        retry: How 429/503 answers and broken connections are retried (default: 3 retries).
        timeout: Seconds per request, unless a call says otherwise.
        headers: Extra headers sent with every request.
        transport: An httpx transport (a proxy, a test double, a custom TLS setup).
        verify: TLS verification: True, False, or an ``ssl.SSLContext`` (e.g.
            ``ssl.create_default_context(cafile="city-ca.pem")`` for a private CA).

    Attributes:
        catalog: Search and read products, manage one's own listings.
        datasets: Query, download and push data.
        models: Inference, metadata, push and pull.
        access: Access requests and grants.
        keys: The tenant's API keys.
        usage: Metered usage.
        invoices: Invoices and statements.
        quotas: Quotas and rate limits.

    Example:
        >>> import numpy as np
        >>> from citybrain_sdk import Client, NotFound
        >>> cb = Client("http://127.0.0.1:8000", api_key=KEY)
        >>> hits = cb.catalog.search("air", domain="environment")
        >>> out = cb.models.infer("traffic-police.flow-smoother",
        ...                       {"flow": np.ones((2, 16), np.float32)})
        >>> out["smoothed"].shape
        (2, 16)
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        retry: Retry | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        verify: bool | ssl.SSLContext = True,
    ) -> None:
        settings = Settings(base_url, api_key, token, retry, timeout, headers, verify)
        super().__init__(SyncHTTP(settings, transport))
        self.base_url = self._http.base_url
        self.catalog = Catalog(self._http)
        self.datasets = Datasets(self._http)
        self.models = Models(self._http)
        self.access = Access(self._http)
        self.keys = Keys(self._http)
        self.usage = Usage(self._http)
        self.invoices = Invoices(self._http)
        self.quotas = Quotas(self._http)

    def me(self) -> Me:
        """Who the credentials belong to: the tenant, the key id and its scopes.

        Raises:
            Unauthorized: No credentials, or an unknown, expired or revoked key.

        Example:
            >>> cb.me().tenant.slug, cb.me().scopes
            ('parkeasy', ('billing:read', 'catalog:read', 'infer', …))
        """
        return self._run(_ME)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Call any route of the platform and get its decoded JSON (None for no body), with
        the client's credentials, retries and typed errors: for routes the SDK does not wrap.

        Args:
            method: ``"GET"``, ``"POST"``…
            path: The path, e.g. ``"/api/v1/statements"``.
            params: Query parameters.
            json: A JSON body.
            idempotency_key: Sent as ``Idempotency-Key`` (makes a broken call safe to resend).

        Example:
            >>> cb.request("GET", "/api/v1/tenants")["count"]
            9
        """
        return self._run(_any_route(method, path, params, json, idempotency_key))

    def close(self) -> None:
        """Close the connection pool (``with Client(...) as cb:`` does it for you).

        Example:
            >>> cb.close()
        """
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(AsyncResource):
    """The awaited twin of :class:`Client`: the same constructor and resources, every method a
    coroutine.

    Example:
        >>> async with AsyncClient("http://127.0.0.1:8000", api_key=KEY) as cb:
        ...     hits = await cb.catalog.search("air")
        ...     out = await cb.models.infer("traffic-police.flow-smoother", {"flow": flow})
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        retry: Retry | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: bool | ssl.SSLContext = True,
    ) -> None:
        settings = Settings(base_url, api_key, token, retry, timeout, headers, verify)
        super().__init__(AsyncHTTP(settings, transport))
        self.base_url = self._http.base_url
        self.catalog = AsyncCatalog(self._http)
        self.datasets = AsyncDatasets(self._http)
        self.models = AsyncModels(self._http)
        self.access = AsyncAccess(self._http)
        self.keys = AsyncKeys(self._http)
        self.usage = AsyncUsage(self._http)
        self.invoices = AsyncInvoices(self._http)
        self.quotas = AsyncQuotas(self._http)

    async def me(self) -> Me:
        """Who the credentials belong to; see :meth:`Client.me`.

        Example:
            >>> (await cb.me()).tenant.slug
            'parkeasy'
        """
        return await self._run(_ME)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Call any route; see :meth:`Client.request`.

        Example:
            >>> tenants = await cb.request("GET", "/api/v1/tenants")
        """
        return await self._run(_any_route(method, path, params, json, idempotency_key))

    async def aclose(self) -> None:
        """Close the connection pool (``async with`` does it for you).

        Example:
            >>> await cb.aclose()
        """
        await self._http.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
