"""Closing a period: invoices for developers, chargeback statements for government tenants.

:func:`close_period` is the billing run. It rates the period (:mod:`billing.rating`), writes one
document per consumer tenant with lines, and records the period as closed with its cut-off,
all in the caller's transaction. Running it again for a closed period returns the documents
already written: the ``billing_period`` row (primary key ``period``) and the unique
``(tenant_id, period, kind)`` of documents make a second charge impossible, even for two runs
racing each other.

Invoices move ``draft → issued → paid``, or to ``void`` from draft or issued. Statements are
issued and never paid: they allocate the cost of what a government tenant used (by domain and
by publishing agency) for chargeback.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Connection, func, insert, select, update

from billing.catalog import BillingCatalog
from billing.errors import BillingConflictError, BillingNotFoundError
from billing.money import DEFAULT_CURRENCY, round_line
from billing.periods import Period
from billing.rating import RatedLine, rate_period
from billing.tables import billing_document, billing_period, document_line

__all__ = [
    "Document",
    "DocumentLine",
    "RunConfig",
    "RunResult",
    "close_period",
    "find_document",
    "get_document",
    "issue_document",
    "list_documents",
    "mark_paid",
    "period_documents",
    "void_document",
]

DocumentKind = Literal["invoice", "statement"]


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Settings of a billing run.

    Attributes:
        commission_rate: The operator's share of every line, e.g. ``Decimal("0.10")``.
        settle: Usage received within this long before the run is left to the next run, so an
            event being flushed while the period closes is never skipped.
        issue: Issue invoices at once (else they stay drafts until :func:`issue_document`).
    """

    commission_rate: Decimal = Decimal("0.10")
    settle: timedelta = timedelta(minutes=5)
    issue: bool = True


@dataclass(frozen=True, slots=True)
class DocumentLine:
    """A line of an invoice or statement."""

    position: int
    kind: str
    product: str
    product_id: int
    publisher_tenant_id: int
    domain: str
    unit: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    commission: Decimal
    publisher_share: Decimal
    usage_period: str
    late: bool
    plan_version: int


