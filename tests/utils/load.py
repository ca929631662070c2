"""Load from client processes: a bounded number of v2 infer calls each, round-robin over servers.

Clients are separate processes (``spawn``), so the load does not share the caller's interpreter
or its GIL. This module imports only httpx, because each client process imports it afresh. Used
by tests/integration/test_scale_out.py and bench/scale_out.py.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import Any

import httpx

FLOW_MODEL = "traffic-police.flow-smoother"
FLOW_BODY = {
    "inputs": [{"name": "flow", "datatype": "FP32", "shape": [1, 6], "data": [1, 2, 3, 4, 5, 6]}]
}
_RESULT_TIMEOUT_S = 600.0  # a bound on waiting for a client, never a measurement


def _client(
    urls: list[str],
    token: str,
    calls: int,
    offset: int,
    retry: bool,
    prefix: str | None,
    model: str,
    served: Any,
    results: Any,
) -> None:
    """Make ``calls`` infer calls round-robin over ``urls``; put ``[(key, status)]`` on
    ``results``. With ``retry``, a call that found its process gone (or answered 5xx) is
    retried with the same Idempotency-Key against the next process until one answers."""
    out: list[tuple[str | None, int]] = []
    clients = [httpx.Client(base_url=u, timeout=30) for u in urls]
    try:
        for i in range(calls):
            key = f"{prefix}-{offset}-{i}" if prefix else None
            headers = {"Authorization": f"Bearer {token}"}
            if key:
                headers["Idempotency-Key"] = key
            status = 0
            for attempt in range(100 if retry else 1):
                client = clients[(offset + i + attempt) % len(clients)]
                try:
                    status = client.post(
                        f"/v2/models/{model}/infer", json=FLOW_BODY, headers=headers
                    ).status_code
                except httpx.TransportError:
                    status = 0
                if status and status < 500:
                    break
                time.sleep(0.05)
            if status == 200:
                with served.get_lock():
                    served.value += 1
            out.append((key, status))
    finally:
        for c in clients:
            c.close()
    results.put(out)


def load(
    urls: list[str],
    token: str,
    *,
    clients: int,
    calls: int,
    retry: bool = False,
    prefix: str | None = None,
    model: str = FLOW_MODEL,
    while_running: Callable[[Any], None] | None = None,
) -> list[tuple[str | None, int]]:
    """Run ``clients`` client processes of ``calls`` calls each and return every call's
    ``(Idempotency-Key or None, final status)`` (0: no process answered).

    ``while_running(served)`` is called once all clients started, with the shared count of
    200s so far (a ``multiprocessing.Value``; read ``.value``).
    """
    ctx = multiprocessing.get_context("spawn")
    served = ctx.Value("i", 0)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_client, args=(urls, token, calls, n, retry, prefix, model, served, results)
        )
        for n in range(clients)
    ]
    for p in procs:
        p.start()
    try:
        if while_running is not None:
            while_running(served)
        out: list[tuple[str | None, int]] = []
        for _ in procs:
            out += results.get(timeout=_RESULT_TIMEOUT_S)
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    return out
