"""CKAN's Action API, read side (``marketplace.opendata.ckan``), at ``/api/3/action/{name}``
and ``/api/action/{name}`` (where ``ckanapi`` calls it), by GET (query parameters) or POST
(a JSON object). Every answer is CKAN's envelope ``{"help", "success", "result"}``; errors
are ``{"help", "success": false, "error": {"__type", "message"}}`` with CKAN's status.

CKAN clients send the API key bare, in ``Authorization`` or ``X-CKAN-API-Key``; a bearer
token and ``X-API-Key`` work too. No key: the public catalog."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from marketplace.api.deps import SessionDep, SettingsDep, caller_for_token
from marketplace.config import Settings
from marketplace.constants import API_KEY_HEADER, Scope
from marketplace.errors import CityBrainError
from marketplace.opendata.ckan import Ckan, CkanError, facet_fields, invalid, not_found

router = APIRouter(tags=["open data"])

_ERROR_KINDS = {401: "Authorization Error", 403: "Authorization Error", 404: "Not Found Error"}


def _token(request: Request) -> str | None:
    for header in ("x-ckan-api-key", "authorization", API_KEY_HEADER.lower()):
        value = request.headers.get(header, "").strip()
        if value:
            scheme, _, rest = value.partition(" ")
            return rest.strip() if scheme.lower() == "bearer" and rest.strip() else value
    return None


def _int(params: dict[str, Any], name: str, default: int) -> int:
    value = params.get(name, default)
    try:
        return int(value)
    except (TypeError, ValueError) as e:
        raise invalid(name, f"{name} must be an integer") from e


def _flag(params: dict[str, Any], name: str) -> bool:
    value = params.get(name, False)
    return value is True or str(value).lower() in ("true", "1", "yes")


def _ident(params: dict[str, Any]) -> str:
    ident = params.get("id") or params.get("name")
    if not isinstance(ident, str) or not ident:
        raise invalid("id", "Missing value")
    return ident


def _search(c: Ckan, p: dict[str, Any]) -> Any:
    try:
        fields = facet_fields(p.get("facet.field"))
    except ValueError as e:
        raise invalid("facet.field", "facet.field must be a JSON list") from e
    return c.package_search(
        q=str(p.get("q") or ""),
        fq=str(p.get("fq") or ""),
        rows=_int(p, "rows", 10),
        start=_int(p, "start", 0),
        facet_fields=fields,
        facet_limit=_int(p, "facet.limit", 50),
    )


ACTIONS: dict[str, Callable[[Ckan, dict[str, Any]], Any]] = {
    "package_list": lambda c, p: c.package_list(
        limit=_int(p, "limit", 0) or None, offset=_int(p, "offset", 0)
    ),
    "package_show": lambda c, p: c.package_show(_ident(p)),
    "package_search": _search,
    "organization_list": lambda c, p: c.organization_list(all_fields=_flag(p, "all_fields")),
    "organization_show": lambda c, p: c.organization_show(
        _ident(p), include_datasets=_flag(p, "include_datasets")
    ),
    "tag_list": lambda c, p: c.tag_list(
        query=p.get("query") or None, all_fields=_flag(p, "all_fields")
    ),
    "status_show": lambda c, p: c.status_show(),
}

_HELP = {
    "package_list": "Return the names of the datasets (limit, offset).",
    "package_show": "Return one dataset (id or name).",
    "package_search": "Search datasets (q, fq, rows, start, facet.field, facet.limit).",
    "organization_list": "Return the organizations (all_fields).",
    "organization_show": "Return one organization (id or name; include_datasets).",
    "tag_list": "Return the tags in use (query, all_fields).",
    "status_show": "Return the site's status and CKAN API version.",
    "help_show": "Return the help text of an action (name).",
}


def _help(c: Ckan, p: dict[str, Any]) -> str:
    name = p.get("name")
    if not isinstance(name, str) or not name:
        raise invalid("name", "Missing value")
    if name not in _HELP:
        raise not_found(f"Action {name}")
    return _HELP[name]


ACTIONS["help_show"] = _help  # every answer's "help" link points here


def _run(
    name: str, request: Request, session: Session, settings: Settings, params: dict[str, Any]
) -> Any:
    caller = caller_for_token(request, session, _token(request))
    if caller is not None and Scope.CATALOG_READ.value not in caller.scopes:
        raise CkanError("Authorization Error", "this API key lacks the 'catalog:read' scope", 403)
    return ACTIONS[name](Ckan(session, caller, str(request.base_url)), params)


async def _params(request: Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query_params)
    if request.method == "POST":
        raw = await request.body()
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError as e:
                raise CkanError("Bad request", "request body is not valid JSON", 400) from e
            if not isinstance(body, dict):
                raise CkanError("Bad request", "request body must be a JSON object", 400)
            params.update(body)
    return params


def _envelope(request: Request, name: str, **rest: Any) -> dict[str, Any]:
    return {"help": f"{request.base_url}api/3/action/help_show?name={name}", **rest}


async def _action(
    name: str, request: Request, session: Session, settings: Settings
) -> JSONResponse:
    try:
        if name not in ACTIONS:
            raise CkanError("Bad request", f"Action name not known: {name}", 400)
        params = await _params(request)
        result = await run_in_threadpool(_run, name, request, session, settings, params)
    except CkanError as e:
        body = _envelope(request, name, success=False, error=e.body())
        return JSONResponse(body, status_code=e.status)
    except CityBrainError as e:
        kind = _ERROR_KINDS.get(e.status, "Bad request" if e.status < 500 else "Internal Error")
        # 5xx: nothing internal in the body.
        message = str(e) if e.status < 500 else "internal error"
        error = {"__type": kind, "message": f"{kind}: {message}"}
        body = _envelope(request, name, success=False, error=error)
        return JSONResponse(body, status_code=403 if e.status == 401 else e.status)
    return JSONResponse(_envelope(request, name, success=True, result=result))


_DOC = "A CKAN action (package_list, package_show, package_search, organization_list, \
organization_show, tag_list, status_show, help_show) in CKAN's envelope."


class CkanErrorPublic(BaseModel):
    """CKAN's error object."""

    type_: str = Field(alias="__type")
    message: str


