"""Stripe for developer tenants: customers, usage as meter events, issued invoices.

Only developer tenants are mirrored (government tenants get chargeback statements, never a
payment). Everything is safe to repeat:

* **Customers** — one per developer tenant, created with the idempotency key
  ``citybrain-tenant-<id>`` and remembered in ``stripe_customer``.
* **Meter events** — every usage event of a developer tenant gets a ``stripe_delivery`` row
  (``pending``), then is sent to ``POST /v1/billing/meter_events`` with ``identifier``
  ``<tenant id>:<usage event id>`` (usage event ids are idempotency keys unique per tenant, so
  the tenant id makes them unique in the Stripe account; ids too long for Stripe's 100
  characters are hashed). A success, or a 400 saying an event with that identifier exists
  already, marks the row ``delivered``; any other failure (network, 5xx, 429, other 400s) only
  counts an attempt and keeps the row ``pending`` for the next sync: nothing is lost. Stripe
  accepts events of the last 35 days only, so older usage is not queued.
* **Invoices** — each issued CityBrain invoice becomes a Stripe invoice (``send_invoice``) with
  one invoice item per non-zero line and is finalised; idempotency keys derive from the invoice
  number, and the Stripe id is stored on the document, so a retry never bills twice.

The amounts charged are CityBrain's rated lines (invoice items); the meter events mirror usage
for Stripe's usage reporting, so **do not attach the meters to prices** in Stripe, or usage would
be charged twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from sqlalchemy import Connection, and_, exists, insert, literal, select, update

from billing.catalog import BillingCatalog, TenantInfo
from billing.invoices import get_document
from billing.tables import billing_document, stripe_customer, stripe_delivery, usage_event

__all__ = ["METER_EVENT_WINDOW", "StripeSync", "SyncResult", "meter_identifier"]

#: Stripe accepts meter events timestamped within the past 35 days.
METER_EVENT_WINDOW = timedelta(days=35)
_MAX_IDENTIFIER = 100


def meter_identifier(tenant_id: int, event_id: str) -> str:
    """The meter event ``identifier`` of a usage event: ``<tenant id>:<event id>``."""
    ident = f"{tenant_id}:{event_id}"
    if len(ident) <= _MAX_IDENTIFIER:
        return ident
    return f"{tenant_id}:sha256:{hashlib.sha256(event_id.encode()).hexdigest()}"


def _is_duplicate(err: stripe.StripeError) -> bool:
    if not isinstance(err, stripe.InvalidRequestError) or err.http_status != 400:
        return False
    message = (err.user_message or str(err)).lower()
    return err.code == "resource_already_exists" or (
        "identifier" in message and ("already exists" in message or "duplicate" in message)
    )


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one sync did."""

    customers_created: int = 0
    events_queued: int = 0
    events_delivered: int = 0
    events_duplicate: int = 0
    events_failed: int = 0
    invoices_created: int = 0
    invoices_failed: int = 0


