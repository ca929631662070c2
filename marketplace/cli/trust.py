"""``citybrain models trust|untrust|trusted``: the operator decides which government models'
code runs in the platform's process.

Every python-format model runs in a sandbox worker (``model_store.sandbox``) unless the
operator trusts its product here. Only government tenants' models can be trusted; a third
party's code always runs isolated. The commands are merged into ``citybrain models`` (an
unnamed Typer sub-app); a running server applies a change when the model next loads.
"""

from __future__ import annotations

from typing import Annotated

import typer

from marketplace.cli._common import console, operator_principal, run_in_transaction

app = typer.Typer()

_HANDLE = Annotated[str, typer.Argument(help="The model product, <tenant-slug>.<name>")]


def _set(ctx: typer.Context, handle: str, trusted: bool) -> None:
    from sqlalchemy.orm import Session

    from marketplace.catalog.trust import set_trusted_code

    def go(session: Session) -> str:
        product = set_trusted_code(session, operator_principal(session), handle, trusted)
        return f"{product.tenant.slug}.{product.name}"

    done = run_in_transaction(ctx, go)
    where = "the platform's process" if trusted else "a sandbox worker"
    console.print(f"{done}: its code runs in {where} from its next load")


@app.command("trust")
def trust(ctx: typer.Context, handle: _HANDLE) -> None:
    """Let a government tenant's model run in the platform's process (operator; audited)."""
    _set(ctx, handle, True)


@app.command("untrust")
def untrust(ctx: typer.Context, handle: _HANDLE) -> None:
    """Run a model's code in a sandbox worker again (operator; audited)."""
    _set(ctx, handle, False)


@app.command("trusted")
def trusted(ctx: typer.Context) -> None:
    """List the models whose code runs in the platform's process."""
    from marketplace.catalog.trust import list_trusted

    handles = run_in_transaction(ctx, list_trusted)
    for handle in handles:
        console.print(handle)
    if not handles:
        console.print("no model is trusted: every python-format model runs in a sandbox worker")
