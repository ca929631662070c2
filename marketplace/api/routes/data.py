"""Data products: data versions (upload), queries and downloads, over ``marketplace.data``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from marketplace.api.convert import version_public
from marketplace.api.deps import (
    RequiresCredentials,
    authenticate_principal,
    authenticate_request,
)
from marketplace.api.params import JsonInt, VersionNumber
from marketplace.api.schemas import VersionPublic
from marketplace.catalog.service import get_product
from marketplace.config import Settings
from marketplace.constants import API_PREFIX, IDEMPOTENCY_KEY_HEADER, REQUEST_ID_HEADER, Scope
from marketplace.context import Principal, current_request_id
from marketplace.data.formats import DOWNLOAD_TYPES, JSON, encode_table, json_rows, negotiate
from marketplace.data.pipeline import DataPlane, QueryResult
from marketplace.data.plan import QueryPlan
from marketplace.data.service import version_data
from marketplace.data.upload import check_upload_target, upload_data_version
from marketplace.data.usage import DataCall
from marketplace.errors import InvalidInputError, UnavailableError
from marketplace.federation.forward import Forwarder
from marketplace.gateway.constants import IDEMPOTENT_REPLAYED_HEADER

router = APIRouter(tags=["data"])

_CHUNK = 1 << 20
_SCHEMA_MAX = 1 << 20
#: Result pages larger than this are encoded in a worker thread, off the event loop.
_ENCODE_INLINE_ROWS = 2000
ROW_COUNT_HEADER = "X-Row-Count"
NEXT_CURSOR_HEADER = "X-Next-Cursor"
MASKED_HEADER = "X-Masked-Columns"
VERSION_HEADER = "X-Dataset-Version"
COLUMNS_HEADER = "X-Columns"

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "schema"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "CSV (header row), Parquet or JSON Lines",
                        },
                        "schema": {
                            "type": "string",
                            "description": 'JSON: {"columns": [{"name", "type", "semantic", '
                            '"sensitivity", "description"}], "quality": [rules]}',
                        },
                        "format": {"type": "string", "enum": ["csv", "parquet", "jsonl"]},
                    },
                }
            }
        },
    }
}


async def _reader(request: Request, _: Annotated[None, RequiresCredentials]) -> Principal:
    caller = await authenticate_principal(request, scope=Scope.DATA_READ.value)
    assert isinstance(caller, Principal)
    return caller


DataReader = Annotated[Principal, Depends(_reader)]


def _plane(request: Request) -> DataPlane:
    plane: DataPlane | None = getattr(request.app.state, "data", None)
    if plane is None:
        raise UnavailableError("the data service is starting")
    return plane


def _call(request: Request, principal: Principal | None) -> DataCall:
    return DataCall(
        principal=principal,
        idempotency_key=request.headers.get(IDEMPOTENCY_KEY_HEADER),
        request_id=current_request_id(),
        request_id_chosen=request.headers.get(REQUEST_ID_HEADER) == current_request_id(),
    )


def _ascii_json(value: Any) -> str:
    # Header values are Latin-1: column names may be in any script.
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(_CHUNK):
        yield chunk


@router.post(
    "/products/{handle}/versions/data",
    dependencies=[RequiresCredentials],
    response_model=VersionPublic,
    status_code=201,
    openapi_extra=_UPLOAD_BODY,
)
async def upload_data(
    handle: str,
    request: Request,
    notes: Annotated[str, Query(max_length=2000)] = "",
) -> VersionPublic:
    """Upload a data version: multipart ``file`` (CSV, Parquet or JSON Lines) and ``schema``
    (JSON columns and quality rules); it becomes an immutable Parquet snapshot."""
    caller = await authenticate_principal(request, scope=Scope.CATALOG_WRITE.value)
    assert isinstance(caller, Principal)
    settings: Settings = request.app.state.settings
    factory = request.app.state.session_factory
    # The owner is checked before the body is read: others' uploads are never stored.
    await run_in_threadpool(check_upload_target, factory, caller, handle)
    form = await request.form(max_files=2, max_fields=10)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInputError("a data version needs a 'file' part (multipart/form-data)")
        schema = form.get("schema")
        if isinstance(schema, UploadFile):  # sent as a file part (curl -F schema=@schema.json)
            schema = (await schema.read(_SCHEMA_MAX + 1)).decode("utf-8", "replace")
            if len(schema) > _SCHEMA_MAX:
                raise InvalidInputError(f"the schema is over {_SCHEMA_MAX} bytes")
        declared = form.get("format")
        version = await upload_data_version(
            factory=factory,
            blobs=request.app.state.blobs,
            settings=settings.data,
            caller=caller,
            handle=handle,
            chunks=_chunks(upload),
            filename=upload.filename,
            declared_format=declared if isinstance(declared, str) else None,
            schema_text=schema if isinstance(schema, str) else None,
            notes=notes,
        )
    finally:
        await form.close()

    def view() -> VersionPublic:
        session = factory()
        try:
            product = get_product(session, caller, handle)
            return version_public(handle, version, version_data(session, caller, product, version))
        finally:
            session.rollback()
            session.close()

    return await run_in_threadpool(view)


def _result_headers(result: QueryResult) -> dict[str, str]:
    headers = {
        ROW_COUNT_HEADER: str(result.table.num_rows),
        MASKED_HEADER: _ascii_json(list(result.masked)),
        VERSION_HEADER: str(result.version),
        COLUMNS_HEADER: _ascii_json([{"name": c.name, "type": c.type} for c in result.columns]),
    }
    if result.next_cursor is not None:
        headers[NEXT_CURSOR_HEADER] = result.next_cursor
    if result.replayed:
        headers[IDEMPOTENT_REPLAYED_HEADER] = "true"
    return headers


def _json_body(result: QueryResult) -> bytes:
    head = result.head()
    doc = {
        "columns": head["columns"],
        "rows": json_rows(result.table),
        "row_count": head["row_count"],
        "next_cursor": head["next_cursor"],
        "masked": head["masked"],
        "version": head["version"],
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


@router.post(
    "/products/{handle}/query",
    response_class=Response,
    responses={
        200: {
            "description": "The rows (JSON by default; Accept: text/csv, "
            "application/vnd.apache.arrow.stream or application/x-parquet)",
            "content": {
                "application/json": {},
                "text/csv": {},
                "application/vnd.apache.arrow.stream": {},
                "application/x-parquet": {},
            },
        }
    },
)
async def query_dataset(
    handle: str, plan: QueryPlan, request: Request, caller: DataReader
) -> Response:
    """Query a dataset with a plan (select, where, group_by, aggregates, order_by, limit,
    cursor) over the caller's masked view; metered in rows."""
    forwarder: Forwarder | None = request.app.state.forwarder
    if forwarder is not None and await forwarder.is_mirror(handle):
        # A hub's mirror of a city dataset: the city answers, through the hub.
        reply = await forwarder.forward(
            caller,
            handle,
            scope=Scope.DATA_READ.value,
            method="POST",
            path_template=f"{API_PREFIX}/products/{{handle}}/query",
            body=await request.body(),
            headers=request.headers,
        )
        return Response(reply.body, status_code=reply.status, headers=reply.headers)
    result = await _plane(request).query(_call(request, caller), handle, plan)
    return await _answer(request, result)


