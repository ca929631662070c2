"""``citybrain``: run the platform and administer it (keys, tenants, audit) from the shell.

Administrative commands work directly against the configured database, as the operator.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, ClassVar

import typer
from rich.console import Console
from rich.table import Table

from marketplace.cli_access import access_app
from marketplace.cli_billing import billing_app
from marketplace.cli_datasets import datasets_app
from marketplace.cli_usage import usage_app
from marketplace.config import Settings

app = typer.Typer(
    no_args_is_help=True, help="CityBrain Open Platform", pretty_exceptions_enable=False
)
keys_app = typer.Typer(no_args_is_help=True, help="Create, list, rotate and revoke API keys.")
db_app = typer.Typer(no_args_is_help=True, help="Database migrations.")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")
tenants_app = typer.Typer(no_args_is_help=True, help="Tenants of the platform.")
models_app = typer.Typer(
    no_args_is_help=True, help="Model versions (artifact + manifest) through the platform's API."
)
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.add_typer(tenants_app, name="tenants")
app.add_typer(models_app, name="models")
app.add_typer(access_app, name="access")
app.add_typer(billing_app, name="billing")
app.add_typer(usage_app, name="usage")
app.add_typer(datasets_app, name="datasets")

console = Console()
err = Console(stderr=True)
CLI_ACTOR = "cli"
# The first generation of the garbage collector in `citybrain serve` (Python's default: 700).
_GC_GEN0_THRESHOLD = 10_000


class State:
    overrides: ClassVar[dict[str, Any]] = {}


def settings() -> Settings:
    return Settings(**State.overrides)


@app.callback()
def main(
    database_url: Annotated[
        str | None, typer.Option(help="Database URL (env CITYBRAIN_DATABASE_URL)")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (env CITYBRAIN_DATA_DIR)")
    ] = None,
) -> None:
    State.overrides = {}
    if database_url:
        State.overrides["database_url"] = database_url
    if data_dir:
        State.overrides["data_dir"] = data_dir


def _fail(message: str, hint: str | None = None) -> None:
    err.print(f"[red]error:[/red] {message}")
    if hint:
        err.print(f"hint: {hint}")
    raise typer.Exit(1)


def _session_factory(cfg: Settings) -> Any:
    from marketplace.db import make_engine, make_session_factory

    return make_session_factory(make_engine(cfg.database_url))


def _run(cfg: Settings, fn: Any) -> Any:
    """Run fn(session) in one transaction; domain errors become a clear message and exit 1."""
    from marketplace.db import transaction
    from marketplace.errors import CityBrainError

    try:
        with transaction(_session_factory(cfg)) as session:
            return fn(session)
    except CityBrainError as e:
        _fail(e.message)
    except Exception as e:
        from sqlalchemy.exc import OperationalError, ProgrammingError

        if isinstance(e, OperationalError | ProgrammingError):
            _fail(f"database error: {e.orig}", "run `citybrain db upgrade` first")
        raise


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all migrations to the configured database."""
    from marketplace.migrate import upgrade

    cfg = settings()
    upgrade(cfg.database_url)
    console.print(f"database at head: {_redact(cfg.database_url)}")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command()
def seed() -> None:
    """Seed the demo city (idempotent; new keys are printed once)."""
    _seed(settings())


