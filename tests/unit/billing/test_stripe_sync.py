"""Stripe sync through the real ``stripe`` SDK against a LOCAL FAKE of the Stripe endpoints used.

Stripe has no local server, so this test starts a small HTTP server on 127.0.0.1 in a thread
that imitates ``POST /v1/customers``, ``/v1/billing/meter_events`` (identifiers unique: a
repeat answers 400 ``resource_already_exists``), ``/v1/invoices``, ``/v1/invoiceitems`` and
``/v1/invoices/{id}/finalize``, with idempotency keys replayed, and can fail requests on demand.
The SDK is pointed at it through ``api_base``; nothing leaves the machine.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal as D
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from sqlalchemy import Engine, func, select

from billing.invoices import RunConfig, close_period, period_documents
from billing.periods import Period
from billing.stripe_sync import StripeSync, meter_identifier
from billing.tables import stripe_delivery
from tests.unit.billing.billing_city import CATALOG, PARKEASY, ROADAI, billing_engine
from tests.unit.billing.test_rating import CLOSE_OCT, _october
from tests.utils.server import send_json


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """Billing's usage and rating tables in a fresh SQLite file."""
    yield from billing_engine(tmp_path)


class FakeStripe:
    """The state of the fake Stripe account."""

    def __init__(self) -> None:
        self.customers: dict[str, dict[str, Any]] = {}
        self.meter_events: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.items: list[dict[str, Any]] = []
        self.replies: dict[str, tuple[int, dict[str, Any]]] = {}
        self.fail_meter_events = 0
        self.lock = threading.Lock()

    def handle(
        self, path: str, form: dict[str, str], idem: str | None
    ) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if idem and idem in self.replies:
                return self.replies[idem]
            status, body = self._route(path, form)
            if idem and status < 500:
                self.replies[idem] = (status, body)
            return status, body

    def _route(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if path == "/v1/customers":
            cid = f"cus_{len(self.customers) + 1}"
            self.customers[cid] = {"id": cid, "object": "customer", "name": form.get("name")}
            return 200, self.customers[cid]
        if path == "/v1/billing/meter_events":
            if self.fail_meter_events > 0:
                self.fail_meter_events -= 1
                return 500, {"error": {"type": "api_error", "message": "try again"}}
            ident = form["identifier"]
            if ident in self.meter_events:
                return 400, {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "resource_already_exists",
                        "message": f"An event with identifier {ident} already exists.",
                    }
                }
            self.meter_events[ident] = {
                "object": "billing.meter_event",
                "identifier": ident,
                **form,
            }
            return 200, self.meter_events[ident]
        if path == "/v1/invoices":
            iid = f"in_{len(self.invoices) + 1}"
            self.invoices[iid] = {"id": iid, "object": "invoice", "status": "draft", **form}
            return 200, self.invoices[iid]
        if path == "/v1/invoiceitems":
            item = {"id": f"ii_{len(self.items) + 1}", "object": "invoiceitem", **form}
            self.items.append(item)
            return 200, item
        if path.startswith("/v1/invoices/") and path.endswith("/finalize"):
            inv = self.invoices[path.split("/")[3]]
            inv["status"] = "open"
            return 200, inv
        return 404, {"error": {"type": "invalid_request_error", "message": f"no {path}"}}


@pytest.fixture
def fake_stripe() -> Iterator[tuple[FakeStripe, str]]:
    state = FakeStripe()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
            status, body = state.handle(self.path, form, self.headers.get("Idempotency-Key"))
            send_json(self, status, body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _pending(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(stripe_delivery)
                .where(stripe_delivery.c.state == "pending")
            ).scalar_one()
        )


def test_usage_and_invoices_reach_stripe_once_and_failures_are_retried(
    engine: Engine, fake_stripe: tuple[FakeStripe, str]
) -> None:
    fake, base = fake_stripe
    _october(engine)
    with engine.begin() as conn:
        close_period(conn, Period.parse("2026-10"), CATALOG, now=CLOSE_OCT, config=RunConfig())
    sync = StripeSync("sk_test_fake", api_base=base, batch_size=100)
    now = datetime(2026, 11, 2, tzinfo=UTC)

    # An event already in Stripe (its answer was lost last time), and the endpoint down.
    with engine.connect() as conn:
        first_id = conn.exec_driver_sql(
            "SELECT id FROM usage_event WHERE tenant_id = ? ORDER BY at, id LIMIT 1", (PARKEASY,)
        ).scalar_one()
    fake.meter_events[meter_identifier(PARKEASY, first_id)] = {"identifier": "earlier"}
    fake.fail_meter_events = 10**6

    with engine.begin() as conn:
        first = sync.sync(conn, CATALOG, now=now)
    developer_events = 250 + 1 + 30 + 1 + 1 + 1 + 1 + 1  # parkeasy's and roadai's October rows
    assert first.customers_created == 2  # developers only; government tenants are never billed
    assert {c["name"] for c in fake.customers.values()} == {"parkeasy", "roadai"}
    assert first.events_queued == developer_events
    assert first.events_delivered == 0 and first.events_failed == 100  # one batch, then stop
    assert _pending(engine) == developer_events  # kept for the next sync, not lost

    fake.fail_meter_events = 2  # still flaky: two more failures, retried in the same sync
    with engine.begin() as conn:
        second = sync.sync(conn, CATALOG, now=now)
    assert second.events_queued == 0 and second.customers_created == 0
    assert second.events_failed == 2 and second.events_duplicate == 1
    assert second.events_delivered == developer_events - 1
    assert _pending(engine) == 0
    assert len(fake.meter_events) == developer_events  # each once, none lost
    event = next(
        e for e in fake.meter_events.values() if e.get("event_name") == "citybrain_audio_second"
    )
    assert (
        event["payload[value]"] == "1001" and event["payload[stripe_customer_id]"] in fake.customers
    )

    # Issued invoices: one Stripe invoice each, items = the lines in cents, finalised, once.
    assert first.invoices_created == 2 and second.invoices_created == 0
    with engine.connect() as conn:
        docs = {
            d.tenant_id: d
            for d in period_documents(conn, Period.parse("2026-10"))
            if d.kind == "invoice"
        }
    for tenant in (PARKEASY, ROADAI):
        doc = docs[tenant]
        inv = fake.invoices[doc.stripe_invoice_id or ""]
        assert inv["status"] == "open" and inv["currency"] == "cny"
        assert inv["metadata[citybrain_number]"] == doc.number
        cents = sum(int(i["amount"]) for i in fake.items if i["invoice"] == inv["id"])
        assert D(cents) / 100 == doc.total
    assert len(fake.invoices) == 2


def test_long_event_ids_are_hashed_into_stripes_identifier_limit() -> None:
    assert meter_identifier(4, "abc") == "4:abc"
    long = meter_identifier(4, "x" * 200)
    assert len(long) <= 100 and long.startswith("4:sha256:")
    assert long != meter_identifier(5, "x" * 200)
