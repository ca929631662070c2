"""``cb.keys``: the caller's tenant's API keys (``admin`` scope): list, create, rotate, revoke.
A new or rotated key's secret is in the answer once and never again."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from citybrain_sdk._http import API_PREFIX, Call, segment
from citybrain_sdk.resources._base import AsyncResource, Spec, SyncResource, json_spec, listing
from citybrain_sdk.types import ApiKey, IssuedKey, as_list

__all__ = ["AsyncKeys", "Keys"]

_KEYS = f"{API_PREFIX}/keys"


_LIST = json_spec(Call("GET", _KEYS), listing(ApiKey.from_json))


def _create(scopes: str | Sequence[str], name: str, expires_in: str | None) -> Spec[IssuedKey]:
    body: dict[str, Any] = {"scopes": as_list(scopes), "name": name}
    if expires_in is not None:
        body["expires_in"] = expires_in
    return json_spec(Call("POST", _KEYS, json=body), IssuedKey.from_json)


def _get(key_id: str) -> Spec[ApiKey]:
    return json_spec(Call("GET", f"{_KEYS}/{segment(key_id)}"), ApiKey.from_json)


def _rotate(key_id: str) -> Spec[IssuedKey]:
    return json_spec(Call("POST", f"{_KEYS}/{segment(key_id)}/rotate"), IssuedKey.from_json)


def _revoke(key_id: str) -> Spec[ApiKey]:
    return json_spec(Call("DELETE", f"{_KEYS}/{segment(key_id)}"), ApiKey.from_json)


class Keys(SyncResource):
    """API keys (``cb.keys``)."""

    def list(self) -> builtins.list[ApiKey]:
        """The tenant's keys, by prefix (never their secrets).

        Example:
            >>> [(k.prefix, k.status) for k in cb.keys.list()]
            [('cbk_a1b2c3', 'active')]
        """
        return self._run(_LIST)

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
        return self._run(_create(scopes, name, expires_in))

    def get(self, key_id: str) -> ApiKey:
        """One of the tenant's keys.

        Example:
            >>> cb.keys.get(issued.key.id).last_used_at
        """
        return self._run(_get(key_id))

    def rotate(self, key_id: str) -> IssuedKey:
        """Issue a new secret; the old one keeps working for the platform's grace period.

        Example:
            >>> new = cb.keys.rotate(issued.key.id)
            >>> new.token != issued.token
            True
        """
        return self._run(_rotate(key_id))

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key at once.

        Example:
            >>> cb.keys.revoke(issued.key.id).status
            'revoked'
        """
        return self._run(_revoke(key_id))


class AsyncKeys(AsyncResource):
    """API keys, awaited: the methods of :class:`Keys`."""

    async def list(self) -> builtins.list[ApiKey]:
        """The tenant's keys; see :meth:`Keys.list`.

        Example:
            >>> keys = await cb.keys.list()
        """
        return await self._run(_LIST)

    async def create(
        self, scopes: str | Sequence[str], *, name: str = "", expires_in: str | None = None
    ) -> IssuedKey:
        """Create a key; see :meth:`Keys.create`.

        Example:
            >>> issued = await cb.keys.create(["infer"], name="batch")
        """
        return await self._run(_create(scopes, name, expires_in))

    async def get(self, key_id: str) -> ApiKey:
        """One key; see :meth:`Keys.get`.

        Example:
            >>> key = await cb.keys.get(key_id)
        """
        return await self._run(_get(key_id))

    async def rotate(self, key_id: str) -> IssuedKey:
        """Rotate a key; see :meth:`Keys.rotate`.

        Example:
            >>> new = await cb.keys.rotate(key_id)
        """
        return await self._run(_rotate(key_id))

    async def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key; see :meth:`Keys.revoke`.

        Example:
            >>> await cb.keys.revoke(key_id)
        """
        return await self._run(_revoke(key_id))
