"""``citybrain access``: the operator's view of access requests and grants from the shell."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from marketplace.cli._common import console, operator_principal, run_in_transaction

app = typer.Typer(no_args_is_help=True, help="Access requests and grants (as the operator).")


@app.command("requests")
def requests_list(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="pending, approved, rejected")] = None,
) -> None:
    """List access requests."""
    from marketplace.access.service import list_requests
    from marketplace.catalog.service import product_handle

    rows = run_in_transaction(
        ctx,
        lambda s: [
            (
                r.id,
                r.tenant.slug,
                product_handle(r.product),
                r.product.tier,
                ",".join(r.scopes),
                r.state,
                r.purpose[:60],
            )
            for r in list_requests(s, operator_principal(s), state=state)
        ],
    )
    table = Table()
    for col in ("id", "tenant", "product"):
        table.add_column(col, no_wrap=True)  # ids are copied into the next command
    for col in ("tier", "scopes", "state", "purpose"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _decide(ctx: typer.Context, request_id: str, reason: str, approve: bool) -> None:
    from marketplace.access.service import decide_request

    state, grant = run_in_transaction(
        ctx,
        lambda s: (lambda r: (r.state, r.grant_id))(
            decide_request(s, operator_principal(s), request_id, approve=approve, reason=reason)
        ),
    )
    console.print(f"request {request_id}: {state}" + (f", grant {grant}" if grant else ""))


@app.command("approve")
def approve(
    ctx: typer.Context, request_id: str, reason: Annotated[str, typer.Option(help="Why (audited)")]
) -> None:
    """Approve a confidential product's access request (restricted ones: their owner)."""
    _decide(ctx, request_id, reason, True)


@app.command("reject")
def reject(
    ctx: typer.Context, request_id: str, reason: Annotated[str, typer.Option(help="Why (audited)")]
) -> None:
    """Reject an access request."""
    _decide(ctx, request_id, reason, False)


@app.command("grants")
def grants_list(ctx: typer.Context) -> None:
    """List grants and their status."""
    from marketplace.access.service import grant_status, list_grants
    from marketplace.catalog.service import product_handle

    rows = run_in_transaction(
        ctx,
        lambda s: [
            (
                g.id,
                g.tenant.slug,
                product_handle(g.product),
                ",".join(g.scopes),
                grant_status(g),
                g.expires_at.isoformat(),
            )
            for g in list_grants(s, operator_principal(s))
        ],
    )
    table = Table()
    for col in ("id", "tenant", "product"):
        table.add_column(col, no_wrap=True)
    for col in ("scopes", "status", "expires"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    grant_id: str,
    reason: Annotated[str, typer.Option(help="Why (audited)")] = "",
) -> None:
    """Revoke a grant; it stops working on the next call."""
    from marketplace.access.service import revoke_grant

    run_in_transaction(
        ctx, lambda s: revoke_grant(s, operator_principal(s), grant_id, reason=reason)
    )
    console.print(f"grant {grant_id} revoked")
