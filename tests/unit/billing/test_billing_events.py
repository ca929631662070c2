"""UsageEvent validation and its checksummed record format."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from billing.errors import InvalidUsageEventError
from billing.events import CorruptRecordError, UsageEvent, decode_record

EventFactory = Callable[..., UsageEvent]


def test_record_round_trip(make_event: EventFactory) -> None:
    event = make_event(key_id=None, quantity=2.75, unit="audio-second", id="idem/键-1")
    record = event.to_record()
    assert record.endswith(b"\n") and record.count(b"\n") == 1
    assert decode_record(record) == event


def test_at_is_normalised_to_utc(make_event: EventFactory) -> None:
    shanghai = timezone(timedelta(hours=8))
    event = make_event(at=datetime(2026, 11, 26, 17, 30, tzinfo=shanghai))
    assert event.at == datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
    assert event.at.tzinfo is UTC
    assert decode_record(event.to_record()).at == event.at


def test_checksum_mismatch_is_detected(make_event: EventFactory) -> None:
    record = bytearray(make_event(quantity=1.0).to_record())
    position = record.index(b'"call"') + 1
    record[position] = ord("k")
    with pytest.raises(CorruptRecordError, match="checksum"):
        decode_record(bytes(record))


def test_torn_record_is_detected(make_event: EventFactory) -> None:
    record = make_event().to_record()
    with pytest.raises(CorruptRecordError, match="torn"):
        decode_record(record[: len(record) // 2])
    with pytest.raises(CorruptRecordError):
        decode_record(record[:-1])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("id", "", "id"),
        ("id", "x" * 256, "id"),
        ("tenant_id", "7", "tenant_id"),
        ("tenant_id", True, "tenant_id"),
        ("quantity", -1.0, "quantity"),
        ("quantity", float("nan"), "quantity"),
        ("latency_ms", float("inf"), "latency_ms"),
        ("unit", "Call", "unit"),
        ("at", datetime(2026, 1, 1), "timezone-aware"),
        ("request_id", "r" * 65, "request_id"),
    ],
)
def test_invalid_events_are_refused(
    make_event: EventFactory, field: str, value: object, message: str
) -> None:
    with pytest.raises(InvalidUsageEventError, match=message) as info:
        make_event(**{field: value})
    assert info.value.status == 400
    assert info.value.code == "InvalidUsageEvent"


def test_event_is_frozen(make_event: EventFactory) -> None:
    event = make_event()
    with pytest.raises(AttributeError):
        event.quantity = 3.0  # type: ignore[misc]
    assert isinstance(event, UsageEvent)
