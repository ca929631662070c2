"""Step 4 of the request path: quotas and rate limits, before the runtime.

Configured limits (marketplace.quotas) are looked up per (tenant, key, product) and cached for
a few seconds (``GatewaySettings.quota_cache_s``: a new or removed limit applies within that
time); buckets live in billing.quotas' in-process store, or in Redis
(``CITYBRAIN_GATEWAY__QUOTA_REDIS_URL``) so several gateway processes share every limit. A
refused call answers 429 with ``Retry-After`` and is never metered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from billing.quotas import Decision, Limit, MemoryQuotaStore, QuotaStore, RedisQuotaStore
from marketplace.config import GatewaySettings
from marketplace.context import Principal
from marketplace.errors import QuotaExceededError, UnavailableError
from marketplace.gateway.resolve import ResolvedModel
from marketplace.quotas.service import applicable_limits

__all__ = ["LimitQuota", "NoQuota", "Quota"]

T = TypeVar("T")


class Quota(Protocol):
    """Quotas and rate limits per key, tenant and product.

    ``check`` raises ``QuotaExceededError`` (429 with ``Retry-After``) to refuse a call.
    """

    async def check(self, principal: Principal, model: ResolvedModel) -> None: ...

    async def add_units(self, principal: Principal, model: ResolvedModel, units: float) -> None:
        """Count a successful call's metered units against unit budgets."""


class NoQuota:
    """Every call is within quota."""

    async def check(self, principal: Principal, model: ResolvedModel) -> None:
        return None

    async def add_units(self, principal: Principal, model: ResolvedModel, units: float) -> None:
        return None


class Metered(Protocol):
    """What a limit is looked up by: a resolved model, or a dataset being read."""

    @property
    def product_id(self) -> int: ...


class LimitQuota:
    """The gateway's quota step over configured limits."""

    @classmethod
    def from_settings(
        cls, settings: GatewaySettings, session_factory: sessionmaker[Session]
    ) -> LimitQuota:
        """The quota step ``settings`` describe, reading limits through ``session_factory``."""
        return cls(
            session_factory,
            redis_url=settings.quota_redis_url,
            cache_s=settings.quota_cache_s,
            default_key_rps=settings.default_key_rps,
        )

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        redis_url: str | None = None,
        cache_s: float = 5.0,
        default_key_rps: float = 0.0,
    ) -> None:
        self._factory = session_factory
        self._store: QuotaStore = RedisQuotaStore(redis_url) if redis_url else MemoryQuotaStore()
        self._remote = redis_url is not None
        self._cache_s = cache_s
        self._default_key_rps = default_key_rps
        self._cache: dict[tuple[int, str | None, int], tuple[float, list[Limit]]] = {}

    def _load(self, principal: Principal, product_id: int) -> list[Limit]:
        with self._factory() as session:
            limits = applicable_limits(
                session,
                tenant_id=principal.tenant_id,
                key_id=principal.key_id,
                product_id=product_id,
            )
        if self._default_key_rps > 0 and principal.key_id:
            limits.append(
                Limit(
                    f"key:{principal.key_id}",
                    "requests",
                    "second",
                    self._default_key_rps,
                    label=f"key {principal.key_id}, platform default",
                )
            )
        return limits

    async def limits(self, principal: Principal, model: Metered) -> list[Limit]:
        key = (principal.tenant_id, principal.key_id, model.product_id)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        limits = await asyncio.to_thread(self._load, principal, model.product_id)
        self._cache[key] = (now + self._cache_s, limits)
        return limits

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if not self._remote:
            return fn(*args)  # in-process buckets: microseconds, no thread hop
        try:
            return await asyncio.to_thread(fn, *args)
        except OSError as e:
            raise UnavailableError("the quota store is unreachable") from e
        except Exception as e:  # redis errors: refuse rather than run unlimited
            if type(e).__module__.startswith("redis"):
                raise UnavailableError("the quota store is unreachable") from e
            raise

    async def check(self, principal: Principal, model: Metered) -> None:
        limits = await self.limits(principal, model)
        if not limits:
            return
        decision: Decision = await self._call(self._store.acquire, limits)
        if not decision.allowed:
            what = decision.refused_by.describe() if decision.refused_by else "a limit"
            raise QuotaExceededError(
                f"quota exceeded: {what}; retry after {decision.retry_after_header} s",
                headers={"Retry-After": decision.retry_after_header},
            )

    async def add_units(self, principal: Principal, model: Metered, units: float) -> None:
        limits: Sequence[Limit] = [
            lim for lim in await self.limits(principal, model) if lim.metric == "units"
        ]
        if limits:
            await self._call(self._store.add_units, limits, units)
