"""Metering against a real PostgreSQL: exactly once, through outages."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.exc import OperationalError

from billing.events import UsageEvent
from billing.flusher import Flusher, PgMethod
from billing.metering import Meter
from billing.metrics import BillingMetrics
from billing.spool import Spool
from billing.tables import metadata, usage_event
from tests.utils.usage import make_usage_event

pytestmark = pytest.mark.integration


def _event(**overrides: Any) -> UsageEvent:
    fields = {"tenant_id": 11, "key_id": "k3y", "product_id": 5, "version": 2, **overrides}
    return make_usage_event(prefix="pg", **fields)


@pytest.fixture(autouse=True)
def empty_table(pg_engine: Engine) -> Iterator[None]:
    with pg_engine.begin() as conn:
        conn.execute(usage_event.delete())
    yield


def _keys(engine: Engine) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(select(usage_event.c.tenant_id, usage_event.c.id)).all()
    return sorted((r[0], r[1]) for r in rows)


def _append_all(spool: Spool, events: list[UsageEvent]) -> None:
    async def go() -> None:
        await asyncio.gather(*(spool.append(e) for e in events))

    asyncio.run(go())


@pytest.mark.parametrize("method", ["copy", "unnest", "values"])
def test_thousand_concurrent_events_thousand_rows(
    tmp_path: Path, pg_engine: Engine, method: PgMethod
) -> None:
    events = [_event() for _ in range(1000)]
    with Spool(tmp_path / "spool") as spool:
        _append_all(spool, events)
        assert spool.stats().fsyncs < 1000
        spool.append_sync(events[0])  # a retry: billed once
        flusher = Flusher(pg_engine, spool, batch_size=400, pg_method=method)
        assert flusher.flush_once() == 1001
        assert flusher.stats().duplicates == 1
        assert spool.backlog() == 0
    assert _keys(pg_engine) == sorted((e.tenant_id, e.id) for e in events)
    with pg_engine.connect() as conn:
        row = (
            conn.execute(select(usage_event).where(usage_event.c.id == events[0].id)).one()._mapping
        )
    assert row["quantity"] == Decimal("1.000000")
    assert row["at"] == events[0].at
    assert row["request_id"] == events[0].request_id


def test_unreachable_database_then_recovery(tmp_path: Path, pg_url: str, pg_engine: Engine) -> None:
    registry = CollectorRegistry()
    metrics = BillingMetrics(registry)
    down = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/nowhere", connect_args={"connect_timeout": 2}
    )
    events = [_event() for _ in range(500)]
    spool = Spool(tmp_path / "spool", metrics=metrics)
    try:
        _append_all(spool, events[:250])  # appends succeed while the database is down
        broken = Flusher(down, spool, metrics=metrics)
        with pytest.raises(OperationalError):
            broken.flush_once()
        assert broken.stats().failures == 1
        assert registry.get_sample_value("citybrain_billing_flush_failures_total") == 1
        assert spool.backlog() == 250
        _append_all(spool, events[250:])
        assert registry.get_sample_value("citybrain_billing_spool_backlog_events") == 500

        working = Flusher(pg_engine, spool, batch_size=128, metrics=metrics)
        assert working.flush_once() == 500
        assert spool.backlog() == 0
    finally:
        spool.close()
        down.dispose()
    assert _keys(pg_engine) == sorted((e.tenant_id, e.id) for e in events)
    assert registry.get_sample_value("citybrain_billing_events_delivered_total") == 500


def test_failure_mid_batch_rolls_back_and_retries_once(tmp_path: Path, pg_engine: Engine) -> None:
    events = [_event() for _ in range(300)]
    poison = events[150].id
    with pg_engine.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION billing_test_poison() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF NEW.id = '{poison}' THEN RAISE EXCEPTION 'poisoned row'; END IF; "
                "RETURN NEW; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER poison BEFORE INSERT ON usage_event "
                "FOR EACH ROW EXECUTE FUNCTION billing_test_poison()"
            )
        )
    try:
        with Spool(tmp_path / "spool") as spool:
            _append_all(spool, events)
            flusher = Flusher(pg_engine, spool)
            with pytest.raises(Exception, match="poisoned row"):
                flusher.flush_once()
            assert _keys(pg_engine) == []
            assert spool.backlog() == 300
            with pg_engine.begin() as conn:
                conn.execute(text("DROP TRIGGER poison ON usage_event"))
            assert flusher.flush_once() == 300
    finally:
        with pg_engine.begin() as conn:
            conn.execute(text("DROP TRIGGER IF EXISTS poison ON usage_event"))
            conn.execute(text("DROP FUNCTION IF EXISTS billing_test_poison()"))
    assert _keys(pg_engine) == sorted((e.tenant_id, e.id) for e in events)


def test_meter_end_to_end_with_idempotent_retries(tmp_path: Path, pg_engine: Engine) -> None:
    meter = Meter.create(pg_engine, tmp_path / "spool", registry=CollectorRegistry())
    meter.start()
    events = [_event(id=f"idem-{i}", tenant_id=1 + i % 3) for i in range(300)]

    async def traffic() -> None:
        await asyncio.gather(*(meter.record(e) for e in events))
        await asyncio.gather(*(meter.record(e) for e in events[:100]))  # retries, same keys

    asyncio.run(traffic())
    meter.stop()
    assert meter.status()["backlog"] == 0
    assert _keys(pg_engine) == sorted((e.tenant_id, e.id) for e in events)

    spool = Spool(tmp_path / "fresh")
    fresh = Meter(spool, Flusher(pg_engine, spool))
    try:
        assert asyncio.run(fresh.seen(events[5].tenant_id, events[5].id)) is True
        assert asyncio.run(fresh.seen(events[5].tenant_id + 10, events[5].id)) is False
    finally:
        fresh.stop(flush=False)


def test_table_matches_metadata_on_postgres(pg_engine: Engine) -> None:
    with pg_engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        count = conn.execute(select(func.count()).select_from(usage_event)).scalar_one()
    assert count == 0
