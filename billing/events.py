"""The usage event and its compact, checksummed on-disk record format.

One record is one line::

    <crc32 of payload, 8 lowercase hex digits> <payload: compact JSON array>\\n

The payload is ``[1, id, tenant_id, key_id, product, product_id, version, unit, quantity,
at_us, latency_ms, request_id]`` where ``1`` is the format version and ``at_us`` is the event
time in integer microseconds since the Unix epoch (UTC). JSON is written with
``ensure_ascii=True``, so a payload never contains a raw newline and a torn or corrupted record
can be detected (bad checksum, missing newline) and skipped on replay.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from billing.errors import InvalidUsageEventError

__all__ = [
    "KNOWN_UNITS",
    "MAX_ID_LENGTH",
    "CorruptRecordError",
    "UsageEvent",
    "decode_record",
]

#: Units the platform meters today; others matching ``[a-z][a-z0-9-]*`` are accepted too.
KNOWN_UNITS = frozenset({"call", "audio-second", "row", "byte", "download"})
#: The longest idempotency key (event id) accepted; the column is ``VARCHAR(255)``.
MAX_ID_LENGTH = 255
MAX_REQUEST_ID_LENGTH = 64
MAX_KEY_ID_LENGTH = 32
MAX_PRODUCT_LENGTH = 255
MAX_UNIT_LENGTH = 32

_FORMAT_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNIT_RE = re.compile(r"[a-z][a-z0-9-]*\Z")
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode
_loads = json.JSONDecoder().decode
_set = object.__setattr__
_FIELDS = ("id", "tenant_id", "key_id", "product", "product_id", "version", "unit", "quantity")


class CorruptRecordError(ValueError):
    """A spool record is torn (no trailing newline), fails its checksum or does not parse."""


def _check_text(name: str, value: object, max_len: int, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise InvalidUsageEventError(f"usage event {name} must be a non-empty string")
    if len(value) > max_len:
        raise InvalidUsageEventError(f"usage event {name} is longer than {max_len} characters")


def _check_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidUsageEventError(f"usage event {name} must be an integer")


def _check_number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidUsageEventError(f"usage event {name} must be a number")
    if not math.isfinite(value) or value < 0:
        raise InvalidUsageEventError(f"usage event {name} must be finite and not negative")


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One successful metered call (an inference, a data query...).

    Attributes:
        id: The client's ``Idempotency-Key`` if it sent one, else an id the platform drew (the
            request id, unless the client chose that with ``X-Request-Id``). Unique per
            tenant: a second event with the same ``(tenant_id, id)`` is ignored, never billed twice.
        tenant_id: The consuming tenant (who is billed).
        key_id: The public id of the API key used, or ``None`` for portal (OIDC) calls.
        product: The product handle, ``<tenant-slug>.<product-name>``.
        product_id: The product's database id.
        version: The product version served.
        unit: What ``quantity`` counts: ``call``, ``audio-second``, ``row``, ``byte``...
        quantity: How many units the call used (finite, not negative).
        at: When the call was served; a timezone-aware datetime, normalised to UTC.
        latency_ms: How long the call took, in milliseconds.
        request_id: The platform's request id (for joining with logs and audit).
    """

    id: str
    tenant_id: int
    key_id: str | None
    product: str
    product_id: int
    version: int
    unit: str
    quantity: float
    at: datetime
    latency_ms: float
    request_id: str

    def __post_init__(self) -> None:
        """Validate the fields and normalise ``at`` to UTC.

        Raises:
            InvalidUsageEventError: A field is missing, of the wrong type or out of range.
        """
        _check_text("id", self.id, MAX_ID_LENGTH)
        _check_int("tenant_id", self.tenant_id)
        _check_text("key_id", self.key_id, MAX_KEY_ID_LENGTH, optional=True)
        _check_text("product", self.product, MAX_PRODUCT_LENGTH)
        _check_int("product_id", self.product_id)
        _check_int("version", self.version)
        _check_text("unit", self.unit, MAX_UNIT_LENGTH)
        if not _UNIT_RE.match(self.unit):
            raise InvalidUsageEventError("usage event unit must match [a-z][a-z0-9-]*")
        _check_number("quantity", self.quantity)
        _check_number("latency_ms", self.latency_ms)
        _check_text("request_id", self.request_id, MAX_REQUEST_ID_LENGTH)
        if not isinstance(self.at, datetime) or self.at.utcoffset() is None:
            raise InvalidUsageEventError("usage event at must be a timezone-aware datetime")
        if self.at.tzinfo is not UTC:
            object.__setattr__(self, "at", self.at.astimezone(UTC))

    def to_record(self) -> bytes:
        """Serialise the event as one checksummed spool record (a line ending in ``\\n``).

        Returns:
            The record's bytes.
        """
        delta = self.at - _EPOCH
        at_us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        payload = _dumps(
            [
                _FORMAT_VERSION,
                self.id,
                self.tenant_id,
                self.key_id,
                self.product,
                self.product_id,
                self.version,
                self.unit,
                self.quantity,
                at_us,
                self.latency_ms,
                self.request_id,
            ]
        ).encode("ascii")
        return b"%08x %s\n" % (zlib.crc32(payload), payload)

    def to_row(self) -> dict[str, Any]:
        """Return the event as a ``usage_event`` row (column name to value).

        Returns:
            A dict suitable for ``insert(usage_event)`` parameters.
        """
        return {
            "tenant_id": self.tenant_id,
            "id": self.id,
            "key_id": self.key_id,
            "product": self.product,
            "product_id": self.product_id,
            "version": self.version,
            "unit": self.unit,
            "quantity": self.quantity,
            "at": self.at,
            "latency_ms": self.latency_ms,
            "request_id": self.request_id,
        }


def decode_record(record: bytes) -> UsageEvent:
    """Parse one spool record produced by :meth:`UsageEvent.to_record`.

    Args:
        record: The record's bytes, including the trailing newline.

    Returns:
        The event.

    Raises:
        CorruptRecordError: The record is torn, its checksum does not match, or it does not parse.
    """
    if len(record) < 11 or record[-1:] != b"\n" or record[8:9] != b" ":
        raise CorruptRecordError("torn or malformed spool record")
    payload = record[9:-1]
    try:
        expected = int(record[:8], 16)
    except ValueError as exc:
        raise CorruptRecordError("malformed spool record checksum") from exc
    if zlib.crc32(payload) != expected:
        raise CorruptRecordError("spool record checksum mismatch")
    try:
        fields = _loads(payload.decode("ascii"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptRecordError(f"unparseable spool record: {exc}") from exc
    if not isinstance(fields, list) or len(fields) != 12 or fields[0] != _FORMAT_VERSION:
        raise CorruptRecordError("unknown spool record layout")
    try:
        at = _EPOCH + timedelta(microseconds=fields[9])
    except (TypeError, OverflowError) as exc:
        raise CorruptRecordError(f"bad event time in spool record: {exc}") from exc
    # The checksum proves these are the bytes to_record() wrote for a validated event, so the
    # (comparatively slow) validation in __post_init__ is skipped: replay and flushing decode
    # hundreds of thousands of records per second.
    event = object.__new__(UsageEvent)
    for name, value in zip(_FIELDS, fields[1:9], strict=True):
        _set(event, name, value)
    _set(event, "at", at)
    _set(event, "latency_ms", fields[10])
    _set(event, "request_id", fields[11])
    return event
