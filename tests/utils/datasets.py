"""Datasets as tests use them: a small violations table, uploads, queries, grants."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from tests.utils.city import City

UPLOAD = "/api/v1/products/{}/versions/data"
QUERY = "/api/v1/products/{}/query"
DOWNLOAD = "/api/v1/products/{}/versions/{}/data"

#: Four violations: two by the same car (plate, phone and licence repeat), one fine missing,
#: one location missing.
VIOLATIONS_CSV = """record_id,plate,violation,occurred_at,fine_cny,phone,licence,owner_name,location
V1,浙A·12345,speeding,2026-03-02 08:05:00,200,13812345678,330106199001011234,张三丰,"30.274100,120.155100"
V2,浙A·12345,red_light,2026-03-02 09:30:00,200,13812345678,330106199001011234,张三丰,"30.250000,120.200000"
V3,浙B·54321,illegal_parking,2026-03-03 10:00:00,150,13900001111,330106198502023456,李四,"30.260000,120.170000"
V4,浙C·11111,speeding,2026-03-03 18:45:00,,13700002222,330106197703034567,王五,
"""

VIOLATIONS_SCHEMA: dict[str, Any] = {
    "columns": [
        {"name": "record_id", "type": "VARCHAR", "description": "Record number"},
        {"name": "plate", "semantic": "plate_number", "sensitivity": "personal"},
        {"name": "violation", "type": "VARCHAR"},
        {"name": "occurred_at", "type": "TIMESTAMP", "semantic": "timestamp"},
        {"name": "fine_cny", "type": "INTEGER"},
        {"name": "phone", "semantic": "phone", "sensitivity": "personal"},
        {
            "name": "licence",
            "semantic": "id_card",
            "sensitivity": "personal",
            "mask": "pseudonym",
            "description": "Driving licence (the holder's id number)",
        },
        {"name": "owner_name", "semantic": "person_name", "sensitivity": "sensitive"},
        {"name": "location", "semantic": "geo_point"},
    ],
    "quality": [
        {"rule": "unique", "column": "record_id", "blocking": True},
        {"rule": "not_null", "column": "fine_cny"},
    ],
}


@dataclass
class Datasets:
    """The demo city plus helpers to make datasets with data and read them."""

    city: City

    def upload(
        self,
        owner: str,
        handle: str,
        data: str | bytes = VIOLATIONS_CSV,
        schema: dict[str, Any] | str | None = None,
        *,
        filename: str = "violations.csv",
        fmt: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        body = data.encode() if isinstance(data, str) else data
        form: dict[str, str] = {}
        schema = VIOLATIONS_SCHEMA if schema is None else schema
        form["schema"] = schema if isinstance(schema, str) else json.dumps(schema)
        if fmt:
            form["format"] = fmt
        return self.city.client.post(
            UPLOAD.format(handle),
            files={"file": (filename, body, "application/octet-stream")},
            data=form,
            headers=headers if headers is not None else self.city.headers(owner),
        )

    def dataset(
        self,
        owner: str = "traffic-police",
        *,
        tier: str = "public",
        publish: bool = True,
        data: str | bytes = VIOLATIONS_CSV,
        schema: dict[str, Any] | None = None,
        filename: str = "violations.csv",
        **fields: Any,
    ) -> str:
        """A dataset product holding ``data`` as version 1 (published unless told otherwise);
        ``fields``: more of the product's (``downloadable=True``, ``name``...)."""
        handle = self.city.product(owner, tier=tier, publish=False, **fields)
        r = self.upload(owner, handle, data, schema, filename=filename)
        assert r.status_code == 201, r.text
        if publish:
            self.publish(owner, handle, tier)
        return handle

    def publish(self, owner: str, handle: str, tier: str) -> httpx.Response:
        c, h = self.city.client, self.city.headers
        if tier in ("public", "secret"):
            return c.post(f"/api/v1/products/{handle}/publish", headers=h(owner))
        r = c.post(f"/api/v1/products/{handle}/submit", headers=h(owner))
        if r.status_code != 200:
            return r
        return c.post(
            f"/api/v1/products/{handle}/approve", json={"note": "ok"}, headers=h("data-bureau")
        )

    def query(
        self, who: str | None, handle: str, plan: dict[str, Any] | None = None, **headers: str
    ) -> httpx.Response:
        return self.city.client.post(
            QUERY.format(handle), json=plan or {}, headers={**self.city.headers(who), **headers}
        )

    def rows(self, who: str | None, handle: str, plan: dict[str, Any] | None = None) -> list[Any]:
        r = self.query(who, handle, plan)
        assert r.status_code == 200, r.text
        rows: list[Any] = r.json()["rows"]
        return rows

    def grant(
        self, tenant: str, handle: str, *, unmasked: list[str] | None = None, tier: str
    ) -> str:
        """An approved access grant with ``data:read`` (its id)."""
        body: dict[str, Any] = {"duration_days": 30}
        if unmasked is not None:
            body["conditions"] = {"unmasked_columns": unmasked}
        decider = "data-bureau" if tier == "confidential" else handle.split(".")[0]
        return self.city.grant(tenant, handle, decider, ["data:read"], **body)
