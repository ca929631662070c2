"""Who is calling: the principal every service function receives from the API layer."""

from __future__ import annotations

import contextvars
import secrets
from dataclasses import dataclass, field

from marketplace.constants import GOVERNMENT_KINDS, TenantKind

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def new_request_id() -> str:
    """32 random hex digits (the shape of a uuid4's hex, without building a UUID)."""
    return secrets.token_hex(16)


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