def _seed(cfg: Settings, *, city_models: bool = False) -> None:
    from marketplace.seed import seed_demo_city
    from model_store import BlobStore

    assert cfg.model_store.artifact_url is not None
    blobs = BlobStore(cfg.model_store.artifact_url)
    result = _run(
        cfg, lambda session: seed_demo_city(session, blobs=blobs, city_models=city_models)
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


@app.command()
def serve(
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
    if database_url:
        State.overrides["database_url"] = database_url
    if data_dir:
        State.overrides["data_dir"] = data_dir
    if host:
        State.overrides["host"] = host
    if port:
        State.overrides["port"] = port
    cfg = settings()
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
    console.print(f"serving on http://{cfg.host}:{cfg.port} (database {_redact(cfg.database_url)})")
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


@app.command()
def demo(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    serve_: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve after seeding")] = True,
) -> None:
    """Migrate, seed the demo city and serve it on the embedded default."""
    if host:
        State.overrides["host"] = host
    if port:
        State.overrides["port"] = port
    cfg = settings()
    from marketplace.migrate import upgrade

    upgrade(cfg.database_url)
    _seed(cfg, city_models=True)  # the city's own models too (built once; slow the first time)
    if serve_:
        _serve(cfg, migrate=False)


@tenants_app.command("list")
def tenants_list() -> None:
    """List tenants."""
    from marketplace.tenants.service import list_tenants

    rows = _run(
        settings(), lambda s: [(t.slug, t.name, t.kind, t.domain or "") for t in list_tenants(s)]
    )
    table = Table("slug", "name", "kind", "domain")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant slug")],
    scopes: Annotated[str, typer.Option(help="Comma-separated, e.g. catalog:read,infer")],
    expires_in: Annotated[str | None, typer.Option(help="e.g. 30d, 12h, 2w")] = None,
    name: Annotated[str, typer.Option(help="A label for the key")] = "",
) -> None:
    """Create a key; it is printed once and stored only as a hash."""
    from marketplace.keys.service import create_key, parse_duration
    from marketplace.tenants.service import get_tenant_by_slug

    def go(session: Any) -> tuple[str, str]:
        issued = create_key(
            session,
            tenant=get_tenant_by_slug(session, tenant),
            scopes=scopes.split(","),
            name=name,
            expires_in=parse_duration(expires_in) if expires_in else None,
            actor=CLI_ACTOR,
        )
        return issued.key.id, issued.token

    key_id, token = _run(settings(), go)
    err.print(f"created key {key_id} for {tenant}; it is shown only now:")
    print(token)


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False,
) -> None:
    """List keys by prefix (never the secret)."""
    from marketplace.keys.service import key_status, list_keys
    from marketplace.tenants.service import get_tenant_by_slug

    def go(session: Any) -> list[dict[str, Any]]:
        tid = get_tenant_by_slug(session, tenant).id if tenant else None
        return [
            {
                "id": k.id,
                "prefix": f"cbk_{k.id}_",
                "tenant": k.tenant.slug,
                "name": k.name,
                "scopes": k.scopes,
                "status": key_status(k),
                "expires_at": k.expires_at.isoformat() if k.expires_at else None,
                "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
            }
            for k in list_keys(session, tenant_id=tid)
        ]

    rows = _run(settings(), go)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("id", "prefix", "tenant", "scopes", "status", "expires", "last used")
    for r in rows:
        table.add_row(
            r["id"],
            r["prefix"],
            r["tenant"],
            ",".join(r["scopes"]),
            r["status"],
            r["expires_at"] or "-",
            r["last_used_at"] or "-",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="Key id (the part after cbk_)")],
) -> None:
    """Revoke a key; it stops working at once."""
    from marketplace.keys.service import get_key, revoke_key

    _run(settings(), lambda s: revoke_key(s, get_key(s, key_id, tenant_id=None), actor=CLI_ACTOR))
    console.print(f"revoked key {key_id}")


@keys_app.command("rotate")
def keys_rotate(
    key_id: Annotated[str, typer.Argument(help="Key id (the part after cbk_)")],
) -> None:
    """Issue a new secret; the old one keeps working for the grace period."""
    from datetime import timedelta

    from marketplace.keys.service import get_key, rotate_key

    cfg = settings()

    def go(session: Any) -> tuple[str, str]:
        issued = rotate_key(
            session,
            get_key(session, key_id, tenant_id=None),
            grace=timedelta(seconds=cfg.key_rotation_grace_s),
            actor=CLI_ACTOR,
        )
        return issued.token, str(issued.key.previous_expires_at)

    token, until = _run(cfg, go)
    err.print(
        f"rotated key {key_id}; the previous secret works until {until}. New key, shown once:"
    )
    print(token)


