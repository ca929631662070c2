"""The operator's period report: totals per tenant, product and domain, top consumers, revenue
share, chargeback allocation and a daily usage trend — as CSV, HTML (with an inline SVG chart
drawn here) or PDF (reportlab, with the same chart).

Figures come from the period's documents (void invoices excluded), so the report always agrees
with what was invoiced and charged back; the trend counts the period's usage events per day with
one SQL aggregate.
"""

from __future__ import annotations

import csv
import html
import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, select

from billing.catalog import BillingCatalog
from billing.invoices import Document, period_documents
from billing.money import DEFAULT_CURRENCY
from billing.periods import Period
from billing.rating import day_of
from billing.tables import usage_event

__all__ = ["PeriodReport", "build_report", "render", "to_csv", "to_html", "to_pdf", "trend_svg"]

FORMATS = ("csv", "html", "pdf")
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class PeriodReport:
    """Everything the rendered reports show, computed once."""

    period: str
    currency: str
    generated_at: datetime
    invoiced: Decimal
    charged_back: Decimal
    commission: Decimal
    publisher_share: Decimal
    late: Decimal
    documents: int
    #: (tenant slug, tenant kind, document number, total)
    by_tenant: list[tuple[str, str, str, Decimal]] = field(default_factory=list)
    #: (product handle, domain, quantity, unit, amount)
    by_product: list[tuple[str, str, Decimal, str, Decimal]] = field(default_factory=list)
    #: (domain, amount)
    by_domain: list[tuple[str, Decimal]] = field(default_factory=list)
    #: (tenant slug, amount), largest first
    top_consumers: list[tuple[str, Decimal]] = field(default_factory=list)
    #: (publisher slug, gross, operator commission, publisher share)
    revenue_share: list[tuple[str, Decimal, Decimal, Decimal]] = field(default_factory=list)
    #: (government tenant slug, domain, amount)
    chargeback: list[tuple[str, str, Decimal]] = field(default_factory=list)
    #: (day, usage events) for every day of the period
    trend: list[tuple[str, int]] = field(default_factory=list)

    @property
    def total(self) -> Decimal:
        """Invoiced plus charged back."""
        return self.invoiced + self.charged_back


def _events_by_day(conn: Connection, period: Period) -> dict[str, int]:
    day = day_of(conn, usage_event.c.at).label("day")
    rows = conn.execute(
        select(day, func.count())
        .where(usage_event.c.at >= period.start, usage_event.c.at < period.end)
        .group_by(day)
    )
    return {r[0]: int(r[1]) for r in rows}


def build_report(
    conn: Connection,
    period: Period,
    catalog: BillingCatalog,
    *,
    top: int = 10,
    now: datetime | None = None,
    documents: list[Document] | None = None,
) -> PeriodReport:
    """Compute the report of a period (closed or not: an open period shows no documents)."""
    docs = [d for d in (documents or period_documents(conn, period)) if d.status != "void"]
    slug = catalog.tenant_slug
    by_tenant = sorted(
        (
            (
                slug(d.tenant_id),
                catalog.tenants[d.tenant_id].kind if d.tenant_id in catalog.tenants else "?",
                d.number,
                d.total,
            )
            for d in docs
        ),
        key=lambda r: r[0],
    )
    products: dict[tuple[str, str, str], list[Decimal]] = defaultdict(lambda: [_ZERO, _ZERO])
    domains: dict[str, Decimal] = defaultdict(Decimal)
    publishers: dict[str, list[Decimal]] = defaultdict(lambda: [_ZERO, _ZERO, _ZERO])
    chargeback: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    late = _ZERO
    for d in docs:
        for line in d.lines:
            entry = products[(line.product, line.domain, line.unit)]
            if line.kind == "usage":
                entry[0] += line.quantity
            entry[1] += line.amount
            domains[line.domain] += line.amount
            pub = publishers[slug(line.publisher_tenant_id)]
            pub[0] += line.amount
            pub[1] += line.commission
            pub[2] += line.publisher_share
            if d.kind == "statement":
                chargeback[(slug(d.tenant_id), line.domain)] += line.amount
            if line.late:
                late += line.amount
    consumers = sorted(((slug(d.tenant_id), d.total) for d in docs), key=lambda r: (-r[1], r[0]))
    counts = _events_by_day(conn, period)
    return PeriodReport(
        period=str(period),
        currency=docs[0].currency if docs else DEFAULT_CURRENCY,
        generated_at=now or datetime.now(UTC),
        invoiced=sum((d.total for d in docs if d.kind == "invoice"), _ZERO),
        charged_back=sum((d.total for d in docs if d.kind == "statement"), _ZERO),
        commission=sum((d.commission for d in docs), _ZERO),
        publisher_share=sum((d.publisher_share for d in docs), _ZERO),
        late=late,
        documents=len(docs),
        by_tenant=by_tenant,
        by_product=sorted(
            ((h, dom, q, unit, a) for (h, dom, unit), (q, a) in products.items()),
            key=lambda r: (-r[4], r[0]),
        ),
        by_domain=sorted(domains.items(), key=lambda r: (-r[1], r[0])),
        top_consumers=consumers[:top],
        revenue_share=sorted(
            ((p, g, c, s) for p, (g, c, s) in publishers.items()), key=lambda r: (-r[1], r[0])
        ),
        chargeback=sorted(((t, dom, a) for (t, dom), a in chargeback.items())),
        trend=[(day.isoformat(), counts.get(day.isoformat(), 0)) for day in period.days()],
    )


