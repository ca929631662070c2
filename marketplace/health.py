"""Readiness: whether this process can serve, checked for real on every probe.

``/v2/health/ready`` and ``/api/v1/health`` answer 200 naming the components checked when all
are up, and 503 naming those that are down. Each component:

- ``database``: a statement that must reach the database (``SELECT 1``; on SQLite a read of
  the schema, which a missing, unreadable or corrupt file fails);
- ``usage_spool``: the spool takes writes (its last append succeeded, and a probe file can be
  created, written and removed in its directory) and its flusher thread is alive. A flush
  that fails (the usage store away) is reported as a note, not as down: calls are still
  metered durably into the spool, and their events arrive once the store is back
  (docs/metering.md) — taking the process out of service would stop the calls for nothing;
- ``triton``, when it is meant to run (``triton.enabled``, an external ``triton.url``, or a
  managed server already started by a Triton model): its ``/v2/health/ready`` answers 200. A
  managed Triton that no model has needed yet is ``idle`` (it starts on first use);
- ``kserve``, when configured: the Kubernetes API answers for InferenceServices in the
  namespace.

A check that does not answer within ``timeout_s`` counts as down, and at most one check of
each kind runs at a time: a database that hangs cannot pile up worker threads probe after
probe (the next probes wait on the same check). Bodies say which component is down and a
short reason, never an error's text (readiness answers anyone); the detail goes to the log,
once per change of state. Liveness (``/v2/health/live``) checks none of this.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import Engine

from billing import Meter
from marketplace.config import KServeSettings, TritonSettings
from marketplace.db import READ_MOSTLY
from marketplace.gateway.pipeline import Runtimes

__all__ = ["DOWN", "IDLE", "UP", "Component", "HealthChecker", "Readiness", "readiness_of"]

log = logging.getLogger("citybrain.health")

UP, DOWN, IDLE = "up", "down", "idle"
_PROBE_FILE = ".ready-probe"
# An InferenceService name no one uses: reading it answers 404 from a reachable API.
_KSERVE_PROBE = "citybrain-readiness-probe"


@dataclass(frozen=True, slots=True)
class Component:
    """One component's state: ``up``, ``down`` (with a short reason) or ``idle``; a ``note``
    says what is worth knowing about a component that is not down."""

    status: str
    reason: str | None = None
    note: str | None = None

    def document(self) -> dict[str, str]:
        doc = {"status": self.status}
        if self.reason:
            doc["reason"] = self.reason
        if self.note:
            doc["note"] = self.note
        return doc


@dataclass(frozen=True, slots=True)
class Readiness:
    """The components checked, by name."""

    components: dict[str, Component]

    @property
    def ready(self) -> bool:
        return all(c.status != DOWN for c in self.components.values())

    @property
    def down(self) -> list[str]:
        return [name for name, c in self.components.items() if c.status == DOWN]

    def document(self, request_id: str) -> dict[str, Any]:
        """The response body: ``ready`` and ``components``; when not ready, also the error
        shape every error of the platform has (``error`` names what is down)."""
        doc: dict[str, Any] = {
            "ready": self.ready,
            "components": {name: c.document() for name, c in self.components.items()},
        }
        if self.ready:
            return doc
        return {
            "error": f"not ready: {', '.join(self.down)} down",
            "code": "Unavailable",
            "request_id": request_id,
            **doc,
        }


class _OneAtATime:
    """A blocking check run in a worker thread, at most one at a time; callers wait for it at
    most ``timeout_s`` (then: down, timed out), and a caller arriving while it runs waits on
    that same run instead of starting another."""

    def __init__(self, check: Callable[[], Component]) -> None:
        self._check = check
        self._running: asyncio.Future[Component] | None = None

    async def __call__(self, timeout_s: float) -> Component:
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(asyncio.to_thread(self._check))
        try:
            return await asyncio.wait_for(asyncio.shield(self._running), timeout_s)
        except TimeoutError:
            return Component(DOWN, "timed out")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


class HealthChecker:
    """Checks the components of one process (see the module docstring).

    Args:
        engine: The database engine.
        meter: The usage meter (spool and flusher).
        runtimes: The gateway's runtimes (Triton is looked up in it once made).
        triton: The Triton settings.
        kserve: The KServe settings.
        timeout_s: How long each check may take before it counts as down.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        meter: Meter,
        runtimes: Runtimes,
        triton: TritonSettings,
        kserve: KServeSettings,
        timeout_s: float = 2.0,
    ) -> None:
        # Reads that take no write lock on SQLite (see marketplace.db), so a long write
        # elsewhere cannot make the database look down.
        self._engine = engine.execution_options(**{READ_MOSTLY: True})
        self._meter = meter
        self._runtimes = runtimes
        self._triton = triton
        self._kserve = kserve
        self.timeout_s = timeout_s
        self._database_check = _OneAtATime(self._check_database)
        self._spool_check = _OneAtATime(self._check_spool)
        self._kserve_check = _OneAtATime(self._check_kserve)
        self._kserve_client: Any = None
        self._last: dict[str, str] = {}

    async def check(self) -> Readiness:
        """Check every component now, concurrently."""
        checks: dict[str, Awaitable[Component | None]] = {
            "database": self._database_check(self.timeout_s),
            "usage_spool": self._spool_check(self.timeout_s),
            "triton": self._check_triton(),
            "kserve": self._check_kserve_if_configured(),
        }
        results = await asyncio.gather(*checks.values())
        components = {
            name: state for name, state in zip(checks, results, strict=True) if state is not None
        }
        for name, state in components.items():
            self._note(name, state)
        return Readiness(components)

    def close(self) -> None:
        """Release the Kubernetes client, if one was made."""
        if self._kserve_client is not None:
            self._kserve_client.close()
            self._kserve_client = None

    # ------------------------------------------------------------------ the checks

    def _check_database(self) -> Component:
        statement = (
            "SELECT count(*) FROM sqlite_master"
            if self._engine.dialect.name == "sqlite"
            else "SELECT 1"
        )
        try:
            with self._engine.connect() as conn:
                conn.exec_driver_sql(statement).scalar()
        except Exception as exc:
            return self._failed("database", "unreachable", exc)
        return Component(UP)

    def _check_spool(self) -> Component:
        status = self._meter.status()
        if not status["spool_available"]:
            return self._failed("usage_spool", "not writable", status["spool_error"])
        probe = os.path.join(status["spool_dir"], f"{_PROBE_FILE}-{os.getpid()}")
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"ready\n")
            finally:
                os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            return self._failed("usage_spool", "not writable", exc)
        if not status["flusher_running"]:
            return self._failed("usage_spool", "flusher stopped", None)
        if status["last_error"]:
            if self._last.get("usage_spool.flush") != DOWN:
                log.warning("readiness: usage flushes fail: %s", status["last_error"])
            self._last["usage_spool.flush"] = DOWN
            return Component(UP, note="flushes to the database fail; events wait in the spool")
        self._last["usage_spool.flush"] = UP
        return Component(UP)

    async def _check_triton(self) -> Component | None:
        cfg = self._triton
        backend = self._runtimes.made("triton")
        if cfg.url is not None:
            url = cfg.url
        elif backend is not None:
            server = getattr(backend, "server", None)
            if server is None or not server.is_running():
                return self._failed("triton", "not running", None)
            url = server.url
        elif cfg.enabled:
            return self._failed("triton", "not started", None)
        elif cfg.configured:
            return Component(IDLE, "starts with the first Triton model")
        else:
            return None
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                response = await client.get(f"{url.rstrip('/')}/v2/health/ready")
        except httpx.HTTPError as exc:
            return self._failed("triton", "unreachable", exc)
        if response.status_code != 200:
            return self._failed("triton", "not ready", f"answered {response.status_code}")
        return Component(UP)

    async def _check_kserve_if_configured(self) -> Component | None:
        if not self._kserve.configured:
            return None
        return await self._kserve_check(self.timeout_s)

    def _check_kserve(self) -> Component:
        from model_store.runtimes.kserve import KServeClient, KServeError

        try:
            if self._kserve_client is None:
                cfg = self._kserve
                self._kserve_client = KServeClient(
                    kubeconfig=cfg.kubeconfig,
                    context=cfg.context,
                    namespace=cfg.namespace,
                    in_cluster=cfg.in_cluster,
                )
        except Exception as exc:
            return self._failed("kserve", "misconfigured", exc)
        try:
            self._kserve_client.get(_KSERVE_PROBE)
        except KServeError as exc:
            return self._failed("kserve", "unreachable", exc)
        return Component(UP)

    # ------------------------------------------------------------------ reporting

    def _failed(self, name: str, reason: str, detail: BaseException | str | None) -> Component:
        if self._last.get(name) != DOWN:
            text = _first_line(detail) if isinstance(detail, BaseException) else detail
            log.warning("readiness: %s is down (%s)%s", name, reason, f": {text}" if text else "")
        return Component(DOWN, reason)

    def _note(self, name: str, state: Component) -> None:
        before = self._last.get(name)
        self._last[name] = state.status
        if before == DOWN and state.status != DOWN:
            log.info("readiness: %s is %s again", name, state.status)


async def readiness_of(checker: HealthChecker | None) -> Readiness:
    """The checker's answer, or "starting" before the process has made its components."""
    if checker is None:
        return Readiness({"platform": Component(DOWN, "starting")})
    return await checker.check()