def _http_client(url: str, api_key: str | None) -> Any:
    """The HTTP client the ``models`` commands talk to the platform with."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(30.0, read=600.0))


def _api_error(r: Any) -> str:
    try:
        body = r.json()
        return f"{r.status_code} {body.get('code', '')}: {body.get('error', r.text)}"
    except ValueError:
        return f"{r.status_code}: {r.text[:200]}"


ApiUrl = Annotated[
    str, typer.Option("--url", envvar="CITYBRAIN_API_URL", help="The platform's base URL")
]
ApiKey = Annotated[
    str | None, typer.Option("--api-key", envvar="CITYBRAIN_API_KEY", help="An API key")
]


def push_model(
    client: Any,
    handle: str,
    artifact: Path,
    manifest_text: str,
    *,
    notes: str = "",
    progress: Any = None,
) -> Any:
    """Hash the artifact, then stream it with its manifest; returns the HTTP response."""
    import hashlib

    from marketplace.gateway.constants import ARTIFACT_DIGEST_HEADER, MODEL_MANIFEST_HEADER

    size = artifact.stat().st_size
    chunk_size = 1 << 20
    hasher = hashlib.sha256()
    task = progress.add_task("hashing", total=size) if progress else None
    with artifact.open("rb") as f:
        while chunk := f.read(chunk_size):
            hasher.update(chunk)
            if progress:
                progress.advance(task, len(chunk))
    upload = progress.add_task("uploading", total=size) if progress else None

    def body() -> Any:
        with artifact.open("rb") as f:
            while chunk := f.read(chunk_size):
                yield chunk
                if progress:
                    progress.advance(upload, len(chunk))

    # ASCII JSON: a header carries Latin-1 only, and model cards may be in any language.
    manifest_header = json.dumps(json.loads(manifest_text), separators=(",", ":"))
    return client.post(
        f"/api/v1/products/{handle}/versions/model",
        content=body(),
        params={"notes": notes} if notes else None,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
            MODEL_MANIFEST_HEADER: manifest_header,
            ARTIFACT_DIGEST_HEADER: f"sha256:{hasher.hexdigest()}",
        },
    )


@models_app.command("push")
def models_push(
    handle: Annotated[str, typer.Argument(help="The model product, <tenant-slug>.<name>")],
    artifact: Annotated[
        Path, typer.Argument(help="The artifact file", exists=True, dir_okay=False)
    ],
    manifest: Annotated[
        Path, typer.Option(help="The manifest (JSON file)", exists=True, dir_okay=False)
    ],
    url: ApiUrl = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    notes: Annotated[str, typer.Option(help="Release notes of the version")] = "",
) -> None:
    """Upload a model version (artifact + manifest) with a progress bar."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    if not api_key:
        _fail("an API key is needed", "pass --api-key or set CITYBRAIN_API_KEY")
    try:
        manifest_text = manifest.read_text(encoding="utf-8")
        json.loads(manifest_text)
    except ValueError as e:
        _fail(f"{manifest} is not JSON: {e}")
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    with _http_client(url, api_key) as client, Progress(*columns, console=err) as progress:
        r = push_model(client, handle, artifact, manifest_text, notes=notes, progress=progress)
    if r.status_code != 201:
        _fail(
            f"upload refused: {_api_error(r)}",
            "check the manifest against the artifact (`citybrain models push --help`)",
        )
    v = r.json()
    console.print(f"{handle} version {v['version']} stored: {v['artifact_digest']}", soft_wrap=True)


@models_app.command("pull")
def models_pull(
    handle: Annotated[str, typer.Argument(help="The model product, <tenant-slug>.<name>")],
    version: Annotated[int, typer.Argument(help="The version")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the artifact")],
    url: ApiUrl = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
) -> None:
    """Download a model version's artifact (checked against its digest)."""
    import hashlib

    from marketplace.gateway.constants import ARTIFACT_DIGEST_HEADER

    hasher = hashlib.sha256()
    tmp = output.with_name(output.name + ".part")
    with (
        _http_client(url, api_key) as client,
        client.stream("GET", f"/api/v1/products/{handle}/versions/{version}/artifact") as r,
    ):
        if r.status_code != 200:
            r.read()
            _fail(f"download refused: {_api_error(r)}")
        with tmp.open("wb") as f:
            for chunk in r.iter_bytes():
                hasher.update(chunk)
                f.write(chunk)
        digest = r.headers.get(ARTIFACT_DIGEST_HEADER)
    if digest != f"sha256:{hasher.hexdigest()}":
        tmp.unlink(missing_ok=True)
        _fail("the download does not match its digest; try again")
    tmp.replace(output)
    console.print(f"{handle} version {version} written to {output} ({digest})", soft_wrap=True)


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the hash chain; exit 1 naming the first bad entry."""
    from marketplace.audit.service import verify_chain

    result = _run(settings(), verify_chain)
    if result.ok:
        console.print(f"audit log intact: {result.checked} entries verified")
        return
    err.print(
        f"[red]audit log broken at entry {result.bad_seq}:[/red] {result.reason} "
        f"({result.checked} entries verified before it)"
    )
    raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
