"""Spool to SQLite: exactly one row per event, whatever fails in between."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.exc import OperationalError

from billing.errors import MeteringUnavailableError
from billing.events import UsageEvent
from billing.flusher import Flusher
from billing.metrics import BillingMetrics
from billing.spool import Spool
from billing.tables import usage_event

EventFactory = Callable[..., UsageEvent]
CountRows = Callable[[Engine], int]
IdsInDb = Callable[[Engine], list[tuple[int, str]]]


def _append_all(spool: Spool, events: list[UsageEvent]) -> None:
    async def go() -> None:
        await asyncio.gather(*(spool.append(e) for e in events))

    asyncio.run(go())


def test_append_flush_gives_exactly_one_row(
    spool: Spool, engine: Engine, make_event: EventFactory, count_rows: CountRows
) -> None:
    event = make_event(quantity=2.5, unit="audio-second", key_id=None)
    spool.append_sync(event)
    flusher = Flusher(engine, spool)
    assert flusher.flush_once() == 1
    assert flusher.flush_once() == 0
    assert count_rows(engine) == 1
    with engine.connect() as conn:
        row = conn.execute(select(usage_event)).one()._mapping
    assert row["tenant_id"] == event.tenant_id
    assert row["id"] == event.id
    assert row["key_id"] is None
    assert row["product"] == "traffic-police.flow-smoother"
    assert (row["product_id"], row["version"]) == (42, 3)
    assert row["unit"] == "audio-second"
    assert row["quantity"] == Decimal("2.5")
    assert row["at"].replace(tzinfo=None) == event.at.replace(tzinfo=None)
    assert row["latency_ms"] == event.latency_ms
    assert row["request_id"] == event.request_id
    assert row["received_at"] is not None
    assert spool.backlog() == 0


def test_same_id_twice_is_one_row_and_no_error(
    spool: Spool, engine: Engine, make_event: EventFactory, count_rows: CountRows
) -> None:
    first = make_event(id="idem-1")
    retry = make_event(id="idem-1")  # the client's retry: same Idempotency-Key, new request id
    spool.append_sync(first)
    flusher = Flusher(engine, spool)
    flusher.flush_once()
    spool.append_sync(retry)
    spool.append_sync(make_event(id="idem-1"))  # and a duplicate inside one batch
    assert flusher.flush_once() == 2
    assert count_rows(engine) == 1
    stats = flusher.stats()
    assert (stats.delivered, stats.inserted, stats.duplicates, stats.failures) == (3, 1, 2, 0)
    with engine.connect() as conn:
        assert conn.execute(select(usage_event.c.request_id)).scalar_one() == first.request_id


def test_two_tenants_may_use_the_same_key(
    spool: Spool, engine: Engine, make_event: EventFactory, ids_in_db: IdsInDb
) -> None:
    spool.append_sync(make_event(id="same", tenant_id=1))
    spool.append_sync(make_event(id="same", tenant_id=2))
    Flusher(engine, spool).flush_once()
    assert ids_in_db(engine) == [(1, "same"), (2, "same")]


def test_thousand_concurrent_events_thousand_rows(
    spool_dir: Path, engine: Engine, make_event: EventFactory, ids_in_db: IdsInDb
) -> None:
    registry = CollectorRegistry()
    metrics = BillingMetrics(registry)
    with Spool(spool_dir, metrics=metrics) as spool:
        events = [make_event() for _ in range(1000)]
        _append_all(spool, events)
        assert spool.stats().fsyncs < 1000
        flusher = Flusher(engine, spool, batch_size=300, metrics=metrics)
        assert flusher.flush_once() == 1000
    assert ids_in_db(engine) == sorted((e.tenant_id, e.id) for e in events)
    assert registry.get_sample_value("citybrain_billing_events_delivered_total") == 1000
    assert registry.get_sample_value("citybrain_billing_flush_seconds_count") == 4
    assert registry.get_sample_value("citybrain_billing_spool_backlog_events") == 0


def test_crash_before_flush_replays_exactly_once(
    spool_dir: Path, engine: Engine, make_event: EventFactory, ids_in_db: IdsInDb
) -> None:
    events = [make_event() for _ in range(120)]
    spool = Spool(spool_dir, segment_max_bytes=4_000)
    _append_all(spool, events[:60])
    Flusher(engine, spool, batch_size=50).flush_once()
    _append_all(spool, events[60:])
    del spool  # crash: no stop(), no final flush
    gc.collect()

    with Spool(spool_dir) as reopened:
        assert reopened.backlog() == 60
        assert Flusher(engine, reopened).flush_once() == 60
    assert ids_in_db(engine) == sorted((e.tenant_id, e.id) for e in events)


def test_crash_between_commit_and_checkpoint_is_ignored_on_replay(
    spool_dir: Path,
    engine: Engine,
    make_event: EventFactory,
    ids_in_db: IdsInDb,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = [make_event() for _ in range(30)]
    spool = Spool(spool_dir)
    _append_all(spool, events)

    def checkpoint_lost(cursor: object) -> None:
        raise MeteringUnavailableError("checkpoint cannot be written")

    monkeypatch.setattr(spool, "mark_delivered", checkpoint_lost)
    flusher = Flusher(engine, spool)
    with pytest.raises(MeteringUnavailableError):
        flusher.flush_once()  # rows committed, checkpoint not
    assert flusher.stats().failures == 1
    spool.close()  # closing writes no checkpoint: the disk looks as after a crash here

    with Spool(spool_dir) as reopened:
        assert reopened.backlog() == 30
        again = Flusher(engine, reopened)
        assert again.flush_once() == 30
        assert again.stats().duplicates == 30
        assert reopened.backlog() == 0
    assert ids_in_db(engine) == sorted((e.tenant_id, e.id) for e in events)


def _add_poison_trigger(engine: Engine, poison_id: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER poison BEFORE INSERT ON usage_event "
            f"WHEN NEW.id = '{poison_id}' BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
        )


def test_flush_failing_mid_batch_marks_nothing_delivered(
    spool: Spool,
    engine: Engine,
    make_event: EventFactory,
    ids_in_db: IdsInDb,
    count_rows: CountRows,
) -> None:
    events = [make_event() for _ in range(50)]
    for e in events:
        spool.append_sync(e)
    _add_poison_trigger(engine, events[30].id)  # rows 0-29 are inserted, then the batch fails
    registry = CollectorRegistry()
    flusher = Flusher(engine, spool, metrics=BillingMetrics(registry))
    with pytest.raises(Exception, match="poisoned row"):
        flusher.flush_once()
    assert count_rows(engine) == 0  # rolled back
    assert spool.backlog() == 50  # nothing marked delivered
    assert flusher.stats().failures == 1
    assert "poisoned row" in (flusher.stats().last_error or "")
    assert registry.get_sample_value("citybrain_billing_flush_failures_total") == 1

    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER poison")
    assert flusher.flush_once() == 50
    assert ids_in_db(engine) == sorted((e.tenant_id, e.id) for e in events)
    assert flusher.stats().last_error is None


def test_failure_in_a_later_batch_keeps_earlier_batches(
    spool: Spool,
    engine: Engine,
    make_event: EventFactory,
    ids_in_db: IdsInDb,
    count_rows: CountRows,
) -> None:
    events = [make_event() for _ in range(350)]
    for e in events:
        spool.append_sync(e)
    _add_poison_trigger(engine, events[250].id)
    flusher = Flusher(engine, spool, batch_size=100)
    with pytest.raises(Exception, match="poisoned row"):
        flusher.flush_once()
    assert count_rows(engine) == 200
    assert spool.backlog() == 150
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER poison")
    assert flusher.flush_once() == 150
    assert ids_in_db(engine) == sorted((e.tenant_id, e.id) for e in events)


def test_unreachable_database_keeps_events_in_the_spool(
    spool: Spool,
    engine: Engine,
    tmp_path: Path,
    make_event: EventFactory,
    ids_in_db: IdsInDb,
) -> None:
    events = [make_event() for _ in range(10)]
    _append_all(spool, events)
    down = create_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'db.sqlite'}")
    broken = Flusher(down, spool)
    with pytest.raises(OperationalError):
        broken.flush_once()
    broken.stop()  # the final flush fails too, quietly; the events stay
    assert broken.stats().failures == 2
    assert spool.backlog() == 10
    down.dispose()

    assert Flusher(engine, spool).flush_once() == 10
    assert ids_in_db(engine) == sorted((e.tenant_id, e.id) for e in events)


def test_background_thread_and_stop_deliver_everything(
    spool: Spool, engine: Engine, make_event: EventFactory, ids_in_db: IdsInDb
) -> None:
    flusher = Flusher(engine, spool, interval_s=0.05)
    flusher.start()
    flusher.start()  # idempotent
    assert flusher.stats().running
    events = [make_event() for _ in range(40)]
    _append_all(spool, events)
    flusher.stop()  # the final flush delivers whatever the thread has not yet
    assert not flusher.stats().running
    assert spool.backlog() == 0
    assert flusher.stats().last_flush_at is not None
    assert ids_in_db(engine) == sorted((e.tenant_id, e.id) for e in events)


def test_unsupported_dialect_is_refused(spool: Spool) -> None:
    class FakeDialect:
        name = "mysql"

    class FakeEngine:
        dialect = FakeDialect()

    with pytest.raises(ValueError, match="mysql"):
        Flusher(FakeEngine(), spool)  # type: ignore[arg-type]


def test_sqlite_table_is_usable_from_a_plain_connection(engine: Engine) -> None:
    with engine.connect() as conn:
        names = conn.execute(text("SELECT name FROM sqlite_master WHERE type='index'")).scalars()
        assert {"ix_usage_event_tenant_at", "ix_usage_event_product_at"} <= set(names)
