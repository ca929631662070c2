"""``citybrain keys``: create, list, rotate and revoke API keys, as the operator."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from marketplace.cli._common import CLI_ACTOR, console, err, run_in_transaction, settings

app = typer.Typer(no_args_is_help=True, help="Create, list, rotate and revoke API keys.")


@app.command("create")
def keys_create(
    ctx: typer.Context,
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

    key_id, token = run_in_transaction(ctx, go)
    err.print(f"created key {key_id} for {tenant}; it is shown only now:")
    print(token)


@app.command("list")
def keys_list(
    ctx: typer.Context,
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

    rows = run_in_transaction(ctx, go)
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


@app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="Key id (the part after cbk_)")],
) -> None:
    """Revoke a key; it stops working at once."""
    from marketplace.keys.service import get_key, revoke_key

    run_in_transaction(
        ctx, lambda s: revoke_key(s, get_key(s, key_id, tenant_id=None), actor=CLI_ACTOR)
    )
    console.print(f"revoked key {key_id}")


@app.command("rotate")
def keys_rotate(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="Key id (the part after cbk_)")],
) -> None:
    """Issue a new secret; the old one keeps working for the grace period."""
    from datetime import timedelta

    from marketplace.keys.service import get_key, rotate_key

    cfg = settings(ctx)

    def go(session: Any) -> tuple[str, str]:
        issued = rotate_key(
            session,
            get_key(session, key_id, tenant_id=None),
            grace=timedelta(seconds=cfg.key_rotation_grace_s),
            actor=CLI_ACTOR,
        )
        return issued.token, str(issued.key.previous_expires_at)

    token, until = run_in_transaction(ctx, go, cfg)
    err.print(
        f"rotated key {key_id}; the previous secret works until {until}. New key, shown once:"
    )
    print(token)
