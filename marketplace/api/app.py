"""The application factory: one FastAPI app per Settings."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from billing import Meter
from marketplace import __version__
from marketplace.api.errors import install_error_handlers
from marketplace.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from marketplace.api.routes import (
    access,
    audit,
    billing,
    catalog,
    keys,
    models,
    quotas,
    tenants,
    usage,
    v2,
)
from marketplace.config import Settings
from marketplace.constants import API_KEY_HEADER, API_PREFIX
from marketplace.db import make_engine, make_session_factory
from marketplace.errors import ForbiddenError, UnauthenticatedError
from marketplace.gateway.constants import V2_PREFIX
from marketplace.gateway.metrics import GatewayMetrics
from marketplace.gateway.pipeline import Gateway, authenticate, presented_token
from marketplace.gateway.quota import LimitQuota
from marketplace.gateway.resolve import ResolveCache, invalidate_on_catalog_writes
from model_store import BlobStore, EmbeddedRuntime

log = logging.getLogger("citybrain")

_UPLOAD_PATH = re.compile(rf"^{re.escape(API_PREFIX)}/products/[^/]+/versions/model$")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    engine = make_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    registry = CollectorRegistry(auto_describe=True)
    metrics = GatewayMetrics(registry)
    cache = ResolveCache(settings.gateway.resolve_ttl_s, settings.gateway.resolve_cache_size)
    invalidate_on_catalog_writes(session_factory, cache)
    assert settings.model_store.artifact_url is not None
    blobs = BlobStore(settings.model_store.artifact_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One spool directory per process: the spool locks it.
        assert settings.billing.spool_dir is not None
        usage = Meter.create(
            engine,
            settings.billing.spool_dir,
            registry=registry,
            batch_size=settings.billing.flush_batch_size,
            interval_s=settings.billing.flush_interval_s,
            idempotency_window_s=settings.billing.idempotency_window_s,
        )
        runtime = EmbeddedRuntime(
            memory_budget_bytes=settings.model_store.memory_budget_bytes,
            max_loaded_models=settings.model_store.max_loaded_models,
            observer=metrics,
        )
        usage.start()
        app.state.gateway = Gateway(
            session_factory=session_factory,
            cache=cache,
            runtime=runtime,
            blobs=blobs,
            usage=usage,
            metrics=metrics,
            quota=LimitQuota(
                session_factory,
                redis_url=settings.gateway.quota_redis_url,
                cache_s=settings.gateway.quota_cache_s,
                default_key_rps=settings.gateway.default_key_rps,
            ),
            last_used_resolution=timedelta(seconds=settings.key_last_used_resolution_s),
            version=__version__,
        )
        try:
            yield
        finally:
            app.state.gateway = None
            await runtime.close()
            await asyncio.to_thread(usage.stop)
            engine.dispose()

    app = FastAPI(
        title="CityBrain Open Platform",
        version=__version__,
        description="One catalog of the city's data products and AI models, served with "
        "metered access, tenant isolation and sensitivity tiers.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory
    app.state.blobs = blobs
    app.state.resolve_cache = cache
    app.state.metrics_registry = registry
    app.state.gateway = None

    install_error_handlers(app)
    for module in (tenants, keys, catalog, models, audit, access, billing, usage, quotas):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(v2.router)

    @app.get(f"{API_PREFIX}/health", tags=["health"])
    def health() -> dict[str, str]:
        """Liveness of the API."""
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus metrics (the operator's keys only, unless gateway.metrics_public)."""
        if not settings.gateway.metrics_public:
            token = presented_token(
                request.headers.get("authorization"), request.headers.get(API_KEY_HEADER)
            )
            if token is None:
                raise UnauthenticatedError("an operator API key is required for /metrics")

            def who() -> object:
                with session_factory() as session:
                    return authenticate(session, token)

            principal = await asyncio.to_thread(who)
            request.state.principal = principal
            if not getattr(principal, "is_operator", False):
                raise ForbiddenError("/metrics is for the platform operator")
        body = await asyncio.to_thread(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def body_limit(method: str, path: str) -> int:
        if path.startswith(V2_PREFIX):
            return settings.gateway.max_infer_bytes
        if _UPLOAD_PATH.match(path):
            return settings.model_store.max_upload_bytes
        return settings.max_body_bytes

    app.add_middleware(BodyLimitMiddleware, limit_for=body_limit)
    app.add_middleware(RequestIdMiddleware)
    return app