@dataclass(frozen=True, slots=True)
class Document:
    """An invoice (developer tenants) or a chargeback statement (government tenants)."""

    id: int
    number: str
    kind: str
    tenant_id: int
    period: str
    status: str
    currency: str
    total: Decimal
    commission: Decimal
    publisher_share: Decimal
    created_at: datetime
    issued_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None
    stripe_invoice_id: str | None
    lines: tuple[DocumentLine, ...] = field(default_factory=tuple)

    def allocation(self, by: Literal["domain", "publisher"]) -> dict[str, Decimal]:
        """Cost allocated by product domain or by publisher tenant id (as a string)."""
        out: dict[str, Decimal] = defaultdict(Decimal)
        for line in self.lines:
            key = line.domain if by == "domain" else str(line.publisher_tenant_id)
            out[key] += line.amount
        return dict(sorted(out.items()))


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a billing run did: ``created`` is False when the period was already closed."""

    period: str
    created: bool
    cutoff: datetime
    documents: list[Document]


def _doc(row: Any, lines: tuple[DocumentLine, ...] = ()) -> Document:
    return Document(
        id=row.id,
        number=row.number,
        kind=row.kind,
        tenant_id=row.tenant_id,
        period=row.period,
        status=row.status,
        currency=row.currency,
        total=Decimal(row.total),
        commission=Decimal(row.commission),
        publisher_share=Decimal(row.publisher_share),
        created_at=row.created_at,
        issued_at=row.issued_at,
        paid_at=row.paid_at,
        voided_at=row.voided_at,
        stripe_invoice_id=row.stripe_invoice_id,
        lines=lines,
    )


def _lines_of(conn: Connection, doc_ids: list[int]) -> dict[int, tuple[DocumentLine, ...]]:
    out: dict[int, list[DocumentLine]] = defaultdict(list)
    if not doc_ids:
        return {}
    rows = conn.execute(
        select(document_line)
        .where(document_line.c.document_id.in_(doc_ids))
        .order_by(document_line.c.document_id, document_line.c.position)
    )
    for r in rows:
        out[r.document_id].append(
            DocumentLine(
                position=r.position,
                kind=r.kind,
                product=r.product,
                product_id=r.product_id,
                publisher_tenant_id=r.publisher_tenant_id,
                domain=r.domain,
                unit=r.unit,
                description=r.description,
                quantity=Decimal(r.quantity),
                unit_price=Decimal(r.unit_price),
                amount=Decimal(r.amount),
                commission=Decimal(r.commission),
                publisher_share=Decimal(r.publisher_share),
                usage_period=r.usage_period,
                late=bool(r.late),
                plan_version=r.plan_version,
            )
        )
    return {k: tuple(v) for k, v in out.items()}


def period_documents(conn: Connection, period: Period) -> list[Document]:
    """Every document of a period, with lines, ordered by number."""
    rows = list(
        conn.execute(
            select(billing_document)
            .where(billing_document.c.period == str(period))
            .order_by(billing_document.c.number)
        )
    )
    lines = _lines_of(conn, [r.id for r in rows])
    return [_doc(r, lines.get(r.id, ())) for r in rows]


def _number(kind: DocumentKind, period: Period, tenant_id: int) -> str:
    return f"{'INV' if kind == 'invoice' else 'CBS'}-{period}-{tenant_id:06d}"


def close_period(
    conn: Connection,
    period: Period,
    catalog: BillingCatalog,
    *,
    now: datetime,
    config: RunConfig | None = None,
) -> RunResult:
    """The billing run: rate ``period`` and write its documents, once.

    Args:
        conn: A connection in the caller's transaction (commit to make the run count).
        period: The month to close.
        catalog: Tenants and products by id.
        now: The time of the run; the cut-off is ``now - config.settle``.
        config: Commission rate, settle time, whether to issue invoices at once.

    Returns:
        The documents; ``created`` False when the period had been closed already (the same
        documents are returned, nothing is rated again).

    Raises:
        BillingConflictError: The period has not ended by the cut-off, a later period is
            closed already, or the previous period is not closed yet.
    """
    config = config or RunConfig()
    closed = conn.execute(
        select(billing_period).where(billing_period.c.period == str(period))
    ).first()
    if closed is not None:
        return RunResult(str(period), False, closed.cutoff, period_documents(conn, period))
    last = conn.execute(
        select(billing_period).order_by(billing_period.c.period.desc()).limit(1)
    ).first()
    if last is not None and last.period > str(period):
        raise BillingConflictError(
            f"period {last.period} is already closed; periods close in order, "
            f"so {period} can no longer be closed (its usage was billed as late usage)"
        )
    if last is not None and last.period != str(period.prev()):
        raise BillingConflictError(
            f"close {period.prev()} first (`citybrain billing run --period {period.prev()}`): "
            "periods close in order so late usage is billed exactly once"
        )
    cutoff = now - config.settle
    if cutoff < period.end:
        raise BillingConflictError(
            f"period {period} is not over: it can be closed from "
            f"{(period.end + config.settle).isoformat()}"
        )
    prev_cutoff: datetime | None = last.cutoff if last is not None else None
    lines = rate_period(
        conn,
        period,
        catalog,
        cutoff=cutoff,
        prev_cutoff=prev_cutoff,
        commission_rate=config.commission_rate,
    )
    by_tenant: dict[int, list[RatedLine]] = defaultdict(list)
    for line in lines:
        by_tenant[line.tenant_id].append(line)
    # The period row goes in first: a concurrent run of the same period fails on its key.
    conn.execute(
        insert(billing_period).values(
            period=str(period),
            cutoff=cutoff,
            closed_at=now,
            commission_rate=config.commission_rate,
            documents=len(by_tenant),
        )
    )
    for tenant_id, tenant_lines in sorted(by_tenant.items()):
        tenant = catalog.tenants.get(tenant_id)
        kind: DocumentKind = "statement" if tenant and tenant.is_government else "invoice"
        currencies = {x.currency for x in tenant_lines}
        currency = currencies.pop() if len(currencies) == 1 else DEFAULT_CURRENCY
        if currencies:
            raise BillingConflictError(
                f"tenant {tenant_id} used products priced in several currencies in {period}"
            )
        issued = kind == "statement" or config.issue
        doc_id = conn.execute(
            insert(billing_document)
            .values(
                number=_number(kind, period, tenant_id),
                kind=kind,
                tenant_id=tenant_id,
                period=str(period),
                status="issued" if issued else "draft",
                currency=currency,
                total=round_line(sum((x.amount for x in tenant_lines), Decimal(0))),
                commission=sum((x.commission for x in tenant_lines), Decimal(0)),
                publisher_share=sum((x.publisher_share for x in tenant_lines), Decimal(0)),
                created_at=now,
                issued_at=now if issued else None,
            )
            .returning(billing_document.c.id)
        ).scalar_one()
        conn.execute(
            insert(document_line),
            [
                {
                    "document_id": doc_id,
                    "position": i + 1,
                    "kind": x.kind,
                    "product_id": x.product_id,
                    "product": x.product,
                    "publisher_tenant_id": x.publisher_tenant_id,
                    "domain": x.domain,
                    "unit": x.unit,
                    "description": x.description,
                    "quantity": x.quantity,
                    "unit_price": x.unit_price,
                    "amount": x.amount,
                    "commission": x.commission,
                    "publisher_share": x.publisher_share,
                    "usage_period": x.usage_period,
                    "late": x.late,
                    "plan_version": x.plan_version,
                }
                for i, x in enumerate(tenant_lines)
            ],
        )
    return RunResult(str(period), True, cutoff, period_documents(conn, period))


def get_document(
    conn: Connection, document_id: int, *, kind: DocumentKind, tenant_id: int | None
) -> Document:
    """One document with its lines; ``tenant_id`` None reads any tenant's (the operator).

    Raises:
        BillingNotFoundError: No such document of this kind for this tenant (another tenant's
            answers exactly the same).
    """
    stmt = select(billing_document).where(
        billing_document.c.id == document_id, billing_document.c.kind == kind
    )
    if tenant_id is not None:
        stmt = stmt.where(billing_document.c.tenant_id == tenant_id)
    row = conn.execute(stmt).first()
    if row is None:
        raise BillingNotFoundError(f"no {kind} {document_id}")
    return _doc(row, _lines_of(conn, [row.id]).get(row.id, ()))


def list_documents(
    conn: Connection,
    *,
    kind: DocumentKind,
    tenant_id: int | None,
    period: Period | None = None,
    limit: int = 20,
    offset: int = 0,
) -> tuple[list[Document], int]:
    """A page of documents (without lines), newest period first, and the total count."""
    where = [billing_document.c.kind == kind]
    if tenant_id is not None:
        where.append(billing_document.c.tenant_id == tenant_id)
    if period is not None:
        where.append(billing_document.c.period == str(period))
    count = conn.execute(select(func.count()).select_from(billing_document).where(*where)).scalar()
    rows = conn.execute(
        select(billing_document)
        .where(*where)
        .order_by(billing_document.c.period.desc(), billing_document.c.number)
        .limit(limit)
        .offset(offset)
    )
    return [_doc(r) for r in rows], int(count or 0)


def _transition(
    conn: Connection, document_id: int, *, allowed: tuple[str, ...], to: str, values: dict[str, Any]
) -> Document:
    row = conn.execute(select(billing_document).where(billing_document.c.id == document_id)).first()
    if row is None:
        raise BillingNotFoundError(f"no document {document_id}")
    if row.kind != "invoice" and to != "issued":
        raise BillingConflictError(f"{row.number} is a chargeback statement: it is never {to}")
    if row.status not in allowed:
        raise BillingConflictError(f"{row.number} is {row.status}; it cannot become {to}")
    conn.execute(
        update(billing_document)
        .where(billing_document.c.id == document_id)
        .values(status=to, **values)
    )
    return get_document(conn, document_id, kind=row.kind, tenant_id=None)


def issue_document(conn: Connection, document_id: int, *, now: datetime) -> Document:
    """draft → issued."""
    return _transition(
        conn, document_id, allowed=("draft",), to="issued", values={"issued_at": now}
    )


def mark_paid(conn: Connection, document_id: int, *, now: datetime) -> Document:
    """issued → paid (invoices only)."""
    return _transition(conn, document_id, allowed=("issued",), to="paid", values={"paid_at": now})


def void_document(conn: Connection, document_id: int, *, now: datetime) -> Document:
    """draft | issued → void (invoices only). A void invoice's usage is not billed again."""
    return _transition(
        conn, document_id, allowed=("draft", "issued"), to="void", values={"voided_at": now}
    )


def find_document(conn: Connection, number: str) -> int:
    """The id of the document with this number.

    Raises:
        BillingNotFoundError: There is none.
    """
    doc_id = conn.execute(
        select(billing_document.c.id).where(billing_document.c.number == number)
    ).scalar()
    if doc_id is None:
        raise BillingNotFoundError(f"no document {number}")
    return int(doc_id)
