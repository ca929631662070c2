"""The usage chart (SVG drawn on the server) and invoices as PDF."""

from __future__ import annotations

import io
import re
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from pypdf import PdfReader

from billing.invoices import Document, DocumentLine
from marketplace.portal.charts import daily_bars
from marketplace.portal.documents import document_pdf
from marketplace.portal.i18n import Translator
from marketplace.portal.signin import pkce_pair
from marketplace.portal.tryit import example_request


def test_bars_stack_by_product_in_proportion() -> None:
    days = [date(2026, 11, 1), date(2026, 11, 2)]
    svg = daily_bars(
        days,
        {"a.model": {days[0]: Decimal(1), days[1]: Decimal(3)}, "b.data": {days[1]: Decimal(2)}},
        title="Calls",
        description="desc",
    )
    heights = [
        float(h)
        for h in re.findall(
            r'<rect x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)" fill', svg
        )
    ]
    # Day 1: a=1; day 2: a=3, b=2; the axis top is 5 (a nice ceiling of 5).
    assert heights[1] == pytest.approx(heights[0] * 3, abs=0.2)
    assert heights[2] == pytest.approx(heights[0] * 2, abs=0.2)
    assert svg.count("<title") == 1 + 3  # the chart's, and one per bar
    assert 'role="img"' in svg and "a.model" in svg and "b.data" in svg


def test_chart_text_is_escaped() -> None:
    day = date(2026, 11, 1)
    svg = daily_bars([day], {"<script>x</script>": {day: 1}}, title="<b>", description="&")
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "<b>" not in svg


def _doc(kind: str) -> Document:
    line = DocumentLine(
        position=1,
        kind="usage",
        product="traffic-police.flow-smoother",
        product_id=1,
        publisher_tenant_id=2,
        domain="traffic",
        unit="call",
        description="Metered calls",
        quantity=Decimal(40),
        unit_price=Decimal("0.05"),
        amount=Decimal("2.00"),
        commission=Decimal("0.20"),
        publisher_share=Decimal("1.80"),
        usage_period="2026-11",
        late=False,
        plan_version=1,
    )
    now = datetime(2026, 12, 1, tzinfo=UTC)
    return Document(
        id=1,
        number=f"{'INV' if kind == 'invoice' else 'CBS'}-2026-11-000009",
        kind=kind,
        tenant_id=9,
        period="2026-11",
        status="issued",
        currency="CNY",
        total=Decimal("2.00"),
        commission=Decimal("0.20"),
        publisher_share=Decimal("1.80"),
        created_at=now,
        issued_at=now,
        paid_at=None,
        voided_at=None,
        stripe_invoice_id=None,
        lines=(line,),
    )


def test_an_invoice_pdf_shows_its_number_lines_and_total() -> None:
    pdf = document_pdf(
        _doc("invoice"),
        tenant="ParkEasy (parkeasy)",
        publishers={2: "traffic-police"},
        t=Translator("en"),
    )
    text = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert "INV-2026-11-000009" in text and "2.00 CNY" in text
    assert "traffic-police.flow-smoother" in text and "ParkEasy (parkeasy)" in text


def test_a_chinese_statement_pdf_uses_a_cjk_font_and_allocates_costs() -> None:
    pdf = document_pdf(
        _doc("statement"), tenant="交警支队", publishers={2: "traffic-police"}, t=Translator("zh")
    )
    reader = PdfReader(io.BytesIO(pdf))
    fonts = {
        str(f.get_object()["/BaseFont"])
        for page in reader.pages
        for f in page["/Resources"]["/Font"].values()
    }
    assert "/STSong-Light" in fonts
    text = "".join(p.extract_text() for p in reader.pages)
    assert "CBS-2026-11-000009" in text and "traffic-police" in text


def test_pkce_challenge_is_the_verifiers_s256() -> None:
    import base64
    import hashlib

    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    assert challenge == digest.decode() and pkce_pair()[0] != verifier


def test_the_try_it_example_fits_the_signature() -> None:
    import json

    body = json.loads(
        example_request(
            {
                "inputs": [
                    {"name": "flow", "datatype": "FP32", "shape": [-1, -1]},
                    {"name": "text", "datatype": "BYTES", "shape": [-1]},
                ]
            }
        )
    )
    flow, text = body["inputs"]
    assert flow["shape"] == [1, 8] and len(flow["data"]) == 8
    assert text["datatype"] == "BYTES" and len(text["data"]) == 1
    assert example_request(None) == ""


def test_model_cards_are_formatted_but_never_carry_markup() -> None:
    from marketplace.portal.markdown import render_markdown

    html = render_markdown(
        "# Card\n\n**Purpose.** `flow` in.\n\n<script>alert(1)</script>\n\n[x](javascript:alert(1))"
    )
    assert "<h1>Card</h1>" in html and "<strong>Purpose.</strong>" in html
    assert "<code>flow</code>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="javascript:' not in html


@pytest.mark.parametrize(
    ("value", "shown"),
    [(Decimal("40"), "40"), (Decimal("40.000"), "40"), (Decimal("0.050"), "0.05"), (2.5, "2.5")],
)
def test_quantities_are_written_plainly(value: Decimal | float, shown: str) -> None:
    from marketplace.api.routes.portal_common import plain_number

    assert plain_number(value) == shown
