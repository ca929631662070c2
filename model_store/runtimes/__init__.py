"""Serving runtimes behind one interface (:class:`Runtime`)."""

from model_store.runtimes.base import ModelStats, Runtime, RuntimeObserver, RuntimeStats
from model_store.runtimes.embedded import EmbeddedRuntime

__all__ = ["EmbeddedRuntime", "ModelStats", "Runtime", "RuntimeObserver", "RuntimeStats"]
