"""Concurrent inference calls share the usage spool's fsyncs, even calls that never await.

A model fast enough to run on the event loop, behind a key read that does not await, serves a
call from start to finish in one step of the loop. Each such call finds itself the only one in
flight, yet its neighbours already wait in the loop's ready queue: committing its usage event
inline would block the loop on one fsync per call instead of sharing one among them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine

from billing import Meter
from marketplace.config import ModelStoreSettings, Settings
from tests.unit.gateway.conftest import Models, python_model

BODY = json.dumps(
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}]}
)
BURST = 16
ECHO = """
class M:
    def load(self):
        pass

    def predict(self, inputs):
        return {"y": inputs["x"]}
"""


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    # Every model runs inline once timed, however slow this machine: the case under test.
    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        model_store=ModelStoreSettings(inline_predict_below_ms=10_000),
    )


async def _call(app: object, url: str, headers: dict[str, str]) -> int:
    """One call as uvicorn makes it: a task of its own, the whole body already received."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": url,
        "raw_path": url.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": BODY.encode(), "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app(scope, receive, send)  # type: ignore[operator]
    status = sent[0]["status"]
    assert isinstance(status, int)
    return status


def _publish_echo(models: Models) -> str:
    spec = {"datatype": "FP32", "shape": [-1, 3]}
    artifact, manifest = python_model(
        models.tmp,
        ECHO,
        {"inputs": [{"name": "x", **spec}], "outputs": [{"name": "y", **spec}]},
    )
    return models.city.model("traffic-police", artifact, manifest)


def test_a_burst_of_inline_calls_shares_fsyncs_and_a_lone_call_commits_alone(
    models: Models,
) -> None:
    handle = _publish_echo(models)
    app = models.city.client.app
    spool = app.state.gateway.usage.spool  # type: ignore[attr-defined]
    headers = {**models.city.headers("parkeasy"), "Content-Type": "application/json"}
    url = f"/v2/models/{handle}/infer"

    async def calls() -> tuple[int, int, list[int]]:
        for _ in range(20):  # timed in threads first, inline from then on
            assert await _call(app, url, headers) == 200
        await asyncio.sleep(0.1)  # past the memory of any overlap
        before = spool.stats().fsyncs
        assert await _call(app, url, headers) == 200
        lone = spool.stats().fsyncs - before
        before = spool.stats().fsyncs
        statuses = await asyncio.gather(*(_call(app, url, headers) for _ in range(BURST)))
        return lone, spool.stats().fsyncs - before, list(statuses)

    lone, burst, statuses = models.city.client.portal.call(calls)  # type: ignore[union-attr]
    assert statuses == [200] * BURST
    assert lone == 1
    assert burst < BURST // 2, f"{BURST} concurrent calls took {burst} fsyncs"


def test_the_meter_is_told_how_many_other_calls_are_in_flight(
    models: Models, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = _publish_echo(models)
    app = models.city.client.app
    spool = app.state.gateway.usage.spool  # type: ignore[attr-defined]
    told: list[int] = []
    real_append = spool.append

    async def recording_append(event: object, *, others_in_flight: int = 0) -> None:
        told.append(others_in_flight)
        await real_append(event, others_in_flight=others_in_flight)

    monkeypatch.setattr(spool, "append", recording_append)
    headers = {**models.city.headers("parkeasy"), "Content-Type": "application/json"}
    url = f"/v2/models/{handle}/infer"

    async def calls() -> tuple[list[int], list[int]]:
        assert await _call(app, url, headers) == 200
        alone = list(told)
        told.clear()
        statuses = await asyncio.gather(*(_call(app, url, headers) for _ in range(BURST)))
        assert statuses == [200] * BURST
        return alone, list(told)

    alone, burst = models.city.client.portal.call(calls)  # type: ignore[union-attr]
    assert alone == [0]
    assert len(burst) == BURST and max(burst) > 0
    assert app.state.gateway.in_flight == 0  # type: ignore[attr-defined]


def test_the_group_commit_wait_is_a_setting_that_reaches_the_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings(data_dir=tmp_path).billing.group_commit_wait_ms == 20.0
    monkeypatch.setenv("CITYBRAIN_BILLING__GROUP_COMMIT_WAIT_MS", "2.5")
    assert Settings(data_dir=tmp_path).billing.group_commit_wait_ms == 2.5
    monkeypatch.setenv("CITYBRAIN_BILLING__GROUP_COMMIT_WAIT_MS", "-1")
    with pytest.raises(ValidationError, match="group_commit_wait_ms"):
        Settings(data_dir=tmp_path)

    engine = create_engine(f"sqlite:///{tmp_path / 'usage.db'}")
    meter = Meter.create(engine, tmp_path / "spool", group_commit_wait_s=0.0025)
    try:
        assert meter.spool._gather_s == 0.0025
    finally:
        meter.spool.close()
        engine.dispose()
