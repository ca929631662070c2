"""``citybrain seed``, ``serve`` and ``demo``: fill the database and run the platform."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from marketplace.cli._common import (
    console,
    dispose_engines,
    redact,
    run_in_transaction,
    settings,
)
from marketplace.config import Settings

# The first generation of the garbage collector in `citybrain serve` (Python's default: 700).
_GC_GEN0_THRESHOLD = 10_000


def seed(ctx: typer.Context) -> None:
    """Seed the demo city (idempotent; new keys are printed once)."""
    _seed(ctx, settings(ctx))


def _seed(ctx: typer.Context, cfg: Settings, *, city_models: bool = False) -> None:
    from marketplace.seed import seed_demo_city
    from model_store import BlobStore

    assert cfg.model_store.artifact_url is not None
    blobs = BlobStore(cfg.model_store.artifact_url)
    result = run_in_transaction(
        ctx,
        lambda session: seed_demo_city(
            session, blobs=blobs, city_models=city_models, data=cfg.data
        ),
        cfg,
    )
    if result.keys:
        # Plain lines, never a table: a truncated key could not be copied, and it is shown once.
        console.print("[bold]Demo city API keys — shown only now, store them:[/bold]")
        width = max(len(slug) for slug in result.keys)
        for slug, token in result.keys.items():
            print(f"  {slug:<{width}}  {token}")
    else:
        console.print(
            "demo city already seeded (keys were shown on the first run; "
            "make a new one with `citybrain keys create --tenant <slug> --scopes ...`)"
        )
    if result.created_products:
        console.print(f"catalog: added {len(result.created_products)} products")


def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address (env CITYBRAIN_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (env CITYBRAIN_PORT)")] = None,
    migrate: Annotated[bool, typer.Option(help="Apply migrations first")] = True,
    database_url: Annotated[
        str | None, typer.Option(help="Database URL (env CITYBRAIN_DATABASE_URL)")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (env CITYBRAIN_DATA_DIR)")
    ] = None,
) -> None:
    """Serve the API and the inference gateway."""
    cfg = settings(ctx, database_url=database_url, data_dir=data_dir, host=host, port=port)
    _serve(cfg, migrate=migrate)


def _tune_gc() -> None:
    """Keep the cyclic garbage collector off the request path of a long-running server.

    Everything imported and built so far (the web stack, numpy, torch: over a million objects)
    lives as long as the process, yet every full collection walked all of it: pauses of 200 ms
    under metered load, when usage events outlive their calls until flushed. ``gc.freeze`` moves
    them out of the collector's sight, and a larger first generation collects less often what
    each call leaves behind for a while; cycles are still collected.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


def _serve(cfg: Settings, *, migrate: bool) -> None:
    import uvicorn

    from marketplace.api.app import create_app
    from marketplace.migrate import upgrade

    if migrate:
        upgrade(cfg.database_url)
    import logging

    # The platform's own loggers (citybrain.access: one line per request, keys by id only).
    logging.basicConfig(
        level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    console.print(f"serving on http://{cfg.host}:{cfg.port} (database {redact(cfg.database_url)})")
    app = create_app(cfg)
    _tune_gc()
    # httptools and uvloop (uvicorn[standard]): the inference hot path runs on them.
    uvicorn.run(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level=cfg.log_level,
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


def demo(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    serve_: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve after seeding")] = True,
) -> None:
    """Migrate, seed the demo city and serve it on the embedded default."""
    cfg = settings(ctx, host=host, port=port)
    from marketplace.migrate import upgrade

    upgrade(cfg.database_url)
    _seed(ctx, cfg, city_models=True)  # the city's own models too (built once; slow the first time)
    # The server opens its own engine; the seed's would sit idle for as long as it serves.
    dispose_engines(ctx)
    if serve_:
        _serve(cfg, migrate=False)
