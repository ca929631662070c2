"""The data read path, top to bottom: queries and downloads.

Every ``POST /api/v1/products/{handle}/query`` and ``GET .../versions/{n}/data``:

1. authenticate — the HTTP adapter, in a short session (scope ``data:read``);
2. :meth:`DataPlane.open` — resolve the dataset and version, apply the tier and grant policy
   and build the caller's masked view (``marketplace.data.service``: 404 for what the caller
   may not see, 403 without a grant). The caller-independent look-ups (listing, version,
   product key) are cached briefly (``marketplace.data.lookup``), the grant is read on every
   call; on SQLite this step runs on the event loop;
3. quota — the shared quota object (``requests`` per call; ``units`` are rows), 429;
4. compile — the plan against the view into one sqlglot tree (``marketplace.data.compile``),
   reused when the same plan comes again for the same view (the engine then reuses its SQL);
5. run — on the engine, within the time, memory and row limits (``marketplace.data.engine``);
6. meter — one usage event, unit ``rows``, before the response (``marketplace.data.usage``);
   a failed read is never metered.

The owner's ad hoc SQL (:meth:`DataPlane.sql`) takes the same path, its text checked and bound
to the same view by ``marketplace.data.sql`` in place of step 4.

Nothing here knows HTTP: errors are domain errors carrying their status.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlalchemy.orm import Session, sessionmaker

from billing import Meter
from marketplace.catalog.cache import invalidate_on_catalog_writes
from marketplace.config import DataSettings
from marketplace.context import Principal
from marketplace.data.compile import (
    CompiledQuery,
    OutputColumn,
    compile_plan,
    encode_cursor,
    whole_view,
)
from marketplace.data.engine import QueryEngine
from marketplace.data.formats import stream_batches
from marketplace.data.lookup import WATCHED, DatasetCache
from marketplace.data.plan import QueryPlan
from marketplace.data.service import DatasetTarget, open_dataset
from marketplace.data.sql import compile_sql, output_columns
from marketplace.data.usage import DataCall, RowQuota, check_idempotency_key, meter_rows
from marketplace.db import transaction
from marketplace.errors import ForbiddenError, InvalidInputError
from marketplace.gateway.downloads import DownloadTarget, audit_download
from marketplace.gateway.metering import Recorded

__all__ = ["DataPlane", "Download", "QueryResult"]

_BATCH_ROWS = 65_536
#: Compiled plans kept for reuse (a dashboard asks the same few queries over and over).
_COMPILED_ENTRIES = 1024


@dataclass(frozen=True, slots=True)
class QueryResult:
    """One page of a query's result and what the answer says about it."""

    table: pa.Table
    columns: tuple[OutputColumn, ...]
    next_cursor: str | None
    masked: tuple[str, ...]
    version: int
    replayed: bool

    def head(self) -> dict[str, Any]:
        return {
            "columns": [{"name": c.name, "type": c.type} for c in self.columns],
            "row_count": self.table.num_rows,
            "next_cursor": self.next_cursor,
            "masked": list(self.masked),
            "version": self.version,
        }


@dataclass(slots=True)
class Download:
    """A download whose query has started: iterate :meth:`chunks` once."""

    target: DatasetTarget
    fmt: str
    replayed: bool
    _context: AbstractContextManager[pa.RecordBatchReader]
    _reader: pa.RecordBatchReader

    async def chunks(self) -> AsyncIterator[bytes]:
        """The file's bytes; the engine's cursor is released at the end, or on an error."""
        it: Iterator[bytes] = stream_batches(self._reader, self.fmt)
        try:
            while True:
                chunk = await asyncio.to_thread(next, it, None)
                if chunk is None:
                    return
                yield chunk
        finally:
            await asyncio.to_thread(self.close)

    def close(self) -> None:
        self._context.__exit__(None, None, None)


