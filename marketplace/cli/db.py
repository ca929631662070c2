"""``citybrain db``: the database's migrations."""

from __future__ import annotations

import typer

from marketplace.cli._common import console, redact, settings

app = typer.Typer(no_args_is_help=True, help="Database migrations.")


@app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Apply all migrations to the configured database."""
    from marketplace.migrate import upgrade

    cfg = settings(ctx)
    upgrade(cfg.database_url)
    console.print(f"database at head: {redact(cfg.database_url)}")
