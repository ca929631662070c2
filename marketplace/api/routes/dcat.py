"""DCAT-AP 3 exports of the catalog (``marketplace.opendata.dcat``): JSON-LD by default,
Turtle or RDF/XML by ``Accept`` (or ``?format=json-ld|turtle|xml``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from rdflib import Graph

from marketplace.api.deps import SessionDep, optional_scope
from marketplace.context import Caller
from marketplace.opendata import dcat

router = APIRouter(tags=["open data"])
ReaderDep = Annotated[Caller, Depends(optional_scope("catalog:read"))]
FormatQuery = Annotated[str | None, Query(alias="format", max_length=20)]

_RDF_CONTENT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "DCAT-AP 3 (JSON-LD; Accept: text/turtle or application/rdf+xml)",
        "content": {fmt.media_type: {} for fmt in dcat.RdfFormat},
    }
}


def _base_url(request: Request) -> str:
    return str(request.base_url)


def _answer(request: Request, graph: Graph, explicit: str | None) -> Response:
    fmt = dcat.negotiate(request.headers.get("accept"), explicit)
    return Response(
        dcat.serialize(graph, fmt),
        media_type=fmt.media_type,
        headers={"Vary": "Accept"},
    )


@router.get("/catalog/dcat", response_class=Response, responses=_RDF_CONTENT)
def catalog_dcat(
    request: Request, session: SessionDep, caller: ReaderDep, fmt: FormatQuery = None
) -> Response:
    """The catalog the caller may see as a DCAT-AP 3 dcat:Catalog (public only when anonymous)."""
    return _answer(request, dcat.catalog_graph(session, caller, _base_url(request)), fmt)


@router.get("/products/{handle}/dcat", response_class=Response, responses=_RDF_CONTENT)
def product_dcat(
    handle: str, request: Request, session: SessionDep, caller: ReaderDep, fmt: FormatQuery = None
) -> Response:
    """One listing as a DCAT-AP 3 dcat:Dataset (data) or dcat:DataService (model)."""
    graph = dcat.product_graph(session, caller, handle, _base_url(request))
    return _answer(request, graph, fmt)
