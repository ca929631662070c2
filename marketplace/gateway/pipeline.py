"""The inference request path, top to bottom.

Every ``POST /v2/models/{name}[/versions/{v}]/infer`` goes through these steps, in order, in
:meth:`Gateway.infer`:

1. authenticate — the API key (``Authorization: Bearer`` or ``X-API-Key``) against the
   database, every call, so a revoked key fails on its very next request;
2. resolve — the handle and version to a model version (:mod:`marketplace.gateway.resolve`,
   cached briefly), and whether an access grant is in force;
3. authorize — the tier policy (:mod:`marketplace.gateway.policy`); what the caller may not see
   answers 404 exactly like a missing model;
4. quota — quotas and rate limits (:mod:`marketplace.gateway.quota`; 429 with ``Retry-After``);
5. run — decode the v2 request, check it against the signature, run the runtime
   (:mod:`marketplace.gateway.serving`);
6. meter — one durable usage event per successful call (:mod:`marketplace.gateway.metering`),
   once per ``Idempotency-Key`` (:mod:`marketplace.gateway.idempotency`); a call whose event
   cannot be made durable fails with 503.

Step 1 reads an API key on a raw driver connection (``marketplace.keys.reader``: an async
psycopg pool on PostgreSQL, a connection of its own on SQLite), on the event loop; step 2 is
usually answered by the resolution cache. A cache miss or a grant check takes one short
read-only connection (in a worker thread on PostgreSQL). Failed calls are never metered.
:class:`Gateway` also answers the model metadata and readiness routes (the server's
readiness is ``marketplace.health``'s). Nothing here knows HTTP
frameworks: errors are domain errors that carry their status (``marketplace.errors``,
``model_store.errors``, ``billing.errors``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from billing import Meter
from marketplace import __version__
from marketplace.config import Settings
from marketplace.context import Caller, Principal
from marketplace.errors import UnauthenticatedError, UnavailableError
from marketplace.gateway.constants import (
    EXTENSIONS,
    IDEMPOTENT_REPLAYED_HEADER,
    PLATFORMS,
    SERVER_NAME,
)
from marketplace.gateway.idempotency import check_idempotency_key
from marketplace.gateway.metering import record_usage, usage_quantity
from marketplace.gateway.metrics import UNRESOLVED
from marketplace.gateway.policy import authorize, find_grant, needs_grant, visible_version
from marketplace.gateway.quota import NoQuota, Quota
from marketplace.gateway.resolve import MISSING, ResolveCache, ResolvedModel, resolve_model
from marketplace.gateway.serving import ServingState, decode, run
from marketplace.keys.reader import KeyReader
from marketplace.keys.service import authenticate_token, check_key, parse_token, touch_key
from marketplace.tables import utcnow
from model_store.errors import ModelUnavailableError
from model_store.v2 import encode_response, model_metadata

__all__ = ["Gateway", "InferCall", "Reply", "presented_token"]

# Bodies larger than this are decoded in a worker thread, so big JSON never stalls the loop.
_DECODE_INLINE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class InferCall:
    """One inference request, as the HTTP adapter hands it over.

    Attributes:
        name: The model name from the path (a product handle).
        version: The version from the path, or None for the latest.
        token: The presented API key, or None.
        body: The raw request body.
        header_length: ``Inference-Header-Content-Length`` (binary tensors), or None for JSON.
        idempotency_key: The client's ``Idempotency-Key``, if any.
        request_id: The platform's request id.
        request_id_chosen: Whether the client chose ``request_id`` (``X-Request-Id``); then it
            cannot name the usage event, which takes a fresh id of its own.
    """

    name: str
    version: str | None
    token: str | None
    body: bytes
    header_length: str | None
    idempotency_key: str | None
    request_id: str
    request_id_chosen: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    """A response body and the headers to send with it (status 200), and who was served."""

    body: bytes
    headers: dict[str, str]
    principal: Principal | None = None


def presented_token(authorization: str | None, api_key: str | None) -> str | None:
    """The API key from ``Authorization: Bearer <key>`` or ``X-API-Key``, or None."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise UnauthenticatedError("Authorization header must be 'Bearer <API key>'")
        return value.strip()
    return api_key.strip() if api_key else None


