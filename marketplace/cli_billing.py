"""``citybrain billing``: close a period, render the operator's reports, sync Stripe."""

from __future__ import annotations

import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer

billing_app = typer.Typer(
    no_args_is_help=True, help="Billing runs, invoices, chargeback statements and reports."
)


def _cli() -> Any:
    # Imported late: marketplace.cli imports this module to register the sub-app.
    from marketplace import cli

    return cli


def _period(text: str) -> Any:
    from billing.errors import BillingError
    from billing.periods import Period

    try:
        return Period.parse(text)
    except BillingError as e:
        _cli()._fail(e.message)


def _in_transaction(fn: Any) -> Any:
    """Run fn(session) in one transaction; billing's errors exit 1 with their message."""
    from billing.errors import BillingError

    cli = _cli()
    try:
        return cli._run(cli.settings(), fn)
    except BillingError as e:
        cli._fail(e.message)


@billing_app.command("run")
def run(
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
    cfg = _cli().settings()
    rate = cfg.billing.commission_rate
    if commission is not None:
        try:
            rate = Decimal(commission)
        except InvalidOperation:
            _cli()._fail(f"--commission must be a decimal such as 0.10, not {commission!r}")
    if not Decimal(0) <= rate <= Decimal(1):
        _cli()._fail("--commission must be between 0 and 1")
    config = RunConfig(commission_rate=rate, issue=not draft)
    result = _in_transaction(lambda s: svc.run_billing(s, p, now=svc.now_utc(), config=config))
    out = _cli().console
    verb = "closed" if result.created else "was already closed; unchanged"
    out.print(f"period {result.period} {verb}: {len(result.documents)} documents")
    for d in result.documents:
        late = sum(1 for x in d.lines if x.late)
        print(
            f"  {d.number}  {d.kind:<9}  {d.status:<6}  {d.total:>14.2f} {d.currency}"
            + (f"  ({late} late lines)" if late else "")
        )
    if stripe_sync and cfg.stripe.api_key:
        synced = _in_transaction(lambda s: svc.stripe_sync(s, cfg.stripe, now=svc.now_utc()))
        out.print(
            f"stripe: {synced.customers_created} customers, {synced.events_delivered} meter "
            f"events ({synced.events_duplicate} already there, {synced.events_failed} to retry), "
            f"{synced.invoices_created} invoices"
        )


@billing_app.command("report")
def report(
    period: Annotated[str, typer.Option(help="The month, e.g. 2026-11")],
    fmt: Annotated[str, typer.Option("--format", help="csv, html or pdf")] = "csv",
    output: Annotated[Path | None, typer.Option(help="Write here instead of stdout")] = None,
) -> None:
    """The operator's report of a period: totals, top consumers, revenue share, trend chart."""
    from billing.reports import FORMATS
    from marketplace.billing import service as svc

    if fmt not in FORMATS:
        _cli()._fail(f"--format must be one of {', '.join(FORMATS)}")
    p = _period(period)
    data: bytes = _in_transaction(lambda s: svc.report(s, p, fmt))
    if output is not None:
        output.write_bytes(data)
        _cli().err.print(f"wrote {output} ({len(data)} bytes)")
        return
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


@billing_app.command("stripe-sync")
def stripe_sync_cmd() -> None:
    """Mirror developer tenants, pending meter events and issued invoices to Stripe."""
    from marketplace.billing import service as svc

    cfg = _cli().settings()
    if not cfg.stripe.api_key:
        _cli()._fail("CITYBRAIN_STRIPE__API_KEY is not set", "export it, then run this again")
    r = _in_transaction(lambda s: svc.stripe_sync(s, cfg.stripe, now=svc.now_utc()))
    print(
        f"customers {r.customers_created}, queued {r.events_queued}, delivered "
        f"{r.events_delivered}, already there {r.events_duplicate}, to retry {r.events_failed}, "
        f"invoices {r.invoices_created} (failed {r.invoices_failed})"
    )


@billing_app.command("invoice")
def invoice(
    number: Annotated[str, typer.Argument(help="Document number, e.g. INV-2026-11-000009")],
    action: Annotated[str, typer.Argument(help="issue, paid or void")],
) -> None:
    """Move an invoice along: draft → issued → paid, or void."""
    from marketplace.billing import service as svc

    if action not in ("issue", "paid", "void"):
        _cli()._fail("action must be issue, paid or void")
    doc = _in_transaction(lambda s: svc.transition(s, number, action, now=svc.now_utc()))
    print(f"{doc.number} is {doc.status}")
