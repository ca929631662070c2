"""Quotas and rate limits: token buckets for request rates, calendar counters for budgets.

A :class:`Limit` says "at most ``amount`` of ``metric`` per ``window``" for one bucket (the
service names buckets after the limit it configured, so everyone the limit covers shares it):

- ``requests`` per ``second`` or ``minute``: a token bucket holding ``amount`` tokens, refilled
  at ``amount / window`` per second, so bursts up to the limit pass and the long-run rate holds;
- ``requests`` or ``units`` per ``day`` or ``month``: a counter for the calendar period (UTC),
  refused once it is used up, until the period ends.

:meth:`QuotaStore.acquire` checks every limit of a call at once and takes a request from each
only if all allow it (so a refused call consumes nothing); units — audio seconds, rows — are
known only after the call and are added with :meth:`QuotaStore.add_units`.

Two stores: :class:`MemoryQuotaStore` (one process, the default) and :class:`RedisQuotaStore`
(a Lua script, atomic on the Redis server, so several gateway processes share one limit).
"""

from __future__ import annotations

import math
import threading
import time
from calendar import monthrange
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

Metric = Literal["requests", "units"]
Window = Literal["second", "minute", "day", "month"]
WINDOWS: tuple[Window, ...] = ("second", "minute", "day", "month")
METRICS: tuple[Metric, ...] = ("requests", "units")
_RATE_SECONDS = {"second": 1.0, "minute": 60.0}


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``amount`` of ``metric`` per ``window`` in bucket ``bucket``.

    Attributes:
        bucket: Who shares this limit (e.g. ``"q17"`` for configured limit 17).
        metric: ``requests`` or ``units``.
        window: ``second``/``minute`` (a rate) or ``day``/``month`` (a calendar budget).
        amount: The limit.
        label: Human words for error messages, e.g. ``"tenant parkeasy on traffic-police.x"``.
    """

    bucket: str
    metric: Metric
    window: Window
    amount: float
    label: str = ""

    def __post_init__(self) -> None:
        if self.window not in WINDOWS or self.metric not in METRICS:
            raise ValueError(f"unknown limit {self.metric} per {self.window}")
        if self.metric == "units" and self.window in _RATE_SECONDS:
            raise ValueError("units are limited per day or month")
        if not self.amount > 0:
            raise ValueError("a limit must be positive")

    @property
    def is_rate(self) -> bool:
        return self.window in _RATE_SECONDS

    def describe(self) -> str:
        amount = f"{self.amount:g}"
        what = f"{amount} {self.metric} per {self.window}"
        return f"{what} ({self.label})" if self.label else what


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to :meth:`QuotaStore.acquire`.

    Attributes:
        allowed: Whether the call may go ahead (and has taken its share of each limit).
        retry_after_s: When refused, how long until the refusing limit would allow it.
        refused_by: The limit that refused, if any.
    """

    allowed: bool
    retry_after_s: float = 0.0
    refused_by: Limit | None = None

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after_s)))


class QuotaStore(Protocol):
    """Where buckets and counters live."""

    def acquire(self, limits: Sequence[Limit], now: float | None = None) -> Decision:
        """Take one request from every limit, or from none and say which refused."""

    def add_units(self, limits: Sequence[Limit], units: float, now: float | None = None) -> None:
        """Count ``units`` against every unit budget in ``limits``."""


def period(window: Window, now: float) -> tuple[str, float]:
    """The calendar period (UTC) containing ``now``: its label and seconds until it ends."""
    at = datetime.fromtimestamp(now, UTC)
    if window == "day":
        start = at.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
        label = start.strftime("%Y-%m-%d")
    else:
        start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=monthrange(at.year, at.month)[1])
        label = start.strftime("%Y-%m")
    return label, max((end - at).total_seconds(), 0.001)


def _counter_key(limit: Limit, now: float) -> tuple[str, float]:
    label, remaining = period(limit.window, now)
    return f"{limit.bucket}|{limit.metric}|{limit.window}|{label}", remaining