def _m(amount: Decimal) -> str:
    return f"{amount:.2f}"


def _q(quantity: Decimal) -> str:
    text = format(quantity.normalize(), "f")
    return text


# ----------------------------------------------------------------------------------- CSV


def to_csv(report: PeriodReport) -> str:
    """One CSV table: ``section,key,detail,quantity,amount`` (amounts in the report currency)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["section", "key", "detail", "quantity", "amount"])
    cur = report.currency
    w.writerow(["total", "invoiced", cur, "", _m(report.invoiced)])
    w.writerow(["total", "charged_back", cur, "", _m(report.charged_back)])
    w.writerow(["total", "all", cur, "", _m(report.total)])
    w.writerow(["total", "operator_commission", cur, "", _m(report.commission)])
    w.writerow(["total", "publisher_share", cur, "", _m(report.publisher_share)])
    w.writerow(["total", "late_usage", cur, "", _m(report.late)])
    for slug, kind, number, total in report.by_tenant:
        w.writerow(["tenant", slug, f"{kind} {number}", "", _m(total)])
    for handle, domain, qty, unit, amount in report.by_product:
        w.writerow(["product", handle, f"{domain} ({unit})", _q(qty), _m(amount)])
    for domain, amount in report.by_domain:
        w.writerow(["domain", domain, "", "", _m(amount)])
    for i, (slug, amount) in enumerate(report.top_consumers, 1):
        w.writerow(["top_consumer", slug, f"#{i}", "", _m(amount)])
    for pub, gross, commission, share in report.revenue_share:
        w.writerow(["revenue_share", pub, "gross", "", _m(gross)])
        w.writerow(["revenue_share", pub, "operator_commission", "", _m(commission)])
        w.writerow(["revenue_share", pub, "publisher_share", "", _m(share)])
    for tenant, domain, amount in report.chargeback:
        w.writerow(["chargeback", tenant, domain, "", _m(amount)])
    for day, events in report.trend:
        w.writerow(["trend", day, "events", events, ""])
    return buf.getvalue()


# ---------------------------------------------------------------------------------- HTML


def trend_svg(report: PeriodReport, *, width: int = 720, height: int = 220) -> str:
    """A bar chart of usage events per day, as a standalone ``<svg>`` element."""
    pad_l, pad_b, pad_t, pad_r = 56, 28, 16, 8
    days = report.trend
    peak = max((n for _, n in days), default=0) or 1
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    bar_w = plot_w / max(len(days), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Usage events per day, '
        f'{html.escape(report.period)}">',
        f"<title>Usage events per day, {html.escape(report.period)}</title>",
        f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width - pad_r}" y2="{pad_t + plot_h}" '
        'stroke="#444"/>',
        f'<text x="{pad_l - 6}" y="{pad_t + 4}" text-anchor="end" font-size="10">{peak}</text>',
        f'<text x="{pad_l - 6}" y="{pad_t + plot_h}" text-anchor="end" font-size="10">0</text>',
    ]
    for i, (day, n) in enumerate(days):
        h = plot_h * n / peak
        x = pad_l + i * bar_w
        parts.append(
            f'<rect class="bar" x="{x + 1:.1f}" y="{pad_t + plot_h - h:.1f}" '
            f'width="{max(bar_w - 2, 1):.1f}" height="{h:.1f}" fill="#2a6fdb">'
            f"<title>{day}: {n} events</title></rect>"
        )
        if i % 5 == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{height - 10}" text-anchor="middle" '
                f'font-size="10">{day[8:]}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _sections(report: PeriodReport) -> list[tuple[str, list[str], list[list[str]]]]:
    return [
        (
            "Totals",
            ["", f"amount ({report.currency})"],
            [
                ["Invoiced (developers)", _m(report.invoiced)],
                ["Charged back (government)", _m(report.charged_back)],
                ["Total", _m(report.total)],
                ["Operator commission", _m(report.commission)],
                ["Publisher share", _m(report.publisher_share)],
                ["of which late usage", _m(report.late)],
            ],
        ),
        (
            "Per tenant",
            ["tenant", "kind", "document", "total"],
            [[s, k, n, _m(t)] for s, k, n, t in report.by_tenant],
        ),
        (
            "Per product",
            ["product", "domain", "quantity", "unit", "amount"],
            [[h, d, _q(q), u, _m(a)] for h, d, q, u, a in report.by_product],
        ),
        ("Per domain", ["domain", "amount"], [[d, _m(a)] for d, a in report.by_domain]),
        (
            "Top consumers",
            ["#", "tenant", "amount"],
            [[str(i), s, _m(a)] for i, (s, a) in enumerate(report.top_consumers, 1)],
        ),
        (
            "Revenue share",
            ["publisher", "gross", "operator commission", "publisher share"],
            [[p, _m(g), _m(c), _m(s)] for p, g, c, s in report.revenue_share],
        ),
        (
            "Government chargeback",
            ["tenant", "domain", "amount"],
            [[t, d, _m(a)] for t, d, a in report.chargeback],
        ),
    ]


def to_html(report: PeriodReport) -> str:
    """A self-contained HTML page (no external assets) with the trend as inline SVG."""
    title = f"CityBrain billing report {report.period}"
    body = [f"<h1>{html.escape(title)}</h1>"]
    body.append(
        f"<p>Generated {html.escape(report.generated_at.isoformat(timespec='seconds'))}; "
        f"{report.documents} documents; amounts in {html.escape(report.currency)}.</p>"
    )
    body.append("<h2>Usage trend (events per day)</h2>")
    body.append(trend_svg(report))
    for name, headers, rows in _sections(report):
        body.append(f"<h2>{html.escape(name)}</h2>")
        body.append(_table(headers, rows))
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>'
        f"{html.escape(title)}</title><style>{style}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


# ----------------------------------------------------------------------------------- PDF


def _trend_drawing(report: PeriodReport, width: float = 480, height: float = 150) -> Any:
    from reportlab.graphics.shapes import Drawing, Line, Rect, String
    from reportlab.lib import colors

    d = Drawing(width, height)
    pad_l, pad_b = 40.0, 18.0
    plot_w, plot_h = width - pad_l - 4, height - pad_b - 8
    peak = max((n for _, n in report.trend), default=0) or 1
    bar_w = plot_w / max(len(report.trend), 1)
    d.add(Line(pad_l, pad_b, width - 4, pad_b, strokeColor=colors.black))
    d.add(String(pad_l - 4, pad_b + plot_h - 4, str(peak), fontSize=7, textAnchor="end"))
    d.add(String(pad_l - 4, pad_b, "0", fontSize=7, textAnchor="end"))
    for i, (day, n) in enumerate(report.trend):
        h = plot_h * n / peak
        x = pad_l + i * bar_w
        d.add(
            Rect(
                x + 0.5,
                pad_b,
                max(bar_w - 1, 0.5),
                h,
                fillColor=colors.HexColor("#2a6fdb"),
                strokeColor=None,
            )
        )
        if i % 5 == 0:
            d.add(String(x + bar_w / 2, 4, day[8:], fontSize=7, textAnchor="middle"))
    return d


def to_pdf(report: PeriodReport) -> bytes:
    """A PDF of the report (reportlab), with the trend chart drawn as vector graphics."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf, pagesize=A4, title=f"CityBrain billing report {report.period}", invariant=1
    )
    styles = getSampleStyleSheet()
    story: list[Any] = [
        Paragraph(f"CityBrain billing report {html.escape(report.period)}", styles["Title"]),
        Paragraph(
            f"{report.documents} documents; amounts in {html.escape(report.currency)}.",
            styles["Normal"],
        ),
        Spacer(1, 8),
        Paragraph("Usage trend (events per day)", styles["Heading2"]),
        _trend_drawing(report),
    ]
    grid = TableStyle(
        [
            ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef9")),
            ("FONTSIZE", (0, 0), (-1, -1), 8),
        ]
    )
    for name, headers, rows in _sections(report):
        story.append(Paragraph(html.escape(name), styles["Heading2"]))
        if rows:
            table = Table([headers, *rows], repeatRows=1, hAlign="LEFT")
            table.setStyle(grid)
            story.append(table)
        else:
            story.append(Paragraph("none", styles["Normal"]))
    doc.build(story)
    return buf.getvalue()


def render(report: PeriodReport, fmt: str) -> bytes:
    """The report in ``csv``, ``html`` or ``pdf`` as bytes (text formats in UTF-8)."""
    if fmt == "csv":
        return to_csv(report).encode()
    if fmt == "html":
        return to_html(report).encode()
    if fmt == "pdf":
        return to_pdf(report)
    raise ValueError(f"report format must be one of {', '.join(FORMATS)}")
