"""Prometheus metrics of the gateway and the embedded runtime, on the app's own registry."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["UNRESOLVED", "GatewayMetrics"]

#: The model label of calls that never resolved to a model the caller may see (401, 404...):
#: the requested name is not used, so callers cannot create label values.
UNRESOLVED = "(unresolved)"

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class GatewayMetrics:
    """Requests and latency per model and status, batch sizes and queue depth per model.

    Also the embedded runtime's observer (``on_batch``, ``on_queue_depth``): runtime keys are
    mapped to the same model labels as requests through :meth:`name_key`.
    """

    def __init__(self, registry: CollectorRegistry, *, prefix: str = "citybrain") -> None:
        self.requests = Counter(
            f"{prefix}_inference_requests",
            "Inference requests through the v2 gateway, by model and HTTP status.",
            ["model", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            f"{prefix}_inference_request_seconds",
            "Seconds from receiving an inference request body to its response, by model and "
            "HTTP status.",
            ["model", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            f"{prefix}_runtime_batch_size",
            "Rows per batch the embedded runtime dispatched to a model.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            f"{prefix}_runtime_queue_depth",
            "Requests waiting in a model's batching queue.",
            ["model"],
            registry=registry,
        )
        self._labels: dict[str, str] = {}
        # The labelled children of (model, status), looked up once: labels() takes a lock and
        # builds its key on every call, a cost paid per inference call otherwise.
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def name_key(self, runtime_key: str, label: str) -> None:
        """Report runtime measurements of ``runtime_key`` under the model label ``label``."""
        self._labels[runtime_key] = label

    def observe(self, model: str, status: int, seconds: float) -> None:
        children = self._children.get((model, status))
        if children is None:
            code = str(status)
            children = self.requests.labels(model, code), self.latency.labels(model, code)
            self._children[(model, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    # RuntimeObserver
    def on_batch(self, model_key: str, size: int) -> None:
        self.batch_size.labels(self._labels.get(model_key, UNRESOLVED)).observe(size)

    def on_queue_depth(self, model_key: str, depth: int) -> None:
        self.queue_depth.labels(self._labels.get(model_key, UNRESOLVED)).set(depth)
