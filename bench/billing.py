"""Benchmark of the billing run: rate 10 million usage events of a month on PostgreSQL, then
render the month's reports.

Run from the repository root::

    .venv/bin/python bench/billing.py [--rows 10000000]

It creates a temporary database on ``CITYBRAIN_TEST_PG_ADMIN``'s server (127.0.0.1:5432 by
default; dropped at the end), loads the usage rows with one ``INSERT ... SELECT generate_series`` (indexes built afterwards, as a bulk load would),
and prints, side by side:

(i)   the floor: one plain scan of the period (``count(*), sum(quantity)``);
(ii)  the billing run (:func:`billing.invoices.close_period`: SQL aggregates for on-time and
      late usage, pricing, documents and lines written), and its ratio to the floor;
(iii) a second run of the same period (idempotent: reads the documents back);
(iv)  the month's report: building it (documents + daily trend aggregate) and rendering CSV,
      HTML (inline SVG) and PDF.

Numbers are for the machine it runs on; compare them with each other, not across machines.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# The repository first: this folder holds a billing.py that must not shadow the package.
sys.path.insert(0, str(REPO_ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from billing.catalog import BillingCatalog, ProductInfo, TenantInfo  # noqa: E402
from billing.invoices import RunConfig, close_period  # noqa: E402
from billing.periods import Period  # noqa: E402
from billing.plan_store import set_plan  # noqa: E402
from billing.plans import PricePlan  # noqa: E402
from billing.reports import build_report, render  # noqa: E402
from billing.tables import metadata, rating_metadata  # noqa: E402
from tests.utils.postgres import scratch_database  # noqa: E402

TENANTS, PRODUCTS = 200, 50
KINDS = ("operator", "agency", "agency", "district", "developer", "developer", "developer")
DOMAINS = ("traffic", "safety", "city-management", "tourism", "environment", "health")
UNITS = ("call", "call", "row", "audio-second", "byte")
PERIOD = Period.parse("2026-10")


def _catalog() -> BillingCatalog:
    tenants = {
        i: TenantInfo(i, f"tenant-{i:03d}", KINDS[i % len(KINDS)]) for i in range(1, TENANTS + 1)
    }
    products = {
        p: ProductInfo(
            p, f"tenant-{1 + p % 10:03d}.product-{p:02d}", 1 + p % 10, DOMAINS[p % len(DOMAINS)]
        )
        for p in range(1, PRODUCTS + 1)
    }
    return BillingCatalog(tenants=tenants, products=products)


def _plan(p: int) -> PricePlan:
    unit = UNITS[p % len(UNITS)]
    plan_unit = "mb" if unit == "byte" else unit
    kind = ("per_unit", "graduated", "subscription", "free")[p % 4]
    if kind == "per_unit":
        return PricePlan.from_dict({"kind": kind, "unit": plan_unit, "unit_price": "0.0013"})
    if kind == "graduated":
        tiers = [
            {"up_to": "10000", "unit_price": "0.002"},
            {"up_to": "100000", "unit_price": "0.001"},
            {"up_to": None, "unit_price": "0.0004"},
        ]
        return PricePlan.from_dict({"kind": kind, "unit": plan_unit, "tiers": tiers})
    if kind == "subscription":
        return PricePlan.from_dict(
            {
                "kind": kind,
                "unit": plan_unit,
                "monthly_fee": "199",
                "included_units": "50000",
                "overage_price": "0.003",
            }
        )
    return PricePlan.from_dict({"kind": "free", "unit": plan_unit})


def _load(engine, rows: int) -> None:  # type: ignore[no-untyped-def]
    units = "ARRAY[" + ",".join(f"'{u}'" for u in UNITS) + "]"
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE usage_event DROP CONSTRAINT pk_usage_event"))
        conn.execute(text("DROP INDEX ix_usage_event_tenant_at"))
        conn.execute(text("DROP INDEX ix_usage_event_product_at"))
        conn.execute(text("ALTER TABLE usage_event SET UNLOGGED"))
        # One row in 1000 belongs to September and arrives late (rated as late usage).
        conn.execute(
            text(
                f"""
                INSERT INTO usage_event (tenant_id, id, key_id, product, product_id, version, unit,
                                         quantity, at, latency_ms, request_id, received_at)
                SELECT (1 + (i * 7919) % {TENANTS})::int,
                       'ev-' || i,
                       NULL,
                       'tenant-' || lpad((1 + p % 10)::text, 3, '0') || '.product-' || lpad(p::text, 2, '0'),
                       p, 1,
                       ({units})[1 + p % {len(UNITS)}],
                       CASE WHEN p % {len(UNITS)} = 4 THEN 20000 + i % 50000 ELSE 1 + i % 5 END,
                       ts, 3.5, 'rq-' || i, ts + interval '2 seconds'
                FROM (
                    SELECT i, (1 + ((i / {TENANTS}) * 31 + i) % {PRODUCTS})::int AS p,
                           CASE WHEN i % 1000 = 0
                                THEN timestamptz '2026-09-01 00:00:00+00' + (i % 2592000) * interval '1 second'
                                ELSE timestamptz '2026-10-01 00:00:00+00' + (i % 2678400) * interval '1 second'
                           END AS ts
                    FROM generate_series(1::bigint, :rows) AS i
                ) AS g
                """
            ),
            {"rows": rows},
        )
        conn.execute(text("ALTER TABLE usage_event SET LOGGED"))
        conn.execute(
            text(
                "ALTER TABLE usage_event ADD CONSTRAINT pk_usage_event PRIMARY KEY (tenant_id, id)"
            )
        )
        conn.execute(text("CREATE INDEX ix_usage_event_tenant_at ON usage_event (tenant_id, at)"))
        conn.execute(text("CREATE INDEX ix_usage_event_product_at ON usage_event (product, at)"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE usage_event"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    with scratch_database("citybrain_bench_billing") as db:
        engine = create_engine(db.url)
        try:
            metadata.create_all(engine)
            rating_metadata.create_all(engine)
            catalog = _catalog()
            with engine.begin() as conn:
                for p in catalog.products:
                    set_plan(
                        conn, p, _plan(p), now=datetime(2026, 8, 20, tzinfo=UTC), actor="bench"
                    )
            t0 = time.perf_counter()
            _load(engine, args.rows)
            load_s = time.perf_counter() - t0
            print(
                f"usage rows: {args.rows:,} (generate_series + index build + analyze: {load_s:.1f} s)"
            )

            t0 = time.perf_counter()
            with engine.connect() as conn:
                n, total = conn.execute(
                    text(
                        "SELECT count(*), sum(quantity) FROM usage_event WHERE at >= :a AND at < :b"
                    ),
                    {"a": PERIOD.start, "b": PERIOD.end},
                ).one()
            scan_s = time.perf_counter() - t0
            print(f"(i)   plain scan of {PERIOD} ({n:,} events, sum {total}): {scan_s:.2f} s")

            now = PERIOD.end.replace(hour=1)
            t0 = time.perf_counter()
            with engine.begin() as conn:
                result = close_period(
                    conn, PERIOD, catalog, now=now, config=RunConfig(commission_rate=Decimal("0.1"))
                )
            run_s = time.perf_counter() - t0
            lines = sum(len(d.lines) for d in result.documents)
            late = sum(1 for d in result.documents for x in d.lines if x.late)
            billed = sum((d.total for d in result.documents), Decimal(0))
            print(
                f"(ii)  billing run {PERIOD}: {run_s:.2f} s = {run_s / scan_s:.2f}x the plain scan; "
                f"{len(result.documents)} documents, {lines} lines ({late} late), total {billed} CNY, "
                f"{args.rows / run_s:,.0f} events/s"
            )
            t0 = time.perf_counter()
            with engine.begin() as conn:
                again = close_period(conn, PERIOD, catalog, now=now, config=RunConfig())
            rerun_s = time.perf_counter() - t0
            assert not again.created and again.documents == result.documents
            print(
                f"(iii) second run (idempotent, same documents): {rerun_s:.3f} s = {rerun_s / run_s:.3f}x the first"
            )

            t0 = time.perf_counter()
            with engine.connect() as conn:
                report = build_report(conn, PERIOD, catalog)
            build_s = time.perf_counter() - t0
            sizes = {}
            times = {}
            for fmt in ("csv", "html", "pdf"):
                t1 = time.perf_counter()
                sizes[fmt] = len(render(report, fmt))
                times[fmt] = time.perf_counter() - t1
            print(
                f"(iv)  report: build {build_s:.2f} s ({build_s / scan_s:.2f}x the plain scan); render "
                + ", ".join(f"{f} {times[f] * 1000:.0f} ms ({sizes[f]:,} B)" for f in times)
            )
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
