"""``citybrain seed``, ``serve`` and ``demo``: fill the database and run the platform.

``serve --workers N`` runs N processes behind one port with uvicorn's own supervisor (it binds
the socket once, spawns the workers, and replaces one that dies). Each worker builds its own app
from the same Settings, and claims a numbered usage spool ``<spool_dir>/worker-<k>``: the lowest
number no live process holds, so a dead worker's successor takes its spool over, replays it on
open and flushes what the dead one acknowledged. Spools that no worker of this start will claim
(a larger worker count before, or a single-process run) are flushed before the workers start.
Migrations run once, in the supervisor, before anything forks.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from marketplace.cli._common import (
    DatabaseUrl,
    DataDir,
    console,
    dispose_engines,
    redact,
    run_in_transaction,
    settings,
    worker_spool,
    worker_spools,
)
from marketplace.config import Settings
from marketplace.telemetry import configure_logging

if TYPE_CHECKING:
    from marketplace.api.fastpath import PlatformApp

# The first generation of the garbage collector in `citybrain serve` (Python's default: 700).
_GC_GEN0_THRESHOLD = 10_000
# How the supervisor hands its resolved Settings to the workers it spawns (not a CITYBRAIN_*
# setting: no one sets it by hand).
_WORKER_SETTINGS_ENV = "_CITYBRAIN_SERVE_SETTINGS"
# The claim of a worker spool lives as long as the worker: a lock the kernel drops with it.
_claim_fd: int | None = None

log = logging.getLogger("citybrain")


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
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Processes behind the one port, each with its own usage spool "
            "(<spool-dir>/worker-<k>); share PostgreSQL and a quota Redis between them",
        ),
    ] = 1,
) -> None:
    """Serve the API and the inference gateway."""
    cfg = settings(ctx, database_url=database_url, data_dir=data_dir, host=host, port=port)
    _serve(cfg, migrate=migrate, workers=workers)


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


def _configure_logging(cfg: Settings) -> None:
    # The platform's own loggers (citybrain.access: one line per request, keys by id only).
    configure_logging(cfg.log_level, cfg.telemetry)


def _serve(cfg: Settings, *, migrate: bool, workers: int = 1) -> None:
    import uvicorn

    from marketplace.api.app import create_app
    from marketplace.migrate import upgrade

    if migrate:
        upgrade(cfg.database_url)
    _configure_logging(cfg)
    assert cfg.billing.spool_dir is not None
    drain_unclaimed_spools(cfg, cfg.billing.spool_dir, workers=workers)
    console.print(
        f"serving on http://{cfg.host}:{cfg.port} (database {redact(cfg.database_url)}"
        + (f", {workers} workers)" if workers > 1 else ")")
    )
    # httptools and uvloop (uvicorn[standard]): the inference hot path runs on them.
    options: dict[str, object] = {
        "host": cfg.host,
        "port": cfg.port,
        "log_level": cfg.log_level,
        "access_log": False,
        "loop": "uvloop",
        "http": "httptools",
    }
    if workers == 1:
        app = create_app(cfg)
        _tune_gc()
        uvicorn.run(app, **options)  # type: ignore[arg-type]
        return
    # Spawned workers inherit the environment: each rebuilds these Settings and its own app.
    os.environ[_WORKER_SETTINGS_ENV] = cfg.model_dump_json()
    uvicorn.run(
        "marketplace.cli.server:worker_app",
        factory=True,
        workers=workers,
        **options,  # type: ignore[arg-type]
    )


def claim_worker_spool(base: Path) -> Path:
    """Claim the lowest-numbered worker spool under ``base`` that no live process holds.

    The claim is an exclusive ``flock`` on ``base/worker-<k>.claim``, held until this process
    ends (the kernel drops it when the process dies, ``kill -9`` included), so the successor of
    a dead worker finds its number free and takes over its spool, backlog and all. The spool's
    own ``LOCK`` inside the directory is taken when the meter opens it; the claim only decides
    which directory that is, without two workers racing for the same one.
    """
    global _claim_fd
    base.mkdir(parents=True, exist_ok=True)
    k = 0
    while True:
        fd = os.open(base / f"worker-{k}.claim", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            k += 1
            continue
        if _claim_fd is not None:
            os.close(_claim_fd)
        _claim_fd = fd
        return worker_spool(base, k)


def drain_unclaimed_spools(cfg: Settings, base: Path, *, workers: int) -> None:
    """Flush the spools this start's workers will not open, so no acknowledged event waits on
    a worker number that is not coming back: ``worker-<k>`` for ``k >= workers`` (or every one,
    in a single-process start) and, under several workers, a single-process spool in ``base``
    itself. A spool another live process holds is left to it."""
    from billing import Meter
    from billing.errors import SpoolLockedError
    from billing.spool import inspect_spool
    from marketplace.db import make_engine

    orphans = [
        d
        for d in worker_spools(base)
        if workers == 1 or int(d.name.removeprefix("worker-")) >= workers
    ]
    if workers > 1 and inspect_spool(base).segments:
        orphans.insert(0, base)
    orphans = [d for d in orphans if inspect_spool(d).pending_events]
    if not orphans:
        return
    engine = make_engine(cfg.billing.database_url or cfg.database_url)
    try:
        for directory in orphans:
            try:
                meter = Meter.create(engine, directory)
            except SpoolLockedError:
                log.info("usage spool %s is held by a live process; left to it", directory)
                continue
            try:
                delivered = meter.flusher.flush_once()
            except Exception as exc:  # the database: the events stay, the next start retries
                log.warning("usage spool %s left behind could not be flushed: %s", directory, exc)
                continue
            finally:
                meter.stop(flush=False)
            log.info("usage spool %s: delivered %d events left behind", directory, delivered)
    finally:
        engine.dispose()


def worker_app() -> PlatformApp:
    """The app factory each ``serve --workers N`` process runs: the supervisor's Settings, and
    a usage spool of its own (see :func:`claim_worker_spool`)."""
    from marketplace.api.app import create_app

    cfg = Settings.model_validate(json.loads(os.environ[_WORKER_SETTINGS_ENV]))
    _configure_logging(cfg)
    assert cfg.billing.spool_dir is not None
    cfg.billing.spool_dir = claim_worker_spool(cfg.billing.spool_dir)
    log.info("worker %d: usage spool %s", os.getpid(), cfg.billing.spool_dir)
    app = create_app(cfg)
    _tune_gc()
    return app


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
