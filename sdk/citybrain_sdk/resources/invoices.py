"""``cb.invoices``: invoices (developer tenants) and chargeback statements (government tenants),
listed per period and read with their lines (``billing:read``)."""

from __future__ import annotations

from citybrain_sdk._http import API_PREFIX, Call, segment
from citybrain_sdk.resources._base import AsyncResource, Spec, SyncResource, json_spec
from citybrain_sdk.types import Document, DocumentDetail, Page

__all__ = ["AsyncInvoices", "Invoices"]


def _list(
    kind: str, period: str | None, tenant: str | None, page: int, per_page: int
) -> Spec[Page[Document]]:
    params = {"period": period, "tenant": tenant, "page": page, "per_page": per_page}
    call = Call("GET", f"{API_PREFIX}/{kind}", params=params)
    return json_spec(call, lambda doc: Page.parse(doc, Document.from_json))


def _get(kind: str, doc_id: int) -> Spec[DocumentDetail]:
    call = Call("GET", f"{API_PREFIX}/{kind}/{segment(doc_id)}")
    return json_spec(call, DocumentDetail.from_json)


class Invoices(SyncResource):
    """Invoices and statements (``cb.invoices``)."""

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
        return self._run(_list("invoices", period, tenant, page, per_page))

    def get(self, invoice_id: int) -> DocumentDetail:
        """One invoice with its lines.

        Example:
            >>> inv = cb.invoices.get(3)
            >>> [(line.product, line.amount) for line in inv.lines]
        """
        return self._run(_get("invoices", invoice_id))

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
        return self._run(_list("statements", period, tenant, page, per_page))

    def statement(self, statement_id: int) -> DocumentDetail:
        """One statement with its lines and its cost allocation by domain and publisher.

        Example:
            >>> cb.invoices.statement(7).allocation_by_domain
            {'traffic': Decimal('3.20')}
        """
        return self._run(_get("statements", statement_id))


class AsyncInvoices(AsyncResource):
    """Invoices and statements, awaited: the methods of :class:`Invoices`."""

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
        return await self._run(_list("invoices", period, tenant, page, per_page))

    async def get(self, invoice_id: int) -> DocumentDetail:
        """One invoice; see :meth:`Invoices.get`.

        Example:
            >>> inv = await cb.invoices.get(3)
        """
        return await self._run(_get("invoices", invoice_id))

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
        return await self._run(_list("statements", period, tenant, page, per_page))

    async def statement(self, statement_id: int) -> DocumentDetail:
        """One statement; see :meth:`Invoices.statement`.

        Example:
            >>> st = await cb.invoices.statement(7)
        """
        return await self._run(_get("statements", statement_id))
