"""Invoices and chargeback statements as PDF (reportlab), in the reader's language.

The figures are the stored document's (``billing.invoices.Document``): nothing is rated again
here, so the PDF always agrees with the invoice the API returns. Chinese text uses reportlab's
built-in STSong-Light CID font (Adobe's Simplified Chinese font, which every PDF reader has),
so no font file ships with the platform.
"""

from __future__ import annotations

import html
import io
from decimal import Decimal
from typing import Any, Literal

from billing.invoices import Document
from marketplace.portal.i18n import Translator

_CJK_FONT = "STSong-Light"


def _fonts(lang: str) -> tuple[str, str]:
    """(regular, bold) font names for ``lang``."""
    if lang != "zh":
        return "Helvetica", "Helvetica-Bold"
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont

    if _CJK_FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(_CJK_FONT))
    return _CJK_FONT, _CJK_FONT


def _num(d: Decimal) -> str:
    return format(d.normalize(), "f") if d != d.to_integral() else str(int(d))


def document_pdf(doc: Document, *, tenant: str, publishers: dict[int, str], t: Translator) -> bytes:
    """The PDF of one invoice or statement.

    Args:
        doc: The document with its lines.
        tenant: The billed tenant's name and slug, as the heading shows it.
        publishers: Tenant slugs by id (a statement's allocation by publisher).
        t: The reader's translator; its language picks the font too.
    """
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    regular, bold = _fonts(t.lang)
    styles = getSampleStyleSheet()
    for name in ("Title", "Heading2", "Normal"):
        styles[name].fontName = bold if name != "Normal" else regular
    kind = t(f"doc.kind.{doc.kind}")
    buf = io.BytesIO()
    pdf = SimpleDocTemplate(buf, pagesize=A4, title=f"{kind} {doc.number}", invariant=1)

    def p(text: str, style: str = "Normal") -> Any:
        return Paragraph(html.escape(text), styles[style])

    facts = [
        [t("doc.number"), doc.number],
        [t("doc.tenant"), tenant],
        [t("doc.period"), doc.period],
        [t("doc.status"), t.choice("doc.status", doc.status)],
        [t("doc.issued"), doc.issued_at.strftime("%Y-%m-%d") if doc.issued_at else "—"],
        [t("doc.total"), f"{doc.total:.2f} {doc.currency}"],
    ]
    grid = TableStyle(
        [
            ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
            ("FONTNAME", (0, 0), (-1, -1), regular),
            ("FONTSIZE", (0, 0), (-1, -1), 8),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef9")),
        ]
    )
    plain = TableStyle([("FONTNAME", (0, 0), (-1, -1), regular), ("FONTSIZE", (0, 0), (-1, -1), 9)])
    story: list[Any] = [
        # No "·" here: the CJK font's character map lacks it.
        p(f"CityBrain {kind} {doc.number}", "Title"),
        Table(facts, hAlign="LEFT", style=plain),
        Spacer(1, 10),
        p(t("doc.lines"), "Heading2"),
    ]
    head = [
        t("doc.product"),
        t("doc.description"),
        t("doc.quantity"),
        t("doc.unit"),
        t("doc.unit_price"),
        t("doc.amount"),
    ]
    rows = [
        [
            x.product,
            x.description + (f" ({t('doc.late')})" if x.late else ""),
            _num(x.quantity),
            t.choice("unit", x.unit),
            _num(x.unit_price),
            f"{x.amount:.2f}",
        ]
        for x in doc.lines
    ]
    rows.append(["", "", "", "", t("doc.total"), f"{doc.total:.2f}"])
    table = Table([head, *rows], repeatRows=1, hAlign="LEFT")
    table.setStyle(grid)
    story.append(table)
    if doc.kind == "statement":
        sections: tuple[tuple[Literal["domain", "publisher"], str], ...] = (
            ("domain", "doc.by_domain"),
            ("publisher", "doc.by_publisher"),
        )
        for by, title in sections:
            alloc = doc.allocation(by)
            names = {
                k: (publishers.get(int(k), k) if by == "publisher" else t.choice("domain", k))
                for k in alloc
            }
            story += [Spacer(1, 8), p(t(title), "Heading2")]
            alloc_table = Table(
                [[t("doc.share"), t("doc.amount")]]
                + [[names[k], f"{v:.2f}"] for k, v in alloc.items()],
                hAlign="LEFT",
            )
            alloc_table.setStyle(grid)
            story.append(alloc_table)
    story += [Spacer(1, 12), p(t(f"doc.footer.{doc.kind}"))]
    pdf.build(story)
    return buf.getvalue()
