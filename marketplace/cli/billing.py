"""``citybrain billing``: close a period, render the operator's reports, sync Stripe."""

from __future__ import annotations

import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer

from marketplace.cli._common import console, err, fail, run_in_transaction, settings

app = typer.Typer(
    no_args_is_help=True, help="Billing runs, invoices, chargeback statements and reports."
)


def _period(text: str) -> Any:
    from billing.errors import BillingError
    from billing.periods import Period

    try:
        return Period.parse(text)
    except BillingError as e:
        fail(e.message)


def _in_transaction(ctx: typer.Context, fn: Any) -> Any:
    """Run fn(session) in one transaction; billing's errors exit 1 with their message."""
    from billing.errors import BillingError

    try:
        return run_in_transaction(ctx, fn)
    except BillingError as e:
        fail(e.message)


@app.command("run")
def run(
    ctx: typer.Context,
    period: Annotated[str, typer.Option(help="The month to close, e.g. 2026-11")],
    commission: Annotated[
        str | None,
        typer.Option(
            help="Operator commission rate, e.g. 0.10 (env CITYBRAIN_BILLING__COMMISSION_RATE)"
        ),
    ] = None,
    draft: Annotated[bool, typer.Option(help="Leave invoices as drafts")] = False,
    stripe_sync: Annotated[
        bool,
        typer.Option(
            "--stripe/--no-stripe", help="Sync Stripe if CITYBRAIN_STRIPE__API_KEY is set"
        ),
    ] = True,
) -> None:
    """Close a period: rate usage, issue invoices and chargeback statements (idempotent)."""
    from billing.invoices import RunConfig
    from marketplace.billing import service as svc

    p = _period(period)
    cfg = settings(ctx)
    rate = cfg.billing.commission_rate
    if commission is not None:
        try:
            rate = Decimal(commission)
        except InvalidOperation:
            fail(f"--commission must be a decimal such as 0.10, not {commission!r}")
    if not Decimal(0) <= rate <= Decimal(1):
        fail("--commission must be between 0 and 1")
    config = RunConfig(commission_rate=rate, issue=not draft)
    result = _in_transaction(ctx, lambda s: svc.run_billing(s, p, now=svc.now_utc(), config=config))
    verb = "closed" if result.created else "was already closed; unchanged"
    console.print(f"period {result.period} {verb}: {len(result.documents)} documents")
    for d in result.documents:
        late = sum(1 for x in d.lines if x.late)
        print(
            f"  {d.number}  {d.kind:<9}  {d.status:<6}  {d.total:>14.2f} {d.currency}"
            + (f"  ({late} late lines)" if late else "")
        )
    if stripe_sync and cfg.stripe.api_key:
        synced = _in_transaction(ctx, lambda s: svc.stripe_sync(s, cfg.stripe, now=svc.now_utc()))
        console.print(
            f"stripe: {synced.customers_created} customers, {synced.events_delivered} meter "
            f"events ({synced.events_duplicate} already there, {synced.events_failed} to retry), "
            f"{synced.invoices_created} invoices"
        )


@app.command("report")
def report(
    ctx: typer.Context,
    period: Annotated[str, typer.Option(help="The month, e.g. 2026-11")],
    fmt: Annotated[str, typer.Option("--format", help="csv, html or pdf")] = "csv",
    output: Annotated[Path | None, typer.Option(help="Write here instead of stdout")] = None,
) -> None:
    """The operator's report of a period: totals, top consumers, revenue share, trend chart."""
    from billing.reports import FORMATS
    from marketplace.billing import service as svc

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}")
    p = _period(period)
    data: bytes = _in_transaction(ctx, lambda s: svc.report(s, p, fmt))
    if output is not None:
        output.write_bytes(data)
        err.print(f"wrote {output} ({len(data)} bytes)")
        return
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


@app.command("stripe-sync")
def stripe_sync_cmd(ctx: typer.Context) -> None:
    """Mirror developer tenants, pending meter events and issued invoices to Stripe."""
    from marketplace.billing import service as svc

    cfg = settings(ctx)
    if not cfg.stripe.api_key:
        fail("CITYBRAIN_STRIPE__API_KEY is not set", "export it, then run this again")
    r = _in_transaction(ctx, lambda s: svc.stripe_sync(s, cfg.stripe, now=svc.now_utc()))
    print(
        f"customers {r.customers_created}, queued {r.events_queued}, delivered "
        f"{r.events_delivered}, already there {r.events_duplicate}, to retry {r.events_failed}, "
        f"invoices {r.invoices_created} (failed {r.invoices_failed})"
    )


@app.command("invoice")
def invoice(
    ctx: typer.Context,
    number: Annotated[str, typer.Argument(help="Document number, e.g. INV-2026-11-000009")],
    action: Annotated[str, typer.Argument(help="issue, paid or void")],
) -> None:
    """Move an invoice along: draft → issued → paid, or void."""
    from marketplace.billing import service as svc

    if action not in ("issue", "paid", "void"):
        fail("action must be issue, paid or void")
    doc = _in_transaction(ctx, lambda s: svc.transition(s, number, action, now=svc.now_utc()))
    print(f"{doc.number} is {doc.status}")