async def _answer(request: Request, result: QueryResult) -> Response:
    media = negotiate(request.headers.get("accept"))
    headers = _result_headers(result)
    big = result.table.num_rows > _ENCODE_INLINE_ROWS
    if media == JSON:
        body = await run_in_threadpool(_json_body, result) if big else _json_body(result)
        media_type = JSON
    else:
        body = (
            await run_in_threadpool(encode_table, result.table, media)
            if big
            else encode_table(result.table, media)
        )
        media_type = media
    return Response(body, media_type=media_type, headers=headers)


class SqlQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sql: str = Field(min_length=1, max_length=20_000, description="One SELECT over the table data")
    version: JsonInt | None = Field(default=None, ge=1, le=2**31 - 1)


@router.post("/products/{handle}/sql", response_class=Response)
async def sql_dataset(
    handle: str, body: SqlQuery, request: Request, caller: DataReader
) -> Response:
    """The owner's ad hoc SELECT over its dataset's table ``data`` (one query, no other table,
    no table functions); answered like a query (JSON, or CSV/Arrow/Parquet by Accept)."""
    result = await _plane(request).sql(_call(request, caller), handle, body.sql, body.version)
    return await _answer(request, result)


@router.get(
    "/products/{handle}/versions/{version:int}/data",
    dependencies=[RequiresCredentials],  # anonymous callers never download
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "application/x-parquet": {},
                "text/csv": {},
                "application/x-ndjson": {},
            }
        }
    },
)
async def download_data(
    handle: str,
    version: VersionNumber,
    request: Request,
    format: Literal["parquet", "csv", "jsonl"] = "parquet",
) -> StreamingResponse:
    """Download the caller's whole (masked) view of a data version, streamed: its owner, or
    whoever may read it when its owner allows downloads; metered in rows, audited."""
    # Scopes are the download rule's to check (the owner may use catalog:read).
    caller = await authenticate_request(request)
    download = await _plane(request).download(_call(request, caller), handle, version, format)
    target = download.target
    headers = {
        "Content-Disposition": f'attachment; filename="{handle}-{version}.{format}"',
        ROW_COUNT_HEADER: str(target.snapshot.rows),
        MASKED_HEADER: _ascii_json([c.name for c in target.view.columns if c.masked]),
        VERSION_HEADER: str(target.version),
    }
    if download.replayed:
        headers[IDEMPOTENT_REPLAYED_HEADER] = "true"
    return StreamingResponse(download.chunks(), media_type=DOWNLOAD_TYPES[format], headers=headers)
