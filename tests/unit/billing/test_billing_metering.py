"""The Meter façade: record, idempotency lookups, status."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from billing.errors import MeteringUnavailableError
from billing.events import UsageEvent
from billing.flusher import Flusher
from billing.metering import Meter
from billing.spool import Spool

EventFactory = Callable[..., UsageEvent]
CountRows = Callable[[Engine], int]


def test_record_seen_and_status(
    spool_dir: Path, engine: Engine, make_event: EventFactory, count_rows: CountRows
) -> None:
    registry = CollectorRegistry()
    meter = Meter.create(engine, spool_dir, registry=registry)
    event = make_event(id="idem-42")

    async def scenario() -> tuple[bool, bool, bool]:
        before = await meter.seen(event.tenant_id, event.id)
        await meter.record(event)
        after = await meter.seen(event.tenant_id, event.id)
        other_tenant = await meter.seen(event.tenant_id + 1, event.id)
        return before, after, other_tenant

    assert asyncio.run(scenario()) == (False, True, False)
    status = meter.status()
    assert status["backlog"] == 1
    assert status["appended"] == 1
    assert status["delivered"] == 0
    assert status["last_flush_at"] is None
    assert status["last_error"] is None
    assert status["spool_available"] is True

    meter.start()
    assert meter.status()["flusher_running"] is True
    meter.stop()
    status = meter.status()
    assert status["backlog"] == 0
    assert status["delivered"] == 1
    assert status["last_flush_at"] is not None
    assert status["flusher_running"] is False
    assert count_rows(engine) == 1
    assert registry.get_sample_value("citybrain_billing_events_delivered_total") == 1
    with pytest.raises(MeteringUnavailableError):
        meter.record_sync(make_event())


def test_seen_falls_back_to_the_database_within_the_window(
    spool_dir: Path, tmp_path: Path, engine: Engine, make_event: EventFactory
) -> None:
    recent = make_event(id="recent")
    old = make_event(id="old", at=datetime.now(UTC) - timedelta(days=3))
    with Spool(spool_dir) as spool:
        spool.append_sync(recent)
        spool.append_sync(old)
        Flusher(engine, spool).flush_once()

    # A fresh process: its spool's in-memory index is empty, the database answers.
    spool = Spool(tmp_path / "other-worker")
    meter = Meter(spool, Flusher(engine, spool))
    try:
        assert not spool.seen_recently(recent.tenant_id, recent.id)

        async def ask() -> list[bool]:
            return [
                await meter.seen(recent.tenant_id, "recent"),
                await meter.seen(recent.tenant_id, "old"),  # outside the 48 h window
                await meter.seen(recent.tenant_id, "never"),
            ]

        assert asyncio.run(ask()) == [True, False, False]
    finally:
        meter.stop(flush=False)


def test_failed_record_never_claims_the_key(
    tmp_path: Path, engine: Engine, make_event: EventFactory
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    spool = Spool(blocker / "spool")
    meter = Meter(spool, Flusher(engine, spool))
    event = make_event(id="retry-me")

    async def scenario() -> bool:
        with pytest.raises(MeteringUnavailableError):
            await meter.record(event)
        return await meter.seen(event.tenant_id, event.id)

    try:
        assert asyncio.run(scenario()) is False
        status = meter.status()
        assert status["spool_available"] is False
        assert status["append_failures"] == 1
        assert "Not a directory" in status["last_error"]
    finally:
        meter.stop(flush=False)


def test_meter_and_flusher_must_share_the_spool(tmp_path: Path, engine: Engine) -> None:
    with (
        Spool(tmp_path / "a") as a,
        Spool(tmp_path / "b") as b,
        pytest.raises(ValueError, match="spool"),
    ):
        Meter(a, Flusher(engine, b))
