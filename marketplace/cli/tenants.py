"""``citybrain tenants``: the platform's tenants."""

from __future__ import annotations

import typer
from rich.table import Table

from marketplace.cli._common import console, run_in_transaction

app = typer.Typer(no_args_is_help=True, help="Tenants of the platform.")


@app.command("list")
def tenants_list(ctx: typer.Context) -> None:
    """List tenants."""
    from marketplace.tenants.service import list_tenants

    rows = run_in_transaction(
        ctx, lambda s: [(t.slug, t.name, t.kind, t.domain or "") for t in list_tenants(s)]
    )
    table = Table("slug", "name", "kind", "domain")
    for row in rows:
        table.add_row(*row)
    console.print(table)
