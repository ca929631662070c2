"""The HTTP core under every resource: one httpx client, the credentials header, bounded retries
with backoff that honour ``Retry-After``, idempotency keys, and :func:`raise_for_status` on every
answer. :class:`SyncHTTP` and :class:`AsyncHTTP` are the same loop, blocking and awaited; what to
retry and how long to wait is decided once, in :class:`Retry`.

What is retried:

* a 429 or 503 answer (the platform refused or could not serve the call, and bills neither),
  after ``Retry-After`` when the server sent one, else after an exponential backoff with jitter;
  a ``Retry-After`` longer than :attr:`Retry.max_retry_after_s` is raised at once instead;
* a connection that could not be opened (the request never left);
* a connection that broke after the request was sent, only when resending is safe: a ``GET``, or
  a call carrying an ``Idempotency-Key`` (the platform bills that key once, however often it
  arrives; inference, queries and downloads always carry one).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import quote

import httpx

from citybrain_sdk._version import __version__
from citybrain_sdk.errors import ConnectionFailed, raise_for_status, retry_after_seconds

__all__ = [
    "AsyncHTTP",
    "Call",
    "Retry",
    "RetryEvent",
    "Settings",
    "SyncHTTP",
    "new_idempotency_key",
    "segment",
]

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
API_PREFIX = "/api/v1"

# The request never reached the server: resending cannot do anything twice.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def new_idempotency_key() -> str:
    """A fresh idempotency key for one logical call (reused by all of its retries).

    Returns:
        ``"sdk-"`` followed by 32 random hex digits.

    Example:
        >>> new_idempotency_key()
        'sdk-3f7c0e…'
    """
    return f"sdk-{uuid.uuid4().hex}"


def segment(value: str | int) -> str:
    """One URL path segment, percent-encoded (a handle or an id never escapes its segment).

    Example:
        >>> segment("traffic-police.flow-smoother")
        'traffic-police.flow-smoother'
    """
    return quote(str(value), safe="")


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """What :attr:`Retry.on_retry` is told before each wait.

    Attributes:
        attempt: 1 for the first retry, 2 for the second…
        delay_s: How long the client is about to sleep.
        method: The request's method.
        url: The request's URL.
        status: The status that caused the retry, or None after a connection error.
        retry_after_s: The server's ``Retry-After`` in seconds, when it sent one.
        error: The connection error that caused the retry, or None.
        idempotency_key: The key every attempt of this call carries, or None.
    """

    attempt: int
    delay_s: float
    method: str
    url: str
    status: int | None
    retry_after_s: float | None
    error: Exception | None
    idempotency_key: str | None


@dataclass(frozen=True, slots=True)
class Retry:
    """How a client retries. Bounded: at most ``max_retries`` more attempts per call.

    Attributes:
        max_retries: Retries after the first attempt (0 turns retrying off).
        backoff_s: The first wait when the server gives no ``Retry-After``; doubled each time.
        max_backoff_s: The longest computed wait.
        max_retry_after_s: The longest ``Retry-After`` honoured; a longer one raises at once
            (e.g. :class:`~citybrain_sdk.QuotaExceeded` for a daily quota).
        statuses: The statuses retried.
        on_retry: Called before each wait (logging, metrics, tests).

    Example:
        >>> cb = Client(url, api_key=KEY, retry=Retry(max_retries=5, max_retry_after_s=10))
        >>> cb = Client(url, api_key=KEY, retry=Retry(max_retries=0))   # fail fast
    """

    max_retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    max_retry_after_s: float = 60.0
    statuses: frozenset[int] = frozenset({429, 503})
    on_retry: Callable[[RetryEvent], None] | None = field(default=None, compare=False)

    def _backoff(self, attempt: int) -> float:
        base: float = min(self.max_backoff_s, self.backoff_s * (2**attempt))
        return base / 2 + random.uniform(0, base / 2)  # equal jitter: retries spread out

    def delay_after_status(self, attempt: int, response: httpx.Response) -> float | None:
        """Seconds to wait before retrying this answer, or None to raise it.

        Args:
            attempt: Retries made so far for this call.
            response: The answer (its status and headers).

        Returns:
            The wait, or None when the status is not retried, no retries are left, or the
            server's ``Retry-After`` is longer than :attr:`max_retry_after_s`.

        Example:
            >>> Retry().delay_after_status(0, httpx.Response(429, headers={"Retry-After": "1"}))
            1.0
        """
        if response.status_code not in self.statuses or attempt >= self.max_retries:
            return None
        after = retry_after_seconds(response.headers)
        if after is None:
            return self._backoff(attempt)
        return after if after <= self.max_retry_after_s else None

    def delay_after_error(self, attempt: int, error: Exception, resend_safe: bool) -> float | None:
        """Seconds to wait before retrying after a connection error, or None to raise it.

        Args:
            attempt: Retries made so far for this call.
            error: The httpx transport error.
            resend_safe: Whether sending the request twice is harmless (a GET, or a call with
                an ``Idempotency-Key``).

        Returns:
            The wait, or None.

        Example:
            >>> Retry().delay_after_error(0, httpx.ConnectError("refused"), resend_safe=False)
            0.37…
        """
        if attempt >= self.max_retries:
            return None
        if isinstance(error, _NOT_SENT) or resend_safe:
            return self._backoff(attempt)
        return None


Body = Callable[[], Any]
"""Makes a request body afresh for each attempt (an upload re-reads its file)."""


@dataclass(slots=True)
class Call:
    """One logical API call, as every attempt of it is sent.

    Attributes:
        method: HTTP method.
        path: The path under the base URL, e.g. ``/api/v1/products/x.y``.
        params: Query parameters (None values are dropped).
        json: A JSON body.
        content: Makes a raw body (bytes or an iterator) for each attempt.
        files: Makes a multipart ``files`` mapping for each attempt.
        data: Multipart form fields sent with ``files``.
        headers: Extra headers.
        idempotency_key: Sent as ``Idempotency-Key`` on every attempt.
        timeout: A per-call timeout in seconds (None: the client's).
    """

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    content: Body | None = None
    files: Body | None = None
    data: Mapping[str, str] | None = None
    headers: Mapping[str, str] | None = None
    idempotency_key: str | None = None
    timeout: float | None = None

    @property
    def resend_safe(self) -> bool:
        """Whether sending it twice is harmless: a read, or a call with an idempotency key.

        Example:
            >>> Call("POST", "/v2/models/m/infer", idempotency_key="k").resend_safe
            True
        """
        return self.method in ("GET", "HEAD") or self.idempotency_key is not None


@dataclass(frozen=True, slots=True)
class Settings:
    """What :class:`~citybrain_sdk.Client` and :class:`~citybrain_sdk.AsyncClient` are made with
    (their constructor's arguments but the transport, whose type differs).

    Example:
        >>> SyncHTTP(Settings("http://127.0.0.1:8000", api_key=KEY), transport=None)
    """

    base_url: str
    api_key: str | None = None
    token: str | None = None
    retry: Retry | None = None
    timeout: float = 60.0
    headers: Mapping[str, str] | None = None
    verify: bool | ssl.SSLContext = True

    def client_options(self) -> dict[str, Any]:
        """The httpx client's arguments (``base_url``, headers with the credentials, timeout,
        TLS verification)."""
        if self.api_key and self.token:
            raise ValueError("pass api_key or token, not both")
        headers = {"User-Agent": f"citybrain-sdk/{__version__} httpx/{httpx.__version__}"}
        secret = self.api_key or self.token
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        headers.update(self.headers or {})
        return {
            "base_url": self.base_url.rstrip("/"),
            "headers": headers,
            "timeout": self.timeout,
            "verify": self.verify,
        }


class _Core:
    """What the blocking and the awaited loop share: building requests, deciding what follows
    each attempt, and notifying."""

    def __init__(self, settings: Settings) -> None:
        self.base_url = settings.base_url.rstrip("/")
        self.retry = settings.retry or Retry()

    def _request(self, client: httpx.Client | httpx.AsyncClient, call: Call) -> httpx.Request:
        headers = dict(call.headers or {})
        if call.idempotency_key is not None:
            headers[IDEMPOTENCY_KEY_HEADER] = call.idempotency_key
        params = {k: v for k, v in (call.params or {}).items() if v is not None}
        return client.build_request(
            call.method,
            call.path,
            params=params or None,
            json=call.json,
            content=call.content() if call.content is not None else None,
            files=call.files() if call.files is not None else None,
            data=call.data,
            headers=headers,
            timeout=httpx.USE_CLIENT_DEFAULT if call.timeout is None else call.timeout,
        )

    @staticmethod
    def _must_read(response: httpx.Response, read: bool) -> bool:
        """Whether to read the body now: the caller wants it, or it is an error's."""
        return read or response.status_code >= 400

    def _wait(
        self,
        call: Call,
        attempt: int,
        request: httpx.Request,
        outcome: httpx.Response | httpx.TransportError,
    ) -> float | None:
        """What follows an attempt: None when ``outcome`` is the call's answer, else the wait
        before the next attempt. Raises the typed error when the attempt was the last."""
        if isinstance(outcome, httpx.TransportError):
            delay = self.retry.delay_after_error(attempt, outcome, call.resend_safe)
            if delay is None:
                url = f"{self.base_url}{call.path}"
                raise ConnectionFailed(
                    f"{call.method} {url} failed: {type(outcome).__name__}: {outcome}", url=url
                ) from outcome
            response, error = None, outcome
        else:
            if outcome.status_code < 400:
                return None
            delay = self.retry.delay_after_status(attempt, outcome)
            if delay is None:
                raise_for_status(outcome)  # an error status: it raises
                raise AssertionError("unreachable")  # pragma: no cover
            response, error = outcome, None
        if self.retry.on_retry is not None:
            self.retry.on_retry(
                RetryEvent(
                    attempt=attempt + 1,
                    delay_s=delay,
                    method=call.method,
                    url=str(request.url),
                    status=response.status_code if response is not None else None,
                    retry_after_s=retry_after_seconds(response.headers)
                    if response is not None
                    else None,
                    error=error,
                    idempotency_key=call.idempotency_key,
                )
            )
        return delay


class SyncHTTP(_Core):
    """The blocking loop (used by :class:`~citybrain_sdk.Client`)."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None) -> None:
        super().__init__(settings)
        self.client = httpx.Client(transport=transport, **settings.client_options())

    def _attempt(self, request: httpx.Request, read: bool) -> httpx.Response:
        response = self.client.send(request, stream=True)
        if self._must_read(response, read):
            try:
                response.read()
            finally:
                response.close()
        return response

    def _open(self, call: Call, *, read: bool) -> httpx.Response:
        """The call's final answer: read and closed when ``read`` (or an error), else open.
        A body that breaks off while being read is a connection error like any other."""
        for attempt in itertools.count():
            request = self._request(self.client, call)
            try:
                outcome: httpx.Response | httpx.TransportError = self._attempt(request, read)
            except httpx.TransportError as e:
                outcome = e
            delay = self._wait(call, attempt, request, outcome)
            if delay is None:
                return cast(httpx.Response, outcome)
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def send(self, call: Call) -> httpx.Response:
        """Send a call (retrying as :class:`Retry` allows); return the read response.

        Raises:
            APIError: The final answer was an error.
            ConnectionFailed: The platform could not be reached.
        """
        return self._open(call, read=True)

    @contextmanager
    def stream(self, call: Call) -> Iterator[httpx.Response]:
        """Send a call and yield the successful response unread (a download)."""
        response = self._open(call, read=False)
        try:
            yield response
        finally:
            response.close()

    def close(self) -> None:
        self.client.close()


class AsyncHTTP(_Core):
    """The awaited loop (used by :class:`~citybrain_sdk.AsyncClient`)."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None) -> None:
        super().__init__(settings)
        self.client = httpx.AsyncClient(transport=transport, **settings.client_options())

    async def _attempt(self, request: httpx.Request, read: bool) -> httpx.Response:
        response = await self.client.send(request, stream=True)
        if self._must_read(response, read):
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response

    async def _open(self, call: Call, *, read: bool) -> httpx.Response:
        """The call's final answer; see :meth:`SyncHTTP._open`."""
        for attempt in itertools.count():
            request = self._request(self.client, call)
            try:
                outcome: httpx.Response | httpx.TransportError = await self._attempt(request, read)
            except httpx.TransportError as e:
                outcome = e
            delay = self._wait(call, attempt, request, outcome)
            if delay is None:
                return cast(httpx.Response, outcome)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(self, call: Call) -> httpx.Response:
        """Send a call (retrying as :class:`Retry` allows); return the read response."""
        return await self._open(call, read=True)

    @asynccontextmanager
    async def stream(self, call: Call) -> AsyncIterator[httpx.Response]:
        """Send a call and yield the successful response unread (a download)."""
        response = await self._open(call, read=False)
        try:
            yield response
        finally:
            await response.aclose()

    async def close(self) -> None:
        await self.client.aclose()
