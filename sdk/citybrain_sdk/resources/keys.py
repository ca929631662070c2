"""``cb.keys``: the caller's tenant's API keys (``admin`` scope): list, create, rotate, revoke.
A new or rotated key's secret is in the answer once and never again."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from citybrain_sdk._http import API_PREFIX, AsyncHTTP, Call, SyncHTTP, segment
from citybrain_sdk.types import ApiKey, IssuedKey, as_list

__all__ = ["AsyncKeys", "Keys"]

_KEYS = f"{API_PREFIX}/keys"


def _create_call(scopes: str | Sequence[str], name: str, expires_in: str | None) -> Call:
    body: dict[str, Any] = {"scopes": as_list(scopes), "name": name}
    if expires_in is not None:
        body["expires_in"] = expires_in
    return Call("POST", _KEYS, json=body)


def _keys(doc: Any) -> builtins.list[ApiKey]:
    return [ApiKey.from_json(k) for k in doc.get("data", ())]


class Keys:
    """API keys (``cb.keys``)."""

    def __init__(self, http: SyncHTTP) -> None:
        self._http = http

    def list(self) -> builtins.list[ApiKey]:
        """The tenant's keys, by prefix (never their secrets).

        Example:
            >>> [(k.prefix, k.status) for k in cb.keys.list()]
            [('cbk_a1b2c3', 'active')]
        """
        return _keys(self._http.json(Call("GET", _KEYS)))

    def create(
        self, scopes: str | Sequence[str], *, name: str = "", expires_in: str | None = None
    ) -> IssuedKey:
        """Create a key for the caller's tenant. Store ``.token`` now: it is shown once.

        Args:
            scopes: e.g. ``["catalog:read", "infer"]`` or ``"catalog:read,infer"``.
            name: A label (``"ci"``, ``"notebook"``).
            expires_in: A lifetime such as ``"30d"``, ``"12h"``, ``"2w"`` (None: no expiry).

        Returns:
            The key and its token.

        Example:
            >>> issued = cb.keys.create(["catalog:read", "infer"], name="ci", expires_in="30d")
            >>> issued.token
            'cbk_…'
        """
        return IssuedKey.from_json(self._http.json(_create_call(scopes, name, expires_in)))

    def get(self, key_id: str) -> ApiKey:
        """One of the tenant's keys.

        Example:
            >>> cb.keys.get(issued.key.id).last_used_at
        """
        return ApiKey.from_json(self._http.json(Call("GET", f"{_KEYS}/{segment(key_id)}")))

    def rotate(self, key_id: str) -> IssuedKey:
        """Issue a new secret; the old one keeps working for the platform's grace period.

        Example:
            >>> new = cb.keys.rotate(issued.key.id)
            >>> new.token != issued.token
            True
        """
        doc = self._http.json(Call("POST", f"{_KEYS}/{segment(key_id)}/rotate"))
        return IssuedKey.from_json(doc)

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key at once.

        Example:
            >>> cb.keys.revoke(issued.key.id).status
            'revoked'
        """
        return ApiKey.from_json(self._http.json(Call("DELETE", f"{_KEYS}/{segment(key_id)}")))


class AsyncKeys:
    """API keys, awaited: the methods of :class:`Keys`."""

    def __init__(self, http: AsyncHTTP) -> None:
        self._http = http

    async def list(self) -> builtins.list[ApiKey]:
        """The tenant's keys; see :meth:`Keys.list`.

        Example:
            >>> keys = await cb.keys.list()
        """
        return _keys(await self._http.json(Call("GET", _KEYS)))

    async def create(
        self, scopes: str | Sequence[str], *, name: str = "", expires_in: str | None = None
    ) -> IssuedKey:
        """Create a key; see :meth:`Keys.create`.

        Example:
            >>> issued = await cb.keys.create(["infer"], name="batch")
        """
        return IssuedKey.from_json(await self._http.json(_create_call(scopes, name, expires_in)))

    async def get(self, key_id: str) -> ApiKey:
        """One key; see :meth:`Keys.get`.

        Example:
            >>> key = await cb.keys.get(key_id)
        """
        return ApiKey.from_json(await self._http.json(Call("GET", f"{_KEYS}/{segment(key_id)}")))

    async def rotate(self, key_id: str) -> IssuedKey:
        """Rotate a key; see :meth:`Keys.rotate`.

        Example:
            >>> new = await cb.keys.rotate(key_id)
        """
        doc = await self._http.json(Call("POST", f"{_KEYS}/{segment(key_id)}/rotate"))
        return IssuedKey.from_json(doc)

    async def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key; see :meth:`Keys.revoke`.

        Example:
            >>> await cb.keys.revoke(key_id)
        """
        doc = await self._http.json(Call("DELETE", f"{_KEYS}/{segment(key_id)}"))
        return ApiKey.from_json(doc)
