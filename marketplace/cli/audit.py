"""``citybrain audit``: check the tamper-evident audit log."""

from __future__ import annotations

import typer

from marketplace.cli._common import console, err, run_in_transaction

app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")


@app.command("verify")
def audit_verify(ctx: typer.Context) -> None:
    """Check the hash chain; exit 1 naming the first bad entry."""
    from marketplace.audit.service import verify_chain

    result = run_in_transaction(ctx, verify_chain)
    if result.ok:
        console.print(f"audit log intact: {result.checked} entries verified")
        return
    err.print(
        f"[red]audit log broken at entry {result.bad_seq}:[/red] {result.reason} "
        f"({result.checked} entries verified before it)"
    )
    raise typer.Exit(1)
