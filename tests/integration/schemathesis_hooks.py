"""Schemathesis hooks for ``test_schemathesis.py`` (loaded by the CLI through SCHEMATHESIS_HOOKS).

The fuzzer authenticates with one API key per run. Revoking that key (``DELETE
/api/v1/keys/{key_id}``, which its stateful phase reaches by following ``GET /api/v1/keys``),
or rotating it twice (the second rotation ends the first secret's grace period), would lock it
out, and every later answer would be a 401 that says nothing about the contract. Such a call is
pointed at an unknown key id instead, which exercises the same route's 404. The ids to protect
come in ``FUZZ_PROTECTED_KEY_IDS`` (comma-separated).
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

_PROTECTED = {k for k in os.environ.get("FUZZ_PROTECTED_KEY_IDS", "").split(",") if k}


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case, kwargs: Any) -> None:
    params = case.path_parameters
    if (
        case.method.upper() in ("DELETE", "POST")
        and case.operation.path.startswith("/api/v1/keys/{key_id}")
        and params
        and params.get("key_id") in _PROTECTED
    ):
        params["key_id"] = "000000000000"
