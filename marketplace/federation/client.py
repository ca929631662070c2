"""The city's HTTP API as a district hub uses it (httpx; the hub key in every request)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from marketplace.config import FederationSettings
from marketplace.errors import ConflictError, InvalidInputError, NotFoundError, UnavailableError

FEED_PATH = "/api/v1/federation/feed"


class CityError(UnavailableError):
    """The city answered with an error the hub cannot act on (its status and message kept)."""


def city_of(settings: FederationSettings) -> tuple[str, str]:
    """The city's base URL and the hub key, or InvalidInputError naming the missing setting."""
    if not settings.city_url or settings.hub_key is None:
        raise InvalidInputError(
            "this platform is not joined to a city: set CITYBRAIN_FEDERATION__CITY_URL and "
            "CITYBRAIN_FEDERATION__HUB_KEY (docs/federation.md)"
        )
    return settings.city_url.rstrip("/"), settings.hub_key.get_secret_value()


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("error", body)) if isinstance(body, dict) else str(body)[:200]


def raise_for(response: httpx.Response, what: str) -> None:
    """Map the city's error statuses to the hub's own errors (404, 409 and 422 kept as such)."""
    if response.is_success:
        return
    message = f"the city refused {what}: {_message(response)} (HTTP {response.status_code})"
    if response.status_code == 404:
        raise NotFoundError(message)
    if response.status_code == 409:
        raise ConflictError(message)
    if response.status_code in (400, 422):
        raise InvalidInputError(message)
    raise CityError(message)


class CityClient:
    """A hub's synchronous client of the city (the CLI's harvest and push)."""

    def __init__(self, settings: FederationSettings, *, transport: Any = None) -> None:
        self.url, key = city_of(settings)
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=settings.timeout_s,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CityClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def feed(self, since: datetime | None) -> dict[str, Any]:
        params = {"modified_since": since.isoformat()} if since is not None else {}
        try:
            response = self._http.get(FEED_PATH, params=params)
        except httpx.HTTPError as e:
            raise CityError(f"the city at {self.url} cannot be reached: {e}") from e
        raise_for(response, "the catalog feed")
        body: dict[str, Any] = response.json()
        return body

    def request(self, method: str, path: str, what: str, json: Any = None) -> dict[str, Any] | None:
        """One call of the city's API; None for a 404 on a read (the listing is not there)."""
        try:
            response = self._http.request(method, path, json=json)
        except httpx.HTTPError as e:
            raise CityError(f"the city at {self.url} cannot be reached: {e}") from e
        if method == "GET" and response.status_code == 404:
            return None
        raise_for(response, what)
        if response.status_code == 204 or not response.content:
            return {}
        body: dict[str, Any] = response.json()
        return body
