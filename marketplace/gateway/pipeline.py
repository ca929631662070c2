"""The inference request path, top to bottom.

Every ``POST /v2/models/{name}[/versions/{v}]/infer`` goes through these steps, in order, in
:meth:`Gateway.infer`:

1. authenticate — the platform's one authentication (:mod:`marketplace.auth.authenticate`):
   an API key against the database on every call, so a revoked key fails on its very next
   request, or a portal user's OIDC bearer token; either is one tenant's principal, billed alike;
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
Steps 1, 2, 4, 5 and 6 each have a trace span of their own (``gateway.auth``, ``.resolve``,
``.quota``, ``.runtime``, ``.meter``) under the request's.
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
from typing import Any

from opentelemetry import trace
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from billing import Meter
from marketplace import __version__
from marketplace.auth.authenticate import Authenticator
from marketplace.config import Settings
from marketplace.context import Caller, Principal
from marketplace.errors import UnavailableError
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
from marketplace.telemetry import span
from model_store.errors import ModelUnavailableError
from model_store.v2 import encode_response, model_metadata

__all__ = ["Gateway", "InferCall", "Reply"]

# Each step's span (gateway.auth, .resolve, .quota, .runtime, .meter) is a child of the
# request's; none are made unless ``marketplace.telemetry`` turned tracing on.
_tracer = trace.get_tracer(__name__)

# Bodies larger than this are decoded in a worker thread, so big JSON never stalls the loop.
_DECODE_INLINE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class InferCall:
    """One inference request, as the HTTP adapter hands it over.

    Attributes:
        name: The model name from the path (a product handle).
        version: The version from the path, or None for the latest.
        credential: The presented API key or bearer token
            (``marketplace.auth.authenticate.presented_credential``), or None.
        body: The raw request body.
        header_length: ``Inference-Header-Content-Length`` (binary tensors), or None for JSON.
        idempotency_key: The client's ``Idempotency-Key``, if any.
        request_id: The platform's request id.
        request_id_chosen: Whether the client chose ``request_id`` (``X-Request-Id``); then it
            cannot name the usage event, which takes a fresh id of its own.
        principal: A caller the platform has authenticated already (the portal's signed-in
            user, whose credential may be a realm token rather than a key); step 1 then takes
            it instead of reading ``token``. Every later step is the same.
    """

    name: str
    version: str | None
    credential: str | None
    body: bytes
    header_length: str | None
    idempotency_key: str | None
    request_id: str
    request_id_chosen: bool = False
    principal: Principal | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """A response body and the headers to send with it (status 200), and who was served."""

    body: bytes
    headers: dict[str, str]
    principal: Principal | None = None


class Gateway:
    """The v2 data plane of the platform: the steps above, plus metadata and readiness.

    Args:
        settings: The process's settings (``billing.metering``: False skips step 6, for
            benchmarks and internal deployments).
        authenticator: Step 1, the platform's one authentication.
        sessions: Read-mostly sessions for step 2 (their engine is the one read).
        cache: The resolution cache (cleared by catalog writes).
        serving: The runtimes and what is registered on them.
        usage: The usage meter.
        quota: Step 4 (default: none).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        authenticator: Authenticator,
        sessions: sessionmaker[Session],
        cache: ResolveCache,
        serving: ServingState,
        usage: Meter,
        quota: Quota | None = None,
    ) -> None:
        self._read_bind: Engine = sessions.kw["bind"]
        # On SQLite (a local file, sub-millisecond reads) a thread hop would cost more than
        # the queries: step 2 runs on the event loop there.
        self.inline_lookup = self._read_bind.dialect.name == "sqlite"
        self.authenticator = authenticator
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
            # 1 (a caller the portal authenticated already is taken as it is)
            caller = call.principal
            if caller is None:
                with span(_tracer, "gateway.auth"):
                    caller = await self.authenticator.authenticate(call.credential)
            # 2
            with span(_tracer, "gateway.resolve"):
                model, granted = await self.lookup(caller, call.name, call.version)
            # 3
            principal = authorize(caller, model, call.name, call.version, granted=granted)
            assert model is not None and model.version is not None
            label = model.label
            # 4
            with span(_tracer, "gateway.quota"):
                await self.quota.check(principal, model)
            # 5
            with span(_tracer, "gateway.runtime"):
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
                with span(_tracer, "gateway.meter"):
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

    # ----------------------------------------------------------------------- step 2

    def _lookup_sync(
        self, caller: Caller, name: str, version: str | None
    ) -> tuple[ResolvedModel | None, bool]:
        # A plain Core connection: the ORM's session machinery would cost more than the queries.
        with self._read_bind.connect() as conn:
            model = resolve_model(conn, self.cache, name, version)
            return model, find_grant(conn, caller, model)

    async def lookup(
        self, caller: Caller, name: str, version: str | None
    ) -> tuple[ResolvedModel | None, bool]:
        """The model ``name`` and ``version`` resolve to, and whether a grant is in force for
        ``caller``: from the resolution cache when no grant is needed (the common call), else
        in one short read-only connection."""
        hit = self.cache.get((name, version))
        if hit is not MISSING and not needs_grant(caller, hit):
            return hit, False
        if self.inline_lookup:
            return self._lookup_sync(caller, name, version)
        return await asyncio.to_thread(self._lookup_sync, caller, name, version)

    # ----------------------------------------------------------------------- metadata, ready

    async def visible(self, caller: Caller, name: str, version: str | None) -> ResolvedModel:
        model, _ = await self.lookup(caller, name, version)
        return visible_version(caller, model, name, version)

    async def model_metadata(
        self, caller: Caller, name: str, version: str | None
    ) -> Mapping[str, Any]:
        """``GET /v2/models/{name}[/versions/{v}]``: what the caller may see of the model."""
        model = await self.visible(caller, name, version)
        manifest = model.manifest
        assert manifest is not None
        return model_metadata(
            name,
            [str(v) for v in model.versions],
            PLATFORMS.get(manifest.format, manifest.format),
            manifest.inputs,
            manifest.outputs,
        )

    async def model_ready(self, caller: Caller, name: str, version: str | None) -> bool:
        """Whether a visible model version can serve now (registers it; loading stays lazy)."""
        model = await self.visible(caller, name, version)
        try:
            key = await self.serving.ensure_registered(model)
        except ModelUnavailableError:
            return False
        except Exception as e:  # a missing or corrupt blob
            raise UnavailableError(f"model '{name}' is not available") from e
        return self.serving.runtime.is_ready(key)

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": self.version, "extensions": list(EXTENSIONS)}
