"""Who is calling: the principal every service function receives from the API layer."""

from __future__ import annotations

import contextvars
import os
import threading
from dataclasses import dataclass, field

from marketplace.constants import GOVERNMENT_KINDS, TenantKind

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class _RandomIds:
    """128-bit ids from the OS's CSPRNG, drawn 4 KiB at a time rather than one syscall each
    (a ``getrandom`` per inference call showed in its profile). Each id is 16 bytes of the
    pool used once; a forked child starts with an empty pool, never its parent's."""

    _POOL_BYTES = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._pos = 0

    def reset(self) -> None:
        self._lock = threading.Lock()
        self._pool, self._pos = b"", 0

    def next_hex(self) -> str:
        with self._lock:
            pos = self._pos
            if pos + 16 > len(self._pool):
                self._pool, pos = os.urandom(self._POOL_BYTES), 0
            self._pos = pos + 16
            return self._pool[pos : pos + 16].hex()


_ids = _RandomIds()
os.register_at_fork(after_in_child=_ids.reset)


def new_request_id() -> str:
    """32 random hex digits (the shape of a uuid4's hex), unpredictable: a usage event's id
    when the client gives no ``Idempotency-Key``."""
    return _ids.next_hex()


def current_request_id() -> str:
    return request_id_var.get()


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated tenant (through an API key, or the CLI acting as the operator)."""

    tenant_id: int
    tenant_slug: str
    tenant_kind: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    key_id: str | None = None
    actor: str = ""

    @property
    def is_government(self) -> bool:
        return self.tenant_kind in GOVERNMENT_KINDS

    @property
    def is_operator(self) -> bool:
        return self.tenant_kind == TenantKind.OPERATOR

    @property
    def label(self) -> str:
        return self.actor or (f"key:{self.key_id}" if self.key_id else f"tenant:{self.tenant_slug}")


# The anonymous caller is represented as None throughout the services.
Caller = Principal | None
