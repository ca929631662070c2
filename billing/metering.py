"""The metering façade the gateway uses: record usage, answer idempotency questions, report."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, select

from billing.events import UsageEvent
from billing.flusher import Flusher, PgMethod
from billing.metrics import BillingMetrics
from billing.spool import Spool
from billing.tables import usage_event

__all__ = ["DEFAULT_IDEMPOTENCY_WINDOW_S", "Meter"]

log = logging.getLogger(__name__)

#: How long an idempotency key (event id) is remembered for :meth:`Meter.seen`.
DEFAULT_IDEMPOTENCY_WINDOW_S = 48 * 3600.0


class Meter:
    """Exactly-once usage metering: a durable spool plus a background flusher.

    The gateway calls :meth:`record` once per successful metered call, *before* it sends the
    response; ``record`` returns once the event is fsynced, and raises
    :class:`~billing.errors.MeteringUnavailableError` (503) if it cannot be, in which case the
    call must fail rather than be served unbilled. Recording the same ``(tenant_id, id)`` twice is
    harmless: the database keeps one row.
    """

    def __init__(
        self,
        spool: Spool,
        flusher: Flusher,
        *,
        idempotency_window_s: float = DEFAULT_IDEMPOTENCY_WINDOW_S,
    ) -> None:
        """Wire a spool and the flusher that delivers from it.

        Args:
            spool: The local spool.
            flusher: The flusher; it must deliver from ``spool``.
            idempotency_window_s: How far back :meth:`seen` looks.

        Raises:
            ValueError: The flusher delivers from another spool.
        """
        if flusher.spool is not spool:
            raise ValueError("the flusher must deliver from the meter's spool")
        self._spool = spool
        self._flusher = flusher
        self._window_s = idempotency_window_s

    @classmethod
    def create(
        cls,
        engine: Engine,
        spool_dir: str | os.PathLike[str],
        *,
        registry: CollectorRegistry | None = None,
        batch_size: int = 5000,
        interval_s: float = 0.5,
        segment_max_bytes: int = 64 << 20,
        idempotency_window_s: float = DEFAULT_IDEMPOTENCY_WINDOW_S,
        pg_method: PgMethod = "copy",
        group_commit_wait_s: float = 0.020,
    ) -> Meter:
        """Build a spool, a flusher and their metrics in one call (not started).

        Args:
            engine: The database engine.
            spool_dir: This process's spool directory (one per server worker).
            registry: Where to register the metrics, or ``None`` for no metrics.
            batch_size: The most events per database transaction.
            interval_s: The pause between flush passes.
            segment_max_bytes: The spool's segment rotation size.
            idempotency_window_s: How far back :meth:`seen` looks.
            pg_method: How batches are written on PostgreSQL.
            group_commit_wait_s: How long a group commit may gather under load at most.

        Returns:
            The meter; call :meth:`start` to begin flushing.
        """
        metrics = BillingMetrics(registry) if registry is not None else None
        spool = Spool(
            spool_dir,
            segment_max_bytes=segment_max_bytes,
            recent_window_s=idempotency_window_s,
            metrics=metrics,
            group_commit_wait_s=group_commit_wait_s,
        )
        flusher = Flusher(
            engine, spool, batch_size, interval_s, metrics=metrics, pg_method=pg_method
        )
        return cls(spool, flusher, idempotency_window_s=idempotency_window_s)

    @property
    def spool(self) -> Spool:
        """The spool."""
        return self._spool

    @property
    def flusher(self) -> Flusher:
        """The flusher."""
        return self._flusher

    async def record(self, event: UsageEvent, *, others_in_flight: int = 0) -> None:
        """Record one usage event durably; return once it is fsynced in the spool.

        Args:
            event: The event of a successful metered call.
            others_in_flight: How many other calls are in progress on this event loop; with
                any, the fsync is made off the loop so they go on meanwhile, and under load
                the events of several calls share it (see :meth:`Spool.append`).

        Raises:
            MeteringUnavailableError: The spool cannot be written; fail the call with 503.
        """
        await self._spool.append(event, others_in_flight=others_in_flight)

    def record_sync(self, event: UsageEvent, timeout_s: float | None = None) -> None:
        """Like :meth:`record`, for threads without an event loop.

        Args:
            event: The event of a successful metered call.
            timeout_s: How long to wait at most.

        Raises:
            MeteringUnavailableError: The spool cannot be written; fail the call with 503.
            TimeoutError: Not durable within ``timeout_s``.
        """
        self._spool.append_sync(event, timeout_s)

    async def seen(self, tenant_id: int, id: str) -> bool:
        """Whether an event ``(tenant_id, id)`` was recorded within the idempotency window.

        Looks in the spool's in-memory index of durable events first, then in the database (in a
        worker thread). Only durable events count: a key is never claimed before its event is on
        disk, so a failed call can always be retried with the same key. ``False`` means "not
        known to be recorded" (also when the database cannot be asked, or when another server
        process spooled the event and has not flushed it yet); recording again is always safe,
        because the database keeps one row per ``(tenant_id, id)``.

        Args:
            tenant_id: The tenant.
            id: The event id (the client's ``Idempotency-Key``).

        Returns:
            True if the event is known to be recorded.
        """
        if self._spool.seen_recently(tenant_id, id, self._window_s):
            return True
        return await asyncio.to_thread(self._seen_in_db, tenant_id, id)

    def start(self) -> None:
        """Start the background flusher."""
        self._flusher.start()

    def stop(self, *, flush: bool = True) -> None:
        """Stop flushing (delivering what is left if the database is reachable), close the spool.

        Args:
            flush: Whether to try a final flush.
        """
        self._flusher.stop(flush=flush)
        self._spool.close()

    def status(self) -> dict[str, Any]:
        """Report the metering pipeline's health (for ``/health`` and operators).

        Returns:
            ``backlog`` (events not yet in the database), ``last_flush_at`` (ISO 8601 or None),
            ``last_error`` (str or None), ``delivered``, ``duplicates``, ``flush_failures``,
            ``appended``, ``append_failures``, ``spool_available``, ``spool_error``,
            ``flusher_running`` and ``spool_dir``.
        """
        spool = self._spool.stats()
        flusher = self._flusher.stats()
        return {
            "backlog": spool.backlog,
            "last_flush_at": flusher.last_flush_at.isoformat() if flusher.last_flush_at else None,
            "last_error": flusher.last_error or (None if spool.available else spool.last_error),
            "delivered": flusher.delivered,
            "duplicates": flusher.duplicates,
            "flush_failures": flusher.failures,
            "appended": spool.appended,
            "append_failures": spool.append_failures,
            "spool_available": spool.available,
            "spool_error": spool.last_error,
            "flusher_running": flusher.running,
            "spool_dir": str(self._spool.directory),
        }

    def _seen_in_db(self, tenant_id: int, event_id: str) -> bool:
        cutoff = datetime.now(UTC) - timedelta(seconds=self._window_s)
        query = (
            select(usage_event.c.id)
            .where(
                usage_event.c.tenant_id == tenant_id,
                usage_event.c.id == event_id,
                usage_event.c.at >= cutoff,
            )
            .limit(1)
        )
        started = time.perf_counter()
        try:
            with self._flusher.engine.connect() as conn:
                found = conn.execute(query).first() is not None
        except Exception as exc:
            log.warning(
                "idempotency lookup failed after %.0f ms; treating (%s, %r) as not seen: %s",
                (time.perf_counter() - started) * 1000,
                tenant_id,
                event_id,
                exc,
            )
            return False
        return found