class StripeSync:
    """Mirror developer tenants, their usage and their invoices into Stripe."""

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        batch_size: int = 500,
        days_until_due: int = 30,
        max_network_retries: int = 0,
    ) -> None:
        """Create the client.

        Args:
            api_key: The Stripe secret key (``CITYBRAIN_STRIPE__API_KEY``).
            api_base: Another API address (a local fake in tests); Stripe's by default.
            batch_size: Most meter events sent per :meth:`deliver_events` call.
            days_until_due: Payment term of the Stripe invoices.
            max_network_retries: The SDK's own retries; failed deliveries are retried by the
                next sync anyway.
        """
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
        )
        self.batch_size = batch_size
        self.days_until_due = days_until_due

    # -------------------------------------------------------------------- customers

    def sync_customers(self, conn: Connection, tenants: Iterable[TenantInfo]) -> int:
        """Create a Stripe customer for each developer tenant that has none; returns how many."""
        known = {r[0] for r in conn.execute(select(stripe_customer.c.tenant_id))}
        created = 0
        for tenant in tenants:
            if tenant.is_government or tenant.id in known:
                continue
            customer = self._client.v1.customers.create(
                params={
                    "name": tenant.slug,
                    "metadata": {"citybrain_tenant_id": str(tenant.id), "slug": tenant.slug},
                },
                options={"idempotency_key": f"citybrain-tenant-{tenant.id}"},
            )
            conn.execute(
                insert(stripe_customer).values(
                    tenant_id=tenant.id, customer_id=customer.id, created_at=datetime.now(UTC)
                )
            )
            created += 1
        return created

    # ----------------------------------------------------------------- meter events

    def queue_events(self, conn: Connection, *, now: datetime) -> int:
        """Add a ``pending`` delivery for every recent usage event of a Stripe customer."""
        ue, d = usage_event.c, stripe_delivery.c
        customers = select(stripe_customer.c.tenant_id)
        source = select(ue.tenant_id, ue.id, literal("pending"), literal(0)).where(
            ue.tenant_id.in_(customers),
            ue.at >= now - METER_EVENT_WINDOW,
            ~exists().where(and_(d.tenant_id == ue.tenant_id, d.event_id == ue.id)),
        )
        result = conn.execute(
            insert(stripe_delivery).from_select(
                ["tenant_id", "event_id", "state", "attempts"], source
            )
        )
        return max(result.rowcount or 0, 0)

    def deliver_events(self, conn: Connection) -> tuple[int, int, int]:
        """Send up to ``batch_size`` pending events; returns (delivered, duplicates, failed)."""
        ue, d = usage_event.c, stripe_delivery.c
        rows = conn.execute(
            select(
                d.tenant_id,
                d.event_id,
                ue.unit,
                ue.quantity,
                ue.at,
                ue.product,
                stripe_customer.c.customer_id,
            )
            .select_from(
                stripe_delivery.join(
                    usage_event, and_(ue.tenant_id == d.tenant_id, ue.id == d.event_id)
                ).join(stripe_customer, stripe_customer.c.tenant_id == d.tenant_id)
            )
            .where(d.state == "pending")
            .order_by(d.attempts, ue.at)
            .limit(self.batch_size)
        ).all()
        delivered = duplicates = failed = 0
        for r in rows:
            at = r.at if r.at.tzinfo else r.at.replace(tzinfo=UTC)
            key = and_(d.tenant_id == r.tenant_id, d.event_id == r.event_id)
            try:
                self._client.v1.billing.meter_events.create(
                    params={
                        "event_name": "citybrain_" + r.unit.replace("-", "_"),
                        "identifier": meter_identifier(r.tenant_id, r.event_id),
                        "timestamp": int(at.timestamp()),
                        "payload": {
                            "stripe_customer_id": r.customer_id,
                            "value": format(r.quantity.normalize(), "f"),
                            "product": r.product,
                        },
                    }
                )
            except stripe.StripeError as err:
                if not _is_duplicate(err):
                    failed += 1
                    conn.execute(
                        update(stripe_delivery)
                        .where(key)
                        .values(attempts=d.attempts + 1, last_error=str(err)[:500])
                    )
                    if isinstance(err, stripe.APIConnectionError):
                        break  # Stripe is unreachable: the rest wait for the next sync
                    continue
                duplicates += 1
                delivered -= 1  # counted below as delivered; reported apart
            conn.execute(
                update(stripe_delivery)
                .where(key)
                .values(
                    state="delivered",
                    attempts=d.attempts + 1,
                    last_error=None,
                    delivered_at=datetime.now(UTC),
                )
            )
            delivered += 1
        return delivered, duplicates, failed

    # --------------------------------------------------------------------- invoices

    def push_invoices(self, conn: Connection, catalog: BillingCatalog) -> tuple[int, int]:
        """Create issued invoices (not yet in Stripe) there; returns (created, failed)."""
        self.sync_customers(conn, catalog.tenants.values())
        customers = dict(
            conn.execute(select(stripe_customer.c.tenant_id, stripe_customer.c.customer_id)).all()
        )
        bd = billing_document.c
        docs = conn.execute(
            select(billing_document)
            .where(
                bd.kind == "invoice",
                bd.status.in_(("issued", "paid")),
                bd.stripe_invoice_id.is_(None),
                bd.total > 0,
            )
            .order_by(bd.id)
        ).all()
        created = failed = 0
        for row in docs:
            customer = customers.get(row.tenant_id)
            if customer is None:
                continue
            doc = get_document(conn, row.id, kind="invoice", tenant_id=None)
            currency = doc.currency.lower()
            try:
                invoice = self._client.v1.invoices.create(
                    params={
                        "customer": customer,
                        "collection_method": "send_invoice",
                        "days_until_due": self.days_until_due,
                        "currency": currency,
                        "auto_advance": False,
                        "description": f"CityBrain {doc.number} ({doc.period})",
                        "metadata": {"citybrain_number": doc.number, "period": doc.period},
                    },
                    options={"idempotency_key": f"citybrain-invoice-{doc.number}"},
                )
                assert invoice.id is not None
                for line in doc.lines:
                    if line.amount == 0:
                        continue
                    params: dict[str, Any] = {
                        "customer": customer,
                        "invoice": invoice.id,
                        "amount": int(line.amount * 100),
                        "currency": currency,
                        "description": f"{line.product}: {line.description}",
                    }
                    self._client.v1.invoice_items.create(
                        params=params,  # type: ignore[arg-type]
                        options={
                            "idempotency_key": f"citybrain-invoice-{doc.number}-{line.position}"
                        },
                    )
                self._client.v1.invoices.finalize_invoice(
                    invoice.id,
                    options={"idempotency_key": f"citybrain-invoice-{doc.number}-finalize"},
                )
            except stripe.StripeError:
                failed += 1
                continue
            conn.execute(
                update(billing_document).where(bd.id == doc.id).values(stripe_invoice_id=invoice.id)
            )
            created += 1
        return created, failed

    def sync(self, conn: Connection, catalog: BillingCatalog, *, now: datetime) -> SyncResult:
        """Customers, then queued and pending meter events, then invoices, in one go."""
        customers = self.sync_customers(conn, catalog.tenants.values())
        queued = self.queue_events(conn, now=now)
        delivered = duplicates = failed = 0
        while True:
            ok, dup, bad = self.deliver_events(conn)
            delivered, duplicates, failed = delivered + ok, duplicates + dup, failed + bad
            # Failed rows sort last (more attempts) and are retried once the fresh ones are
            # sent; a batch that sends nothing means Stripe is refusing: leave the rest.
            if ok + dup == 0 or ok + dup + bad < self.batch_size:
                break
        inv_ok, inv_bad = self.push_invoices(conn, catalog)
        return SyncResult(customers, queued, delivered, duplicates, failed, inv_ok, inv_bad)
