"""CKAN's Action API envelope and errors, through the app (``ckanapi`` drives a running
server in tests/integration/test_ckanapi.py)."""

from __future__ import annotations

from tests.utils.city import City


def test_success_envelope_by_get_and_post(city: City) -> None:
    r = city.client.get("/api/3/action/package_show", params={"id": "environment.air-quality"})
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True
    assert body["help"].endswith("/api/3/action/help_show?name=package_show")
    assert body["result"]["title"] == "Air quality monitoring"
    r = city.client.post("/api/3/action/tag_list", json={"query": "pm"})
    assert r.json()["result"] == ["pm25"]


def test_errors_in_ckans_shape(city: City) -> None:
    r = city.client.get("/api/3/action/package_show", params={"id": "nobody.nothing"})
    assert r.status_code == 404
    assert r.json()["success"] is False
    assert r.json()["error"]["__type"] == "Not Found Error"
    # Hidden answers exactly like missing.
    hidden = city.client.get(
        "/api/3/action/package_show", params={"id": "traffic-police.signal-timing-plans"}
    )
    assert (hidden.status_code, hidden.json()["error"]) == (404, r.json()["error"])
    r = city.client.get("/api/3/action/package_show")
    assert r.status_code == 409
    assert r.json()["error"]["__type"] == "Validation Error"
    assert "id" in r.json()["error"]
    r = city.client.get("/api/3/action/package_search", params={"rows": "many"})
    assert r.status_code == 409 and "rows" in r.json()["error"]
    r = city.client.get("/api/3/action/package_create")
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "Bad request: Action name not known: package_create"
    r = city.client.post(
        "/api/3/action/package_list",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["success"] is False
    r = city.client.get("/api/3/action/package_list", headers={"X-CKAN-API-Key": "cbk_nope_bad"})
    assert r.status_code == 403
    assert r.json()["error"]["__type"] == "Authorization Error"
    # A key without catalog:read may not read the catalog through CKAN either.
    key = city.key("parkeasy", scopes=["infer"])
    r = city.client.get("/api/3/action/package_list", headers={"Authorization": key})
    assert r.status_code == 403
    assert r.json()["error"]["__type"] == "Authorization Error"
