"""The application factory: one FastAPI app per Settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from marketplace import __version__
from marketplace.api.errors import install_error_handlers
from marketplace.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from marketplace.api.routes import audit, catalog, keys, tenants
from marketplace.config import Settings
from marketplace.constants import API_PREFIX
from marketplace.db import make_engine, make_session_factory

log = logging.getLogger("citybrain")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    engine = make_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
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
    app.state.session_factory = make_session_factory(engine)

    install_error_handlers(app)
    for module in (tenants, keys, catalog, audit):
        app.include_router(module.router, prefix=API_PREFIX)

    @app.get(f"{API_PREFIX}/health", tags=["health"])
    def health() -> dict[str, str]:
        """Liveness of the API."""
        return {"status": "ok", "version": __version__}

    def body_limit(method: str, path: str) -> int:
        return settings.max_body_bytes

    app.add_middleware(BodyLimitMiddleware, limit_for=body_limit)
    app.add_middleware(RequestIdMiddleware)
    return app
