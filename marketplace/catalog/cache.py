"""A short-lived cache of catalog look-ups, cleared by this process's catalog writes.

The inference gateway's model resolution and a data read's dataset look-up both ask the
catalog the same caller-independent question on every request (what does this handle name,
which version, which artifact?), and the answers change rarely. :class:`CatalogCache` keeps
each answer (negative ones included) for a short TTL, and :func:`invalidate_on_catalog_writes`
clears it the moment a session of this process commits a change to the watched tables. Writes
by other processes (the CLI, other workers) are seen after at most the TTL.

Who may see or use an answer is never cached: callers decide that on every request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["MISSING", "CatalogCache", "invalidate_on_catalog_writes"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MISSING: Any = object()
"""Sentinel: nothing cached for a key."""


class CatalogCache(Generic[K, V]):
    """A TTL cache of look-up answers, thread-safe (look-ups run in worker threads).

    ``generation`` guards against a look-up that started before a clear storing its stale
    answer after it. A ``ttl_s`` of 0 caches nothing.
    """

    def __init__(self, ttl_s: float, max_entries: int = 4096) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}
        self._lock = threading.Lock()
        self.generation = 0

    def get(self, key: K) -> Any:
        """The cached answer for ``key`` (``V``), or ``MISSING``."""
        hit = self._entries.get(key)
        if hit is None or hit[0] < time.monotonic():
            return MISSING
        return hit[1]

    def lookup(self, key: K, load: Callable[[], V]) -> V:
        """The cached answer for ``key``, or ``load()``'s, cached unless a clear came first."""
        hit = self.get(key)
        if hit is not MISSING:
            cached: V = hit
            return cached
        generation = self.generation
        value = load()
        self._put(key, value, generation)
        return value

    def _put(self, key: K, value: V, generation: int) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if generation != self.generation:
                return
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self.ttl_s, value)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()


def invalidate_on_catalog_writes(
    factory: sessionmaker[Session], cache: CatalogCache[Any, Any], watched: tuple[type, ...]
) -> None:
    """Clear ``cache`` whenever a session from ``factory`` commits a new, changed or deleted
    instance of one of the ``watched`` classes (a tier, a state, a new version, a deletion...).
    A rolled-back change clears nothing."""
    flag = f"catalog_changed:{id(cache)}"

    def after_flush(session: Session, _ctx: Any) -> None:
        for obj in (*session.new, *session.dirty, *session.deleted):
            if isinstance(obj, watched):
                session.info[flag] = True
                return

    def after_commit(session: Session) -> None:
        if session.info.pop(flag, False):
            cache.clear()

    def after_rollback(session: Session, _transaction: Any) -> None:
        session.info.pop(flag, None)

    event.listen(factory, "after_flush", after_flush)
    event.listen(factory, "after_commit", after_commit)
    event.listen(factory, "after_soft_rollback", after_rollback)