class MemoryQuotaStore:
    """In-process buckets and counters (one gateway process). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._counters: dict[str, float] = {}

    def acquire(self, limits: Sequence[Limit], now: float | None = None) -> Decision:
        now = time.time() if now is None else now
        with self._lock:
            planned: list[tuple[str, float, bool]] = []
            worst: Decision | None = None
            for limit in limits:
                if limit.is_rate:
                    key = f"{limit.bucket}|{limit.window}"
                    rate = limit.amount / _RATE_SECONDS[limit.window]
                    tokens, at = self._buckets.get(key, (limit.amount, now))
                    tokens = min(limit.amount, tokens + max(0.0, now - at) * rate)
                    if tokens < 1:
                        wait = (1 - tokens) / rate
                        if worst is None or wait > worst.retry_after_s:
                            worst = Decision(False, wait, limit)
                    planned.append((key, tokens - 1, True))
                else:
                    key, remaining = _counter_key(limit, now)
                    used = self._counters.get(key, 0.0)
                    need = 1.0 if limit.metric == "requests" else 0.0
                    exhausted = used + need > limit.amount or (need == 0 and used >= limit.amount)
                    if exhausted and (worst is None or remaining > worst.retry_after_s):
                        worst = Decision(False, remaining, limit)
                    planned.append((key, used + need, False))
            if worst is not None:
                return worst
            for key, value, is_bucket in planned:
                if is_bucket:
                    self._buckets[key] = (value, now)
                else:
                    self._counters[key] = value
            return Decision(True)

    def add_units(self, limits: Sequence[Limit], units: float, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            for limit in limits:
                if limit.metric == "units" and not limit.is_rate:
                    key, _ = _counter_key(limit, now)
                    self._counters[key] = self._counters.get(key, 0.0) + units


# KEYS: one per limit. ARGV[1] = now; then per limit: kind ("tb" bucket, "ctr" request
# counter, "chk" unit budget), amount, and the refill rate (tb) or seconds left in the period.
_ACQUIRE = """
local now = tonumber(ARGV[1])
local worst, worst_i = 0, 0
local values = {}
for i = 1, #KEYS do
  local kind = ARGV[2 + (i - 1) * 3]
  local cap = tonumber(ARGV[3 + (i - 1) * 3])
  local x = tonumber(ARGV[4 + (i - 1) * 3])
  if kind == 'tb' then
    local v = redis.call('HMGET', KEYS[i], 't', 'ts')
    local tokens = tonumber(v[1]) or cap
    local ts = tonumber(v[2]) or now
    if now > ts then tokens = math.min(cap, tokens + (now - ts) * x) end
    values[i] = tokens - 1
    if tokens < 1 then
      local wait = (1 - tokens) / x
      if wait > worst then worst, worst_i = wait, i end
    end
  else
    local used = tonumber(redis.call('GET', KEYS[i]) or '0')
    local need = 0
    if kind == 'ctr' then need = 1 end
    values[i] = used + need
    if used + need > cap or (need == 0 and used >= cap) then
      if x > worst then worst, worst_i = x, i end
    end
  end
end
if worst_i > 0 then return {0, tostring(worst), worst_i} end
for i = 1, #KEYS do
  local kind = ARGV[2 + (i - 1) * 3]
  local cap = tonumber(ARGV[3 + (i - 1) * 3])
  local x = tonumber(ARGV[4 + (i - 1) * 3])
  if kind == 'tb' then
    redis.call('HSET', KEYS[i], 't', tostring(values[i]), 'ts', tostring(now))
    redis.call('EXPIRE', KEYS[i], math.ceil(cap / x) + 60)
  elseif kind == 'ctr' then
    redis.call('SET', KEYS[i], tostring(values[i]), 'EX', math.ceil(x) + 60)
  end
end
return {1, '0', 0}
"""

_ADD_UNITS = """
for i = 1, #KEYS do
  redis.call('INCRBYFLOAT', KEYS[i], ARGV[1])
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[i + 1]))
end
return 1
"""


class RedisQuotaStore:
    """Buckets and counters in Redis, changed by one Lua script per call, so every gateway
    process sharing the server shares each limit exactly."""

    def __init__(self, url: str, *, prefix: str = "citybrain:quota:") -> None:
        import redis

        self._redis: Any = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = prefix
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._add = self._redis.register_script(_ADD_UNITS)

    def acquire(self, limits: Sequence[Limit], now: float | None = None) -> Decision:
        if not limits:
            return Decision(True)
        now = time.time() if now is None else now
        keys: list[str] = []
        args: list[str | float] = [repr(now)]
        for limit in limits:
            if limit.is_rate:
                keys.append(f"{self._prefix}{limit.bucket}|{limit.window}")
                args += ["tb", limit.amount, limit.amount / _RATE_SECONDS[limit.window]]
            else:
                key, remaining = _counter_key(limit, now)
                keys.append(self._prefix + key)
                args += ["ctr" if limit.metric == "requests" else "chk", limit.amount, remaining]
        allowed, wait, index = self._acquire(keys=keys, args=args)
        if int(allowed) == 1:
            return Decision(True)
        return Decision(False, float(wait), limits[int(index) - 1])

    def add_units(self, limits: Sequence[Limit], units: float, now: float | None = None) -> None:
        now = time.time() if now is None else now
        keys: list[str] = []
        ttls: list[int] = []
        for limit in limits:
            if limit.metric == "units" and not limit.is_rate:
                key, remaining = _counter_key(limit, now)
                keys.append(self._prefix + key)
                ttls.append(math.ceil(remaining) + 60)
        if keys:
            self._add(keys=keys, args=[repr(float(units)), *ttls])

    def close(self) -> None:
        self._redis.close()
