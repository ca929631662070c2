"""The operator's period report as CSV, HTML (inline SVG trend) and PDF (text read back with
pypdf)."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from pypdf import PdfReader
from sqlalchemy import Engine

from billing.invoices import RunConfig, close_period
from billing.periods import Period
from billing.reports import build_report, render, to_csv, to_html
from tests.unit.billing.billing_city import CATALOG
from tests.unit.billing.test_rating import CLOSE_OCT, _october


@pytest.fixture
def engine(rating_engine: Engine) -> Engine:
    """Billing's usage and rating tables, on SQLite and on PostgreSQL (see conftest.py)."""
    return rating_engine


OCT = Period.parse("2026-10")


def _report(engine: Engine):  # type: ignore[no-untyped-def]
    _october(engine)
    with engine.begin() as conn:
        close_period(conn, OCT, CATALOG, now=CLOSE_OCT, config=RunConfig())
        return build_report(conn, OCT, CATALOG, now=datetime(2026, 11, 2, tzinfo=UTC))


def test_report_totals_top_consumers_and_revenue_share(engine: Engine) -> None:
    report = _report(engine)
    assert report.invoiced == D("119.00")  # parkeasy 5.00 + roadai 114.00
    assert report.charged_back == D("10.60")  # xihu 10.40 + traffic-police 0.20
    assert report.commission + report.publisher_share == report.total == D("129.60")
    assert report.top_consumers[:2] == [("roadai", D("114.00")), ("xihu-district", D("10.40"))]
    assert dict((p, g) for p, g, _, _ in report.revenue_share) == {
        "parkeasy": D("110.00"),
        "traffic-police": D("16.50"),
        "data-bureau": D("3.10"),
    }
    assert ("xihu-district", "traffic", D("10.00")) in report.chargeback
    assert len(report.trend) == 31 and dict(report.trend)["2026-10-20"] == 2


def test_csv_report_rows_add_up(engine: Engine) -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(_report(engine)))))
    totals = {r["key"]: D(r["amount"]) for r in rows if r["section"] == "total"}
    assert totals["all"] == D("129.60") and totals["invoiced"] == D("119.00")
    tenants = [r for r in rows if r["section"] == "tenant"]
    assert sum(D(r["amount"]) for r in tenants) == totals["all"]
    products = [r for r in rows if r["section"] == "product"]
    assert sum(D(r["amount"]) for r in products) == totals["all"]
    assert (
        sum(int(r["quantity"]) for r in rows if r["section"] == "trend") == 290
    )  # every October event, the late one included


def test_html_report_has_an_inline_svg_trend_and_escapes_names(engine: Engine) -> None:
    page = to_html(_report(engine))
    assert page.startswith("<!doctype html>") and "<script" not in page
    svg = re.search(r"<svg .*?</svg>", page, re.S)
    assert svg is not None
    assert len(re.findall(r'<rect class="bar"', svg.group(0))) == 31
    assert "<title>2026-10-20: 2 events</title>" in svg.group(0)
    assert (
        "129.60" in page
        and "roadai" in page
        and "http" not in page.replace("http://www.w3.org/2000/svg", "")
    )


def test_pdf_report_text_carries_the_totals(engine: Engine) -> None:
    pdf = render(_report(engine), "pdf")
    assert pdf.startswith(b"%PDF")
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert "CityBrain billing report 2026-10" in text
    for figure in ("119.00", "10.60", "129.60", "114.00", "roadai", "xihu-district"):
        assert figure in text, figure
    assert "Usage trend" in text
