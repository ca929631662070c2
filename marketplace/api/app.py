"""The application factory: one FastAPI app per Settings."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from billing import Meter
from marketplace import __version__
from marketplace.api.deps import authenticate_principal
from marketplace.api.errors import install_error_handlers
from marketplace.api.fastpath import PlatformApp
from marketplace.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from marketplace.api.routes import (
    access,
    audit,
    billing,
    catalog,
    ckan,
    data,
    dcat,
    federation,
    keys,
    models,
    portal,
    quotas,
    tenants,
    usage,
    v2,
)
from marketplace.api.routes.v2_openapi import HealthPublic
from marketplace.auth.authenticate import Authenticator
from marketplace.catalog.cache import invalidate_on_catalog_writes
from marketplace.catalog.trust import trust_policy
from marketplace.config import Settings
from marketplace.constants import API_PREFIX
from marketplace.context import current_request_id
from marketplace.data.engine import make_engine as make_data_engine
from marketplace.data.pipeline import DataPlane
from marketplace.db import make_engine, make_session_factory
from marketplace.errors import ForbiddenError
from marketplace.federation.forward import Forwarder
from marketplace.federation.pull import pull_forever
from marketplace.federation.signing import ReplayGuard
from marketplace.gateway.constants import V2_PREFIX
from marketplace.gateway.metrics import GatewayMetrics
from marketplace.gateway.pipeline import Gateway
from marketplace.gateway.quota import LimitQuota
from marketplace.gateway.resolve import WATCHED, ResolveCache
from marketplace.gateway.serving import RUNTIME_SETTINGS, ServingState
from marketplace.health import HealthChecker, readiness_of
from marketplace.telemetry import configure_tracing, flush_tracing
from model_store import BlobStore, EmbeddedRuntime, ModelManifest, Runtime
from model_store.runtimes.registry import RuntimeFactory, Runtimes
from model_store.sandbox import Isolation, SandboxConfig, TrustPolicy

log = logging.getLogger("citybrain")

_UPLOAD_PATH = re.compile(rf"^{re.escape(API_PREFIX)}/products/[^/]+/versions/model$")
_DATA_UPLOAD_PATH = re.compile(rf"^{re.escape(API_PREFIX)}/products/[^/]+/versions/data$")


def sandbox_config(settings: Settings) -> SandboxConfig:
    """The sandbox limits for tenant code (serving and upload validation alike)."""
    return SandboxConfig(**settings.model_store.sandbox.model_dump())


def serving_runtimes(
    settings: Settings, metrics: GatewayMetrics, trusted: TrustPolicy | None = None
) -> Runtimes:
    """The runtimes the gateway serves with, by manifest ``runtime``: embedded always; Triton
    when managed or given a URL; KServe when a kubeconfig (or in-cluster) is configured.

    Tenant code (python-format models) runs in sandbox workers unless ``trusted`` says yes
    for its key; Triton, which cannot confine it, refuses it unless trusted (or
    ``triton.run_untrusted_code``). KServe runs each model in a pod of its own, which holds
    none of the platform's secrets.

    Triton and KServe are made on the first model that needs them (a managed tritonserver
    starts then, or at startup with ``triton.enabled``); ``Runtimes.close`` stops them.
    """
    embedded = EmbeddedRuntime(
        memory_budget_bytes=settings.model_store.memory_budget_bytes,
        max_loaded_models=settings.model_store.max_loaded_models,
        isolation=Isolation(sandbox_config(settings), trusted),
        observer=metrics,
        inline_below_s=settings.model_store.inline_predict_below_ms / 1000.0,
    )
    backends: dict[str, Runtime | RuntimeFactory] = {}
    if settings.triton.configured:
        gate = _anything if settings.triton.run_untrusted_code else trusted or _nothing
        backends["triton"] = lambda: _gated(_triton_runtime(settings), gate)
    if settings.kserve.configured:
        backends["kserve"] = lambda: _kserve_runtime(settings)
    return Runtimes(embedded, backends, hints=RUNTIME_SETTINGS)


def _anything(_key: str) -> bool:
    return True


def _nothing(_key: str) -> bool:
    return False


def _gated(runtime: Runtime, trusted: TrustPolicy) -> Runtime:
    from model_store.sandbox.gate import TenantCodeGate

    return TenantCodeGate(runtime, trusted, name="triton")


async def start_triton(runtimes: Runtimes) -> None:
    """Start (managed) or connect to (external) Triton now rather than on first use."""
    from model_store.runtimes.triton import TritonRuntime
    from model_store.sandbox.gate import TenantCodeGate

    backend = runtimes.get("triton")
    if isinstance(backend, TenantCodeGate):
        backend = backend.inner
    assert isinstance(backend, TritonRuntime)
    await backend.start()
    log.info("Triton runtime started at %s", backend.repository)


def _triton_runtime(settings: Settings) -> Runtime:
    # Imported on first use: the Triton client stack is not needed by embedded-only deployments.
    from model_store.runtimes.triton import TritonRuntime
    from model_store.triton.server import ManagedTritonServer

    cfg = settings.triton
    options: dict[str, Any] = {
        "probe_interval_s": cfg.probe_interval_s,
        "infer_timeout_s": cfg.infer_timeout_s,
        "load_timeout_s": cfg.load_timeout_s,
    }
    if cfg.url is not None:
        return TritonRuntime(url=cfg.url, repository=cfg.repository_dir, **options)
    folder = cfg.data_dir or settings.data_dir / "triton"
    # ManagedTritonServer keeps its files under <base>/triton.
    base = folder.parent if folder.name == "triton" else folder
    server = ManagedTritonServer(
        base,
        repository=cfg.repository_dir or base / "triton" / "models",
        http_port=cfg.http_port,
        grpc_port=cfg.grpc_port,
    )
    return TritonRuntime(server, own_server=True, **options)


def _kserve_runtime(settings: Settings) -> Runtime:
    from model_store.runtimes.kserve import (
        KServeClient,
        KServeRuntime,
        inference_service_name,
    )
    from model_store.triton.repository import triton_model_name

    cfg = settings.kserve
    client = KServeClient(
        kubeconfig=cfg.kubeconfig,
        context=cfg.context,
        namespace=cfg.namespace,
        in_cluster=cfg.in_cluster,
    )

    def storage_uri(key: str, manifest: ModelManifest) -> str:
        return cfg.storage_uri.format(
            name=inference_service_name(key), model=triton_model_name(key)
        )

    return KServeRuntime(
        client,
        storage_uri=storage_uri,
        render_options={"predictor": cfg.predictor, "python_image": cfg.predictor_image},
        export=cfg.export,
        ready_timeout_s=cfg.ready_timeout_s,
        poll_s=cfg.poll_s,
        infer_timeout_s=cfg.infer_timeout_s,
        prefer_cluster_local=cfg.prefer_cluster_local,
    )


def create_app(settings: Settings | None = None) -> PlatformApp:
    settings = settings or Settings()
    configure_tracing(settings.telemetry)
    engine = make_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    # The gateway's lookups only read (but for a best-effort last-used stamp).
    read_mostly = make_session_factory(engine, read_mostly=True)
    registry = CollectorRegistry(auto_describe=True)
    metrics = GatewayMetrics(registry)
    cache = ResolveCache(settings.gateway.resolve_ttl_s, settings.gateway.resolve_cache_size)
    invalidate_on_catalog_writes(session_factory, cache, WATCHED)
    assert settings.model_store.artifact_url is not None
    blobs = BlobStore(settings.model_store.artifact_url)
    authenticator = Authenticator.from_settings(settings, reads=read_mostly, writes=session_factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One spool directory per process: the spool locks it.
        assert settings.billing.spool_dir is not None
        usage_url = settings.billing.database_url or settings.database_url
        usage_engine = (
            engine
            if usage_url == settings.database_url
            else make_engine(usage_url, connect_args={"connect_timeout": 5})
            if not usage_url.startswith("sqlite")
            else make_engine(usage_url)
        )
        usage = Meter.create(
            usage_engine,
            settings.billing.spool_dir,
            registry=registry,
            batch_size=settings.billing.flush_batch_size,
            interval_s=settings.billing.flush_interval_s,
            idempotency_window_s=settings.billing.idempotency_window_s,
            group_commit_wait_s=settings.billing.group_commit_wait_ms / 1000.0,
        )
        # Embedded always; Triton and KServe as configured (made on first use of such a model).
        runtime = serving_runtimes(settings, metrics, trust_policy(session_factory))
        if settings.triton.enabled:
            await start_triton(runtime)
        usage.start()
        authenticator.open_key_reader()  # API keys read on the event loop from now on
        quota = LimitQuota.from_settings(settings.gateway, read_mostly)
        # Data reads share the meter and the quota buckets with inference.
        app.state.data = DataPlane(
            settings=settings.data,
            session_factory=read_mostly,
            write_factory=session_factory,
            engine=make_data_engine(settings.data, blobs),
            meter=usage,
            quota=quota,
            metering=settings.billing.metering,
        )
        app.state.gateway = Gateway(
            settings,
            authenticator=authenticator,
            sessions=read_mostly,
            cache=cache,
            serving=ServingState(runtime, blobs, metrics),
            usage=usage,
            quota=quota,
        )
        federation = settings.federation
        app.state.forwarder = Forwarder(federation, read_mostly) if federation.joined else None
        puller = (
            asyncio.get_running_loop().create_task(pull_forever(session_factory, federation))
            if federation.joined and federation.pull_interval_seconds > 0
            else None
        )
        app.state.health = HealthChecker(
            engine=engine,
            meter=usage,
            runtimes=runtime,
            triton=settings.triton,
            kserve=settings.kserve,
            timeout_s=settings.ready_timeout_s,
        )
        try:
            yield
        finally:
            health, app.state.health = app.state.health, None
            health.close()
            if puller is not None:
                puller.cancel()
            forwarder, app.state.forwarder = app.state.forwarder, None
            if forwarder is not None:
                await forwarder.close()
            app.state.gateway = None
            plane, app.state.data = app.state.data, None
            await asyncio.to_thread(plane.close)
            await authenticator.close()
            await runtime.close()
            await asyncio.to_thread(flush_tracing)
            await asyncio.to_thread(usage.stop)
            usage_engine.dispose()
            engine.dispose()

    app = PlatformApp(
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
    app.state.sandbox = sandbox_config(settings)
    app.state.authenticator = authenticator
    app.state.resolve_cache = cache
    app.state.metrics_registry = registry
    app.state.gateway = None
    app.state.data = None
    app.state.health = None
    app.state.forwarder = None  # a joined hub's (federation.forward), set at startup
    # City side: nonces of hubs' signed caller headers already seen (federation.signing).
    app.state.federation_guard = ReplayGuard(2 * settings.federation.max_skew_s)

    install_error_handlers(app)
    # The inference routes first: routing tries routes in order, and /v2 is the hot path.
    app.include_router(v2.router)
    for module in (
        tenants,
        keys,
        catalog,
        models,
        data,
        audit,
        access,
        billing,
        usage,
        quotas,
        dcat,
        federation,
    ):
        app.include_router(module.router, prefix=API_PREFIX)
    # CKAN's Action API lives at CKAN's own paths, where its clients look for it.
    app.include_router(ckan.router)
    portal.install(app, settings)  # the web portal at /

    @app.get(
        f"{API_PREFIX}/health",
        tags=["health"],
        response_class=JSONResponse,
        responses={
            200: {"model": HealthPublic},
            503: {"model": HealthPublic, "description": "Not ready: what is down"},
        },
    )
    async def health(request: Request) -> JSONResponse:
        """Readiness of the API: the database, the usage spool and each configured runtime;
        503 naming what is down."""
        readiness = await readiness_of(request.app.state.health)
        doc = readiness.document(current_request_id())
        return JSONResponse(
            {"status": "ok" if readiness.ready else "unavailable", "version": __version__, **doc},
            status_code=200 if readiness.ready else 503,
        )

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus metrics (the operator's keys only, unless gateway.metrics_public)."""
        if not settings.gateway.metrics_public:
            principal = await authenticate_principal(request)
            if not principal.is_operator:
                raise ForbiddenError("/metrics is for the platform operator")
        body = await asyncio.to_thread(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def body_limit(method: str, path: str) -> int:
        if path.startswith(V2_PREFIX):
            return settings.gateway.max_infer_bytes
        if _UPLOAD_PATH.match(path):
            return settings.model_store.max_upload_bytes
        if _DATA_UPLOAD_PATH.match(path):
            # The multipart envelope (schema, boundaries) rides on top of the file itself.
            return settings.data.max_upload_bytes + settings.max_body_bytes
        return settings.max_body_bytes

    app.infer_limit_bytes = settings.gateway.max_infer_bytes  # the fast path's body limit
    app.add_middleware(BodyLimitMiddleware, limit_for=body_limit)
    app.add_middleware(RequestIdMiddleware)
    return app