class DataPlane:
    """Queries and downloads over dataset snapshots, metered (the steps above)."""

    def __init__(
        self,
        *,
        settings: DataSettings,
        session_factory: sessionmaker[Session],
        engine: QueryEngine,
        write_factory: sessionmaker[Session] | None = None,
        meter: Meter | None,
        quota: RowQuota | None = None,
        metering: bool = True,
    ) -> None:
        self.settings = settings
        # Reads (step 2) on read-mostly sessions (no write lock on SQLite); the audit of a
        # download on a write session.
        self.session_factory = session_factory
        self.write_factory = write_factory or session_factory
        self.engine = engine
        self.meter = meter
        self.quota = quota
        self.metering = metering and meter is not None
        self.in_flight = 0
        # Step 2's caller-independent look-ups, cleared by this process's catalog writes.
        self.lookups = DatasetCache(settings.lookup_ttl_s)
        invalidate_on_catalog_writes(self.write_factory, self.lookups, WATCHED)
        if self.write_factory is not session_factory:
            invalidate_on_catalog_writes(session_factory, self.lookups, WATCHED)
        # On SQLite (a local file, sub-millisecond reads) a thread hop costs more than the
        # look-ups: step 2 runs on the event loop there, as the inference gateway's does.
        bind = session_factory.kw.get("bind")
        self.inline_lookup = bind is not None and bind.dialect.name == "sqlite"
        # Step 4's plans, by everything their SQL depends on (see _compile).
        self._compiled: dict[tuple[Any, ...], CompiledQuery] = {}

    # steps 2 and 3
    async def open(
        self, call: DataCall, handle: str, version: int | None, *, download: bool = False
    ) -> tuple[Principal, DatasetTarget]:
        check_idempotency_key(call.idempotency_key)

        def go() -> DatasetTarget:
            session = self.session_factory()
            try:
                return open_dataset(
                    session,
                    call.principal,
                    handle,
                    version,
                    grid_m=self.settings.geo_grid_m,
                    download=download,
                    cache=self.lookups,
                )
            finally:
                session.rollback()
                session.close()

        target = go() if self.inline_lookup and not download else await asyncio.to_thread(go)
        principal = call.principal
        assert principal is not None  # open_dataset refuses anonymous reads
        if self.quota is not None:
            await self.quota.check(principal, target)
        return principal, target

    # step 6
    async def _meter(
        self,
        principal: Principal,
        call: DataCall,
        target: DatasetTarget,
        rows: int,
        started: float,
    ) -> Recorded | None:
        if not self.metering:
            return None
        assert self.meter is not None
        latency_ms = (time.perf_counter() - started) * 1000.0
        recorded = await meter_rows(
            self.meter,
            principal,
            call,
            target,
            rows,
            latency_ms,
            others_in_flight=self.in_flight - 1,
        )
        if not recorded.replayed and self.quota is not None:
            await self.quota.add_units(principal, target, float(rows))
        return recorded

    async def query(self, call: DataCall, handle: str, plan: QueryPlan) -> QueryResult:
        """One page of ``plan``'s result over the caller's view of the dataset."""
        started = time.perf_counter()
        self.in_flight += 1
        try:
            principal, target = await self.open(call, handle, plan.version)
            compiled = self._compile(plan, target)
            params = {**compiled.params, **target.view.key_params}
            table = await asyncio.to_thread(
                self.engine.run, target.snapshot, compiled.expression, params
            )
            next_cursor = None
            if table.num_rows > compiled.page_size:
                table = table.slice(0, compiled.page_size)
                next_cursor = encode_cursor(
                    plan, target.version, compiled.offset + compiled.page_size
                )
            recorded = await self._meter(principal, call, target, table.num_rows, started)
            return QueryResult(
                table=table,
                columns=compiled.columns,
                next_cursor=next_cursor,
                masked=compiled.masked,
                version=target.version,
                replayed=recorded is not None and recorded.replayed,
            )
        finally:
            self.in_flight -= 1

    # step 4
    def _compile(self, plan: QueryPlan, target: DatasetTarget) -> CompiledQuery:
        """``plan`` compiled against ``target``'s view, reused when the same plan was compiled
        for the same view before: the key holds the snapshot, the version's stored schema, the
        caller's view (raw, or masked with the columns its grant unmasks) and the limits; the
        product's key is a parameter, bound afresh on every run."""
        settings = self.settings
        key: tuple[Any, ...] | None = None
        if target.signature:
            key = (
                target.product_id,
                target.version,
                target.snapshot.digest,
                target.signature,
                target.owner,
                target.unmasked,
                settings.geo_grid_m,
                settings.default_limit,
                settings.max_rows,
                plan.model_dump_json(),
            )
            hit = self._compiled.get(key)
            if hit is not None:
                return hit
        compiled = compile_plan(
            plan,
            target.view,
            target.version,
            default_limit=settings.default_limit,
            max_rows=settings.max_rows,
        )
        if key is not None:
            if len(self._compiled) >= _COMPILED_ENTRIES:
                self._compiled.clear()
            self._compiled[key] = compiled
        return compiled

    async def sql(self, call: DataCall, handle: str, text: str, version: int | None) -> QueryResult:
        """The owner's ad hoc SELECT over its dataset (``marketplace.data.sql``), one page."""
        started = time.perf_counter()
        self.in_flight += 1
        try:
            principal, target = await self.open(call, handle, version)
            if not target.owner:
                raise ForbiddenError(f"only the owner of '{handle}' may run SQL over it")
            query, params = compile_sql(text, target.view, max_rows=self.settings.max_rows)
            table = await asyncio.to_thread(self.engine.run, target.snapshot, query, params)
            if table.num_rows > self.settings.max_rows:
                raise InvalidInputError(
                    f"the result is over {self.settings.max_rows} rows: aggregate or LIMIT it"
                )
            recorded = await self._meter(principal, call, target, table.num_rows, started)
            return QueryResult(
                table=table,
                columns=output_columns(table),
                next_cursor=None,
                masked=tuple(c.name for c in target.view.columns if c.masked),
                version=target.version,
                replayed=recorded is not None and recorded.replayed,
            )
        finally:
            self.in_flight -= 1

    async def download(self, call: DataCall, handle: str, version: int, fmt: str) -> Download:
        """Start streaming the caller's whole view of a version (metered for all its rows,
        audited), under the download rule (``gateway.downloads``)."""
        started = time.perf_counter()
        self.in_flight += 1
        try:
            principal, target = await self.open(call, handle, version, download=True)
            query, params = whole_view(target.view)
            context = self.engine.stream(target.snapshot, query, params, batch_rows=_BATCH_ROWS)
            reader = await asyncio.to_thread(context.__enter__)
            try:
                recorded = await self._meter(principal, call, target, target.snapshot.rows, started)
                await asyncio.to_thread(self._audit, principal, target, fmt, recorded)
            except BaseException:
                await asyncio.to_thread(context.__exit__, None, None, None)
                raise
            replayed = recorded is not None and recorded.replayed
            return Download(target, fmt, replayed, context, reader)
        finally:
            self.in_flight -= 1

    def _audit(
        self, principal: Principal, target: DatasetTarget, fmt: str, recorded: Recorded | None
    ) -> None:
        download = DownloadTarget(
            target.handle, target.product_id, target.owner_tenant_id, target.tier, target.version
        )
        with transaction(self.write_factory) as session:
            audit_download(
                session,
                principal,
                download,
                what="data",
                recorded=recorded,
                detail={"format": fmt, "rows": target.snapshot.rows},
            )

    def close(self) -> None:
        self.engine.close()