class Gateway:
    """The v2 data plane of the platform: the steps above, plus metadata and readiness.

    Args:
        settings: The process's settings (``billing.metering``: False skips step 6, for
            benchmarks and internal deployments; ``key_last_used_resolution_s``).
        sessions: Read-mostly sessions for steps 1 and 2 (their engine is the one read).
        writes: Sessions for the gateway's one write, a key's last-used stamp.
        keys: Step 1 on a raw driver connection (None: on the ``sessions`` engine).
        cache: The resolution cache (cleared by catalog writes).
        serving: The runtimes and what is registered on them.
        usage: The usage meter.
        quota: Step 4 (default: none).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        sessions: sessionmaker[Session],
        writes: sessionmaker[Session],
        keys: KeyReader | None,
        cache: ResolveCache,
        serving: ServingState,
        usage: Meter,
        quota: Quota | None = None,
    ) -> None:
        self._read_bind: Engine = sessions.kw["bind"]
        # On SQLite (a local file, sub-millisecond reads) a thread hop would cost more than
        # the queries: steps 1 and 2 run on the event loop there.
        self.inline_lookup = self._read_bind.dialect.name == "sqlite"
        self.write_factory = writes
        self.keys = keys
        self.last_used_resolution = timedelta(seconds=settings.key_last_used_resolution_s)
        self._stamped: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.cache = cache
        self.serving = serving
        self.metrics = serving.metrics
        self.usage = usage
        self.metering = settings.billing.metering
        self.quota: Quota = quota or NoQuota()
        self.version = __version__
        # Inference calls in progress (on this process's one event loop), for step 6.
        self.in_flight = 0

    async def infer(self, call: InferCall) -> Reply:
        """Serve one inference call through every step; count it in the metrics."""
        started = time.perf_counter()
        label = UNRESOLVED
        self.in_flight += 1
        try:
            check_idempotency_key(call.idempotency_key)
            # 1 + 2
            caller, model, granted = await self.lookup(call.token, call.name, call.version)
            # 3
            principal = authorize(caller, model, call.name, call.version, granted=granted)
            assert model is not None and model.version is not None
            label = model.label
            # 4
            await self.quota.check(principal, model)
            # 5
            if len(call.body) > _DECODE_INLINE_BYTES:
                request = await asyncio.to_thread(decode, call.body, call.header_length)
            else:
                request = decode(call.body, call.header_length)
            outputs = await run(self.serving, model, request)
            body, headers = encode_response(call.name, str(model.version), outputs, request)
            # 6
            unit, quantity = usage_quantity(model, outputs)
            replayed = False
            if self.metering:
                recorded = await record_usage(
                    self.usage,
                    principal,
                    product=model.handle,
                    product_id=model.product_id,
                    version=model.version,
                    unit=unit,
                    quantity=quantity,
                    latency_ms=(time.perf_counter() - started) * 1000.0,
                    idempotency_key=call.idempotency_key,
                    request_id=call.request_id,
                    request_id_chosen=call.request_id_chosen,
                    others_in_flight=self.in_flight - 1,
                )
                replayed = recorded.replayed
            if replayed:
                headers[IDEMPOTENT_REPLAYED_HEADER] = "true"  # a retry: billed once already
            else:
                await self.quota.add_units(principal, model, quantity)
        except Exception as e:
            self.metrics.observe(label, getattr(e, "status", 500), time.perf_counter() - started)
            raise
        finally:
            self.in_flight -= 1
        self.metrics.observe(label, 200, time.perf_counter() - started)
        return Reply(body, headers, principal)

    # ----------------------------------------------------------------------- steps 1 and 2

    def _lookup_sync(
        self, token: str | None, name: str, version: str | None, caller: Caller = None
    ) -> tuple[Caller, ResolvedModel | None, bool]:
        # A plain Core connection: the ORM's session machinery would cost more than the queries.
        with self._read_bind.connect() as conn:
            if caller is None and token is not None:
                caller = authenticate_token(conn, token)
            model = resolve_model(conn, self.cache, name, version)
            granted = find_grant(conn, caller, model)
        return caller, model, granted

    async def lookup(
        self, token: str | None, name: str, version: str | None
    ) -> tuple[Caller, ResolvedModel | None, bool]:
        """Steps 1 and 2 (and whether a grant is in force), in one short read-only connection
        when the resolution cache and the key reader cannot answer them alone."""
        caller: Caller = None
        if token is None:  # anonymous: resolution alone, often from the cache
            hit = self.cache.get((name, version))
            if hit is not MISSING:
                return None, hit, False
        elif self.keys is not None:
            # The common call: the key read on the loop, the model from the cache, no grant.
            key_id, secret = parse_token(token)
            caller = check_key(await self.keys.read(key_id), key_id, secret, utcnow())
            hit = self.cache.get((name, version))
            if hit is not MISSING and not needs_grant(caller, hit):
                self._stamp_last_used(caller)
                return caller, hit, False
        if self.inline_lookup:
            result = self._lookup_sync(token, name, version, caller)
        else:
            result = await asyncio.to_thread(self._lookup_sync, token, name, version, caller)
        if result[0] is not None:
            self._stamp_last_used(result[0])
        return result

    def _stamp_last_used(self, principal: Principal) -> None:
        """Record when a key was last used, at most once per resolution period per process,
        in the background: the write never holds up a call (nor waits on SQLite's lock)."""
        if principal.key_id is None:
            return
        now = time.monotonic()
        last = self._stamped.get(principal.key_id)
        if last is not None and now - last < self.last_used_resolution.total_seconds():
            return
        self._stamped[principal.key_id] = now
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self._stamp_sync, principal.key_id)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _stamp_sync(self, key_id: str) -> None:
        try:
            with self.write_factory() as session, session.begin():
                touch_key(session, key_id)
        except OperationalError:  # busy: the next period's call stamps it
            self._stamped.pop(key_id, None)

    async def close(self) -> None:
        """Release the key reader's connections."""
        if self.keys is not None:
            await self.keys.close()

    # ----------------------------------------------------------------------- metadata, ready

    async def visible(self, token: str | None, name: str, version: str | None) -> ResolvedModel:
        caller, model, _ = await self.lookup(token, name, version)
        return visible_version(caller, model, name, version)

    async def model_metadata(
        self, token: str | None, name: str, version: str | None
    ) -> Mapping[str, Any]:
        """``GET /v2/models/{name}[/versions/{v}]``: what the caller may see of the model."""
        model = await self.visible(token, name, version)
        manifest = model.manifest
        assert manifest is not None
        return model_metadata(
            name,
            [str(v) for v in model.versions],
            PLATFORMS.get(manifest.format, manifest.format),
            manifest.inputs,
            manifest.outputs,
        )

    async def model_ready(self, token: str | None, name: str, version: str | None) -> bool:
        """Whether a visible model version can serve now (registers it; loading stays lazy)."""
        model = await self.visible(token, name, version)
        try:
            key = await self.serving.ensure_registered(model)
        except ModelUnavailableError:
            return False
        except Exception as e:  # a missing or corrupt blob
            raise UnavailableError(f"model '{name}' is not available") from e
        return self.serving.runtime.is_ready(key)

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": self.version, "extensions": list(EXTENSIONS)}
