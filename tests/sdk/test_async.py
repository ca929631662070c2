"""AsyncClient is the twin of Client: the same resources and signatures, the same answers from
the real platform, the same typed errors and the same retry and idempotency behaviour."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from citybrain_sdk import AsyncClient, Client, NotFound, QuotaExceeded, Retry, RetryEvent

from tests.sdk.server import Platform

SMOOTHER = "traffic-police.flow-smoother"
RESOURCES = ("catalog", "datasets", "models", "access", "keys", "usage", "invoices", "quotas")


def _public_methods(obj: object) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(getattr(obj, name))
        for name in dir(obj)
        if not name.startswith("_") and callable(getattr(obj, name))
    }


def test_every_method_has_an_awaited_twin_with_the_same_parameters(platform: Platform) -> None:
    async def go() -> None:
        with Client(platform.url) as sync:
            async with AsyncClient(platform.url) as aio:
                for resource in (None, *RESOURCES):
                    s = getattr(sync, resource) if resource else sync
                    a = getattr(aio, resource) if resource else aio
                    blocking, awaited = _public_methods(s), _public_methods(a)
                    if resource is None:  # close() / aclose() differ by name, as in httpx
                        blocking.pop("close")
                        awaited.pop("aclose")
                    assert blocking.keys() == awaited.keys(), resource
                    for name, signature in blocking.items():
                        twin = getattr(a, name)
                        assert inspect.iscoroutinefunction(twin) or inspect.isasyncgenfunction(
                            twin
                        ), f"{resource}.{name} is not awaited"
                        assert list(signature.parameters) == list(awaited[name].parameters), (
                            f"{resource}.{name}"
                        )

    asyncio.run(go())


def test_the_same_answers_as_the_blocking_client(platform: Platform) -> None:
    key = platform.keys["parkeasy"]
    flow = np.random.default_rng(11).poisson(25, size=(2, 30)).astype(np.float32)
    with Client(platform.url, api_key=key) as cb:
        expected: dict[str, Any] = {
            "search": cb.catalog.search("traffic", per_page=50),
            "product": cb.catalog.get(SMOOTHER),
            "versions": cb.catalog.versions(SMOOTHER),
            "me": cb.me(),
            "keys": {k.id for k in cb.keys.list()},
            "smoothed": cb.models.infer(SMOOTHER, {"flow": flow})["smoothed"],
            "metadata": cb.models.metadata(SMOOTHER),
        }

    async def go() -> dict[str, Any]:
        async with AsyncClient(platform.url, api_key=key) as aio:
            got: dict[str, Any] = {
                "search": await aio.catalog.search("traffic", per_page=50),
                "product": await aio.catalog.get(SMOOTHER),
                "versions": await aio.catalog.versions(SMOOTHER),
                "me": await aio.me(),
                "keys": {k.id for k in await aio.keys.list()},
                "smoothed": (await aio.models.infer(SMOOTHER, {"flow": flow}))["smoothed"],
                "metadata": await aio.models.metadata(SMOOTHER),
            }
            with pytest.raises(NotFound) as missing:
                await aio.catalog.get("traffic-police.no-such-product")
            got["error"] = missing.value
            return got

    got = asyncio.run(go())
    np.testing.assert_array_equal(got.pop("smoothed"), expected.pop("smoothed"))
    error = got.pop("error")
    assert error.status == 404 and error.request_id
    # The product's updated_at may not move between the two reads: equal values throughout.
    assert got == expected


def test_concurrent_calls_each_get_their_own_idempotency_key(platform: Platform) -> None:
    flows = [np.full((1, 8), i, np.float32) for i in range(8)]

    async def go() -> list[Any]:
        async with AsyncClient(platform.url, api_key=platform.keys["parkeasy"]) as aio:
            return list(
                await asyncio.gather(*(aio.models.infer(SMOOTHER, {"flow": f}) for f in flows))
            )

    results = asyncio.run(go())
    for flow, result in zip(flows, results, strict=True):
        np.testing.assert_array_equal(result["smoothed"], flow)  # a constant row stays constant
    assert len({r.idempotency_key for r in results}) == len(flows)
    assert not any(r.replayed for r in results)


class LoseFirstAnswerAsync(httpx.AsyncBaseTransport):
    """The async twin of test_retry.LoseFirstAnswer: the first answer on ``/infer`` is lost."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.keys: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path.endswith("/infer"):
            self.keys.append(request.headers["Idempotency-Key"])
            if len(self.keys) == 1:
                await response.aread()
                await response.aclose()
                raise httpx.ReadError("connection reset by peer", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_a_lost_answer_is_resent_under_the_same_key(platform: Platform) -> None:
    lossy = LoseFirstAnswerAsync()
    events: list[RetryEvent] = []
    flow = np.ones((1, 6), np.float32)

    async def go() -> Any:
        async with AsyncClient(
            platform.url,
            api_key=platform.keys["parkeasy"],
            transport=lossy,
            retry=Retry(on_retry=events.append),
        ) as aio:
            return await aio.models.infer(SMOOTHER, {"flow": flow})

    out = asyncio.run(go())
    assert lossy.keys[0] == lossy.keys[1] == out.idempotency_key and out.replayed
    assert len(events) == 1 and isinstance(events[0].error, httpx.ReadError)


def test_a_429_raises_quota_exceeded(platform: Platform) -> None:
    with Client(platform.url, api_key=platform.keys["parkeasy"]) as cb:
        issued = cb.keys.create(["infer"], name="async one per minute")
        cb.quotas.create(metric="requests", window="minute", amount=1, key_id=issued.key.id)
    flow = np.ones((1, 6), np.float32)

    async def go() -> QuotaExceeded:
        async with AsyncClient(
            platform.url, api_key=issued.token, retry=Retry(max_retries=0)
        ) as aio:
            await aio.models.infer(SMOOTHER, {"flow": flow})
            with pytest.raises(QuotaExceeded) as refused:
                await aio.models.infer(SMOOTHER, {"flow": flow})
            return refused.value

    refused = asyncio.run(go())
    assert refused.status == 429 and refused.retry_after is not None and refused.request_id


def test_push_and_pull(
    platform: Platform, smoother_artifact: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    path, manifest = smoother_artifact
    sent: list[int] = []

    async def go() -> Path:
        async with AsyncClient(platform.url, api_key=platform.keys["environment"]) as aio:
            product = await aio.catalog.create(
                "async-smoother", kind="model", title="Async push", domain="environment"
            )
            version = await aio.models.push(
                product.handle, path, manifest, progress=lambda done, total: sent.append(done)
            )
            assert version.artifact_digest
            return await aio.models.pull(product.handle, tmp_path / "pulled.pt")

    pulled = asyncio.run(go())
    assert pulled.read_bytes() == path.read_bytes() and sent[-1] == path.stat().st_size
