"""What the blocking and the awaited resources share.

Every resource method describes its call once, in a function that does not know which client
will send it: a :class:`Spec` (the request and how to read its answer) or a :class:`Download`
(a request whose answer streams into a file). :class:`SyncResource` and :class:`AsyncResource`
only carry such descriptions out, so ``cb.catalog.get`` and ``await acb.catalog.get`` cannot
drift apart: the two differ by the ``await`` alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, NoReturn, TypeVar

import httpx

from citybrain_sdk._http import API_PREFIX, AsyncHTTP, Call, SyncHTTP, segment
from citybrain_sdk.resources import _files
from citybrain_sdk.types import Product, Progress

T = TypeVar("T")


def _reraise(error: Exception) -> NoReturn:
    raise error


def decode(response: httpx.Response) -> Any:
    """A response's JSON body, or None for an empty one."""
    return response.json() if response.content else None


@dataclass(frozen=True, slots=True)
class Spec(Generic[T]):
    """One call and how to read its answer.

    Attributes:
        call: The request, as every attempt of it is sent.
        parse: Turns the successful response into the method's result.
        tolerate: Errors that are an answer rather than a failure (``models.ready``: 503).
        recover: The result for a tolerated error.
    """

    call: Call
    parse: Callable[[httpx.Response], T]
    tolerate: tuple[type[Exception], ...] = ()
    recover: Callable[[Exception], T] = field(default=_reraise)


def json_spec(call: Call, parse: Callable[[Any], T]) -> Spec[T]:
    """A call whose JSON answer ``parse`` turns into the result."""
    return Spec(call, lambda response: parse(decode(response)))


def no_answer(call: Call) -> Spec[None]:
    """A call whose answer carries nothing to return (a delete)."""
    return Spec(call, lambda response: None)


def listing(parse: Callable[[Any], T]) -> Callable[[Any], list[T]]:
    """Reads ``{"data": [...]}`` into a list, each item by ``parse``."""

    def items(doc: Any) -> list[T]:
        return [parse(item) for item in doc.get("data", ())]

    return items


def product_path(handle: str, *rest: str | int) -> str:
    """``/api/v1/products/<handle>[/rest…]``: the handle and number parts (a version) are
    percent-encoded; string parts are the route's own words, used as they are."""
    parts = [segment(p) if isinstance(p, int) else p for p in rest]
    return "/".join([f"{API_PREFIX}/products/{segment(handle)}", *parts])


def latest_version(handle: str) -> Spec[int]:
    """The number of a product's latest version (ValueError when it has none yet)."""

    def latest(doc: Any) -> int:
        product = Product.from_json(doc)
        if product.latest_version is None:
            raise ValueError(f"{handle} has no versions yet")
        return product.latest_version

    return json_spec(Call("GET", product_path(handle)), latest)


@dataclass(frozen=True, slots=True)
class Download:
    """One call whose answer streams into a file, written atomically.

    Attributes:
        call: The request.
        dest: The file to write, or (with ``fallback``) a folder: the file in it is named by
            the server's ``Content-Disposition``, else by ``fallback``.
        fallback: The file name when ``dest`` is a folder and the server names none; None when
            ``dest`` is always the file itself.
        progress: Called as ``progress(bytes_received, total_or_None)``.
        digest_header: The header that announces the bytes' digest (checked when present).
    """

    call: Call
    dest: str | os.PathLike[str]
    fallback: str | None
    progress: Progress | None
    digest_header: str | None = None

    def target(self, response: httpx.Response) -> Path:
        """The path to write for this response."""
        if self.fallback is None:
            return Path(self.dest)
        return _files.target_path(self.dest, response, self.fallback)

    def expected(self, response: httpx.Response) -> str | None:
        """The digest the server announced, if any."""
        return response.headers.get(self.digest_header) if self.digest_header else None


class Pager(Generic[T]):
    """Follows ``next_cursor`` from page to page: the client only sends each page's spec.

    Example (inside a resource)::

        pager = Pager(lambda cursor: spec_for(cursor), lambda page: page.next_cursor)
        while pager.more:
            yield pager.took(self._run(pager.next()))
    """

    def __init__(
        self, spec: Callable[[str | None], Spec[T]], cursor_of: Callable[[T], str | None]
    ) -> None:
        self._spec = spec
        self._cursor_of = cursor_of
        self._cursor: str | None = None
        self.more = True

    def next(self) -> Spec[T]:
        """The spec of the next page."""
        return self._spec(self._cursor)

    def took(self, page: T) -> T:
        """Note the page just read (and whether another follows); return it."""
        self._cursor = self._cursor_of(page)
        self.more = bool(self._cursor)
        return page


class SyncResource:
    """A resource of the blocking :class:`~citybrain_sdk.Client`: sends specs, blocking."""

    _chunks: Callable[[Path, Progress | None], Iterable[bytes]] = staticmethod(_files.iter_file)
    """How an upload's file is read (chunk by chunk, in this thread)."""

    def __init__(self, http: SyncHTTP) -> None:
        self._http = http

    def _run(self, spec: Spec[T]) -> T:
        try:
            response = self._http.send(spec.call)
        except spec.tolerate as error:
            return spec.recover(error)
        return spec.parse(response)

    def _download(self, job: Download) -> Path:
        with self._http.stream(job.call) as response:
            return _files.save(response, job.target(response), job.expected(response), job.progress)


class AsyncResource:
    """A resource of :class:`~citybrain_sdk.AsyncClient`: sends the same specs, awaited."""

    _chunks: Callable[[Path, Progress | None], Any] = staticmethod(_files.aiter_file)
    """How an upload's file is read (in a worker thread, so the loop keeps running)."""

    def __init__(self, http: AsyncHTTP) -> None:
        self._http = http

    async def _run(self, spec: Spec[T]) -> T:
        try:
            response = await self._http.send(spec.call)
        except spec.tolerate as error:
            return spec.recover(error)
        return spec.parse(response)

    async def _download(self, job: Download) -> Path:
        async with self._http.stream(job.call) as response:
            target, expected = job.target(response), job.expected(response)
            return await _files.asave(response, target, expected, job.progress)
