"""Retries against the real platform: a 429 from a quota set through the API is retried after
its ``Retry-After`` (or raised, when retries are off or the wait is too long), and a call whose
answer was lost is resent with the same ``Idempotency-Key`` and billed once."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
from citybrain_sdk import Client, ConnectionFailed, QuotaExceeded, Retry, RetryEvent

from tests.sdk.conftest import await_usage, client_for, publish_model
from tests.sdk.server import Platform

SMOOTHER = "traffic-police.flow-smoother"
FLOW = np.arange(24, dtype=np.float32).reshape(2, 12)


def _limited_key(cb: Client, window: str) -> str:
    """A fresh key allowed one inference per ``window`` (a quota set through the API)."""
    issued = cb.keys.create(["infer"], name=f"one per {window}")
    quota = cb.quotas.create(metric="requests", window=window, amount=1, key_id=issued.key.id)
    assert quota.key_id == issued.key.id
    return issued.token


def test_a_429_is_retried_after_its_retry_after(platform: Platform, cb: Client) -> None:
    events: list[RetryEvent] = []
    token = _limited_key(cb, "second")
    retry = Retry(max_retries=3, on_retry=events.append)
    with Client(platform.url, api_key=token, retry=retry) as limited:
        for _ in range(5):  # back to back, at least one call meets an empty bucket
            out = limited.models.infer(SMOOTHER, {"flow": FLOW})
            assert out["smoothed"].shape == FLOW.shape
            if events:
                break
    assert events, "five back-to-back calls under a 1-per-second limit were never refused"
    first = events[0]
    assert first.status == 429 and first.error is None
    assert first.retry_after_s is not None and first.retry_after_s >= 1
    assert first.delay_s == first.retry_after_s  # the server's wait, not a guess
    assert first.idempotency_key and first.idempotency_key.startswith("sdk-")


def test_a_429_is_raised_with_retry_after_when_retries_are_off(
    platform: Platform, cb: Client
) -> None:
    token = _limited_key(cb, "minute")
    with Client(platform.url, api_key=token, retry=Retry(max_retries=0)) as limited:
        limited.models.infer(SMOOTHER, {"flow": FLOW})
        with pytest.raises(QuotaExceeded) as refused:
            limited.models.infer(SMOOTHER, {"flow": FLOW})
    e = refused.value
    assert (e.status, e.code) == (429, "QuotaExceeded")
    assert e.retry_after is not None and 1 <= e.retry_after <= 60
    assert e.request_id and "per minute" in e.server_message


def test_a_retry_after_longer_than_allowed_is_raised_at_once(
    platform: Platform, cb: Client
) -> None:
    events: list[RetryEvent] = []
    token = _limited_key(cb, "minute")
    retry = Retry(max_retries=3, max_retry_after_s=0.5, on_retry=events.append)
    with Client(platform.url, api_key=token, retry=retry) as limited:
        limited.models.infer(SMOOTHER, {"flow": FLOW})
        with pytest.raises(QuotaExceeded):
            limited.models.infer(SMOOTHER, {"flow": FLOW})
    assert events == []


class LoseFirstAnswer(httpx.BaseTransport):
    """A network that loses an answer: each request reaches the real platform, but the answer
    to the first one on ``path_suffix`` is dropped and the connection reported broken."""

    def __init__(self, path_suffix: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.suffix = path_suffix
        self.seen: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path.endswith(self.suffix):
            self.seen.append(request)
            if len(self.seen) == 1:
                response.read()
                response.close()
                raise httpx.ReadError("connection reset by peer", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_a_lost_answer_is_resent_with_the_same_key_and_billed_once(
    platform: Platform, smoother_artifact: Any
) -> None:
    """xihu-district calls nothing else in these tests, so its usage is this test's alone."""
    marker = publish_model(platform, "xihu-district", "usage-marker", smoother_artifact)
    lossy = LoseFirstAnswer("/infer")
    events: list[RetryEvent] = []
    with Client(
        platform.url,
        api_key=platform.keys["xihu-district"],
        transport=lossy,
        retry=Retry(on_retry=events.append),
    ) as cb:
        out = cb.models.infer(SMOOTHER, {"flow": FLOW})
        np.testing.assert_allclose(out["smoothed"][:, 2:-2], _moving_average(FLOW), rtol=1e-6)
        keys = [r.headers["Idempotency-Key"] for r in lossy.seen]
        assert len(keys) == 2 and keys[0] == keys[1] == out.idempotency_key
        assert out.replayed  # the platform recognised the resend
        assert len(events) == 1 and isinstance(events[0].error, httpx.ReadError)

        # The spool reaches the database in order: once the later call shows, so has the first.
        cb.models.infer(marker, {"flow": FLOW})
        await_usage(cb, marker, events=1)
        rows = cb.usage.list(product=SMOOTHER)
    assert sum(r.events for r in rows) == 1


def test_a_lost_answer_to_a_plain_post_is_not_resent(platform: Platform) -> None:
    """Without an Idempotency-Key a resend could do the thing twice: the error is raised."""
    lossy = LoseFirstAnswer("/api/v1/keys")
    with (
        Client(platform.url, api_key=platform.keys["parkeasy"], transport=lossy) as cb,
        pytest.raises(ConnectionFailed),
    ):
        cb.keys.create(["catalog:read"], name="lost answer")
    assert len(lossy.seen) == 1
    with client_for(platform, "parkeasy") as cb:
        assert "lost answer" in {k.name for k in cb.keys.list()}  # done once, on the server


def _moving_average(flow: np.ndarray) -> np.ndarray:
    kernel = np.ones(5, np.float32) / 5
    return np.stack([np.convolve(row, kernel, mode="valid") for row in flow])
