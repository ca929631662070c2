"""The portal's main story in a real browser, one user per browser context:

1. a developer (parkeasy) signs in with the city account (OIDC code flow + PKCE), finds a
   restricted dataset and asks for access with a purpose;
2. its owner (city-management) signs in and approves;
3. the developer creates an API key, calls a model with it through the SDK, and the call
   shows in the portal's usage chart;
4. the operator closes last month's billing and downloads the report and an invoice as PDF.

Each step leaves a screenshot in var/screenshots/.
"""

from __future__ import annotations

import io
import re
import time
from typing import Any

import numpy as np
from citybrain_sdk import Client
from pypdf import PdfReader

from tests.e2e.conftest import Platform
from tests.e2e.helpers import SCREENSHOTS, shot, sign_in_oidc

DATASET = "city-management.manhole-covers"
MODEL = "traffic-police.flow-smoother"


def _developer_requests_access(page: Any) -> None:
    sign_in_oidc(page, "parkeasy-admin")
    shot(page, "01-developer-signed-in")
    page.get_by_role("searchbox", name="Search the catalog").fill("manhole")
    page.get_by_role("button", name="Search").click()
    card = page.locator(".card", has_text="Manhole cover inventory")
    assert card.locator(".badge").inner_text() == "Restricted"
    card.get_by_role("link", name="Manhole cover inventory").click()
    page.wait_for_url(f"**/catalog/{DATASET}")
    page.get_by_label("Purpose").fill("Route planning around manholes under inspection.")
    page.get_by_role("button", name="Request access").click()
    page.get_by_text("sent; you will see the decision here").wait_for()
    assert "Pending" in page.locator("#access").inner_text()
    shot(page, "02-developer-requested-access")


def _owner_approves(page: Any) -> None:
    sign_in_oidc(page, "city-management-admin")
    page.get_by_role("link", name="Access").click()
    inbox = page.locator(".request-card", has_text="ParkEasy Technology Co.")
    assert "Route planning around manholes" in inbox.inner_text()
    inbox.get_by_label("Reason (required)").fill("Approved for the pilot.")
    shot(page, "03-owner-inbox")
    inbox.get_by_role("button", name="Approve").click()
    page.get_by_text("approved: the grant is in force").wait_for()
    assert page.locator(".request-card").count() == 0
    shot(page, "04-owner-approved")


def _developer_calls_with_a_new_key(page: Any, platform: Platform) -> None:
    page.goto(f"/catalog/{DATASET}")
    assert "You hold a grant until" in page.locator("#access").inner_text()
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("route planner")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("Secret", exact=True).input_value()
    assert secret.startswith("cbk_")
    shot(page, "05-developer-key-created")
    # The program the developer writes, with the SDK and that key.
    with Client(platform.url, api_key=secret) as cb:
        flow = np.array([[10, 30, 12, 28, 14, 35, 11, 29]], np.float32)
        out = cb.models.infer(MODEL, {"flow": flow})
    assert out["smoothed"].shape == (1, 8)
    page.get_by_role("link", name="Usage").click()
    deadline = time.monotonic() + 30  # the spool flushes every 0.2 s; a bound on waiting
    while not page.locator("svg.chart rect").count():
        assert time.monotonic() < deadline, "the call never showed in the usage chart"
        time.sleep(0.3)
        page.reload()
    totals = page.locator("table", has_text=MODEL)
    assert MODEL in totals.inner_text()
    shot(page, "06-developer-usage-chart")


def _operator_runs_billing(page: Any, platform: Platform) -> None:
    sign_in_oidc(page, "operator-admin")
    page.get_by_role("link", name="Operator").click()
    assert page.get_by_label("Month to close").input_value() == platform.billed_month
    page.get_by_role("button", name="Run billing").click()
    page.get_by_text(f"{platform.billed_month} closed:").wait_for()
    invoice = page.locator("tr", has_text="INV-")
    assert "parkeasy" in invoice.inner_text() and "2.00 CNY" in invoice.inner_text()
    shot(page, "07-operator-billing-run")
    with page.expect_download() as download:
        page.locator("#report-pdf").click()
    report = PdfReader(io.BytesIO(download.value.path().read_bytes()))
    text = "".join(p.extract_text() for p in report.pages)
    assert f"CityBrain billing report {platform.billed_month}" in text
    assert "parkeasy" in text
    download.value.save_as(SCREENSHOTS / f"report-{platform.billed_month}.pdf")
    with page.expect_download() as download:
        invoice.get_by_role("link", name="PDF").click()
    pdf = PdfReader(io.BytesIO(download.value.path().read_bytes()))
    assert "2.00 CNY" in pdf.pages[0].extract_text()
    download.value.save_as(SCREENSHOTS / "invoice.pdf")
    invoice.get_by_role("link", name=re.compile(r"^INV-")).click()
    assert page.get_by_role("heading", level=1).inner_text().startswith("Invoice INV-")
    # The 40 calls of last month, at 0.05 CNY each.
    cells = page.locator("tbody tr").first.locator("td").all_inner_texts()
    assert cells[2:] == ["40", "calls", "0.05", "2.00"]
    shot(page, "08-operator-invoice")


def test_developer_owner_and_operator(platform: Platform, new_context: Any) -> None:
    developer = new_context().new_page()
    _developer_requests_access(developer)
    _owner_approves(new_context().new_page())
    _developer_calls_with_a_new_key(developer, platform)
    _operator_runs_billing(new_context().new_page(), platform)
