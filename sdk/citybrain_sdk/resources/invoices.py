"""``cb.invoices``: invoices (developer tenants) and chargeback statements (government tenants),
listed per period and read with their lines (``billing:read``)."""

from __future__ import annotations

from citybrain_sdk._http import API_PREFIX, AsyncHTTP, Call, SyncHTTP, segment
from citybrain_sdk.types import Document, DocumentDetail, Page

__all__ = ["AsyncInvoices", "Invoices"]


def _list_call(kind: str, period: str | None, tenant: str | None, page: int, per_page: int) -> Call:
    params = {"period": period, "tenant": tenant, "page": page, "per_page": per_page}
    return Call("GET", f"{API_PREFIX}/{kind}", params=params)


def _get_call(kind: str, doc_id: int) -> Call:
    return Call("GET", f"{API_PREFIX}/{kind}/{segment(doc_id)}")


class Invoices:
    """Invoices and statements (``cb.invoices``)."""

    def __init__(self, http: SyncHTTP) -> None:
        self._http = http

    def list(
        self,
        *,
        period: str | None = None,
        tenant: str | None = None,
        page: int = 1,
        per_page: int = 20,
    ) -> Page[Document]:
        """The caller's invoices, newest period first.

        Args:
            period: A month such as ``"2026-11"`` (None: all).
            tenant: Operator only: one tenant's slug.
            page: The page, from 1.
            per_page: Invoices per page.

        Example:
            >>> [(i.number, i.period, i.total) for i in cb.invoices.list()]
            [('INV-2026-11-0003', '2026-11', Decimal('12.40'))]
        """
        doc = self._http.json(_list_call("invoices", period, tenant, page, per_page))
        return Page.parse(doc, Document.from_json)

    def get(self, invoice_id: int) -> DocumentDetail:
        """One invoice with its lines.

        Example:
            >>> inv = cb.invoices.get(3)
            >>> [(line.product, line.amount) for line in inv.lines]
        """
        return DocumentDetail.from_json(self._http.json(_get_call("invoices", invoice_id)))

    def statements(
        self,
        *,
        period: str | None = None,
        tenant: str | None = None,
        page: int = 1,
        per_page: int = 20,
    ) -> Page[Document]:
        """The caller's chargeback statements (government tenants), newest period first.

        Example:
            >>> cb.invoices.statements(period="2026-11").count
            1
        """
        doc = self._http.json(_list_call("statements", period, tenant, page, per_page))
        return Page.parse(doc, Document.from_json)

    def statement(self, statement_id: int) -> DocumentDetail:
        """One statement with its lines and its cost allocation by domain and publisher.

        Example:
            >>> cb.invoices.statement(7).allocation_by_domain
            {'traffic': Decimal('3.20')}
        """
        return DocumentDetail.from_json(self._http.json(_get_call("statements", statement_id)))


class AsyncInvoices:
    """Invoices and statements, awaited: the methods of :class:`Invoices`."""

    def __init__(self, http: AsyncHTTP) -> None:
        self._http = http

    async def list(
        self,
        *,
        period: str | None = None,
        tenant: str | None = None,
        page: int = 1,
        per_page: int = 20,
    ) -> Page[Document]:
        """The caller's invoices; see :meth:`Invoices.list`.

        Example:
            >>> page = await cb.invoices.list(period="2026-11")
        """
        doc = await self._http.json(_list_call("invoices", period, tenant, page, per_page))
        return Page.parse(doc, Document.from_json)

    async def get(self, invoice_id: int) -> DocumentDetail:
        """One invoice; see :meth:`Invoices.get`.

        Example:
            >>> inv = await cb.invoices.get(3)
        """
        return DocumentDetail.from_json(await self._http.json(_get_call("invoices", invoice_id)))

    async def statements(
        self,
        *,
        period: str | None = None,
        tenant: str | None = None,
        page: int = 1,
        per_page: int = 20,
    ) -> Page[Document]:
        """Chargeback statements; see :meth:`Invoices.statements`.

        Example:
            >>> page = await cb.invoices.statements()
        """
        doc = await self._http.json(_list_call("statements", period, tenant, page, per_page))
        return Page.parse(doc, Document.from_json)

    async def statement(self, statement_id: int) -> DocumentDetail:
        """One statement; see :meth:`Invoices.statement`.

        Example:
            >>> st = await cb.invoices.statement(7)
        """
        doc = await self._http.json(_get_call("statements", statement_id))
        return DocumentDetail.from_json(doc)