class CkanEnvelope(BaseModel):
    """CKAN's envelope: ``result`` on success, ``error`` otherwise."""

    help: str
    success: bool
    result: Any = None
    error: CkanErrorPublic | None = None


# CKAN's statuses, in CKAN's envelope (an unknown action is CKAN's 400; a bad or missing
# parameter its 409 "Validation Error"; a key it does not accept its 403).
_RESPONSES: dict[int | str, Any] = {
    200: {"model": CkanEnvelope},
    400: {"model": CkanEnvelope, "description": "Unknown action, or a body that is no JSON object"},
    403: {"model": CkanEnvelope, "description": "The key is unknown or lacks catalog:read"},
    404: {"model": CkanEnvelope, "description": "No such dataset or organization"},
    409: {"model": CkanEnvelope, "description": "A parameter is missing or invalid"},
    503: {"model": CkanEnvelope, "description": "The catalog is unavailable right now"},
}
ActionName = Annotated[
    str, Path(description="The action", json_schema_extra={"enum": sorted(ACTIONS)})
]


@router.get(
    "/api/3/action/{name}",
    operation_id="ckan_action_get",
    description=_DOC,
    responses=_RESPONSES,
)
@router.get("/api/action/{name}", include_in_schema=False)
async def action_get(
    name: ActionName, request: Request, session: SessionDep, settings: SettingsDep
) -> JSONResponse:
    """A CKAN action, parameters in the query string."""
    return await _action(name, request, session, settings)


@router.post(
    "/api/3/action/{name}",
    operation_id="ckan_action_post",
    description=_DOC,
    responses=_RESPONSES,
)
@router.post("/api/action/{name}", include_in_schema=False)
async def action_post(
    name: ActionName, request: Request, session: SessionDep, settings: SettingsDep
) -> JSONResponse:
    """A CKAN action, parameters in a JSON object."""
    return await _action(name, request, session, settings)
